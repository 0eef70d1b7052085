"""Plots of a simulation: occupancy, quarantine backlog and reuse distances per strategy.

Needs matplotlib (the ``plot`` extra: ``pip install 'pasid[plot]'``); it is
imported only when a plot is drawn, with the non-interactive Agg backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import ModuleType
from typing import IO, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pasid.sim.replay import Run

__all__ = ["plot_runs"]


def _pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (RuntimeError without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'pasid[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_runs(runs: Iterable[Run], path: str | os.PathLike[str] | IO[bytes], *,
              title: str = "pasid simulate") -> None:
    """Draw three panels, one line per strategy, and save them to ``path`` (PNG). O(samples).

    Occupancy (ACTIVE PASIDs) and quarantine backlog (DRAINING + QUARANTINED)
    over time, sampled; and the reuse-distance distribution as an empirical
    CDF on a log axis (distances of 0 are drawn at the axis' left edge).
    """
    plt = _pyplot()
    fig, (occupancy, backlog, reuse) = plt.subplots(1, 3, figsize=(15, 4.2))
    for run in runs:
        occupancy.plot(run.sample_time, run.sample_active, label=run.strategy, linewidth=1.2)
        backlog.plot(run.sample_time, run.sample_held, label=run.strategy, linewidth=1.2)
        distances = np.sort(run.distances)
        if len(distances):
            positive = distances[distances > 0]
            floor = positive[0] / 2 if len(positive) else 1.0
            shown = np.maximum(distances, floor)
            fraction = np.arange(1, len(shown) + 1) / len(shown)
            reuse.step(shown, fraction, where="post", label=run.strategy, linewidth=1.2)
    occupancy.set(title="occupancy", xlabel="time", ylabel="ACTIVE PASIDs")
    backlog.set(title="quarantine backlog", xlabel="time",
                ylabel="DRAINING + QUARANTINED PASIDs")
    reuse.set(title="reuse distance", xlabel="release -> next allocation (time)",
              ylabel="fraction of reuses <= x", xscale="log")
    for axes in (occupancy, backlog, reuse):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
