"""Plots of a simulation: occupancy, backlog, table blocks and reuse distances per strategy;
for the VM workload, bar charts of each guest PASID design's metrics.

Needs matplotlib (the ``plot`` extra: ``pip install 'pasid[plot]'``); it is
imported only when a plot is drawn, with the non-interactive Agg backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pasid.sim.replay import Run

__all__ = ["check_target", "plot_modes", "plot_runs"]

_NO_MATPLOTLIB = "plots need matplotlib: pip install 'pasid[plot]'"


def _pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (RuntimeError without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(_NO_MATPLOTLIB) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def check_target(path: str | os.PathLike[str]) -> None:
    """What a plot to ``path`` needs, checked before the work that makes it: matplotlib
    (RuntimeError), and a suffix naming a format it writes (ValueError: without one,
    matplotlib would write ``path.png``). Imports matplotlib (a fraction of a second).

    >>> check_target("out.png")
    >>> check_target("out")
    Traceback (most recent call last):
    ValueError: no suffix to name the image format (FILE.png, FILE.pdf, FILE.svg, ...)
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise RuntimeError(_NO_MATPLOTLIB) from None
    suffix = os.path.splitext(os.fspath(path))[1][1:].lower()
    if not suffix:
        raise ValueError("no suffix to name the image format "
                         "(FILE.png, FILE.pdf, FILE.svg, ...)")
    formats = FigureCanvasAgg.get_supported_filetypes()
    if suffix not in formats:
        raise ValueError(f"matplotlib does not write .{suffix} "
                         f"(it writes {', '.join('.' + f for f in sorted(formats))})")


# one style per strategy, so lines that coincide (occupancy and backlog follow the
# trace's timing, not the strategy, when no allocation fails) stay visible
_STYLES = {"lowest": ("-", 2.4), "cyclic": ("--", 1.8), "fifo": ("-.", 1.5), "random": (":", 1.5)}


def plot_runs(runs: Iterable[Run], path: str | os.PathLike[str] | IO[bytes], *,
              title: str = "pasid simulate") -> None:
    """Draw four panels, one line per strategy, and save them to ``path`` (PNG). O(samples).

    Occupancy (ACTIVE PASIDs), quarantine backlog (DRAINING + QUARANTINED)
    and PASID-table blocks in use (64-PASID blocks holding an ACTIVE or
    DRAINING PASID) over time, sampled; and the reuse-distance distribution as
    an empirical CDF on a log axis (distances of 0 drawn at its left edge).
    Occupancy and backlog depend on the trace's timing, not on the strategy,
    unless allocations fail: their lines then coincide (the styles differ).
    """
    plt = _pyplot()
    from matplotlib.ticker import EngFormatter

    fig, grid = plt.subplots(2, 2, figsize=(13, 8.5))
    (occupancy, backlog), (blocks, reuse) = grid
    for run in runs:
        style, width = _STYLES.get(run.strategy, ("-", 1.2))
        line = dict(label=run.strategy, linestyle=style, linewidth=width)
        occupancy.plot(run.sample_time, run.sample_active, **line)
        backlog.plot(run.sample_time, run.sample_held, **line)
        blocks.plot(run.sample_time, run.sample_blocks, **line)
        distances = np.sort(run.distances)
        if len(distances):
            positive = distances[distances > 0]
            floor = positive[0] / 2 if len(positive) else 1.0
            shown = np.maximum(distances, floor)
            fraction = np.arange(1, len(shown) + 1) / len(shown)
            reuse.step(shown, fraction, where="post", **line)
    occupancy.set(title="occupancy", xlabel="time", ylabel="ACTIVE PASIDs")
    backlog.set(title="quarantine backlog", xlabel="time",
                ylabel="DRAINING + QUARANTINED PASIDs")
    blocks.set(title="PASID-table blocks in use", xlabel="time",
               ylabel="64-PASID blocks with an ACTIVE or DRAINING PASID")
    reuse.set(title="reuse distance", xlabel="release -> next allocation (time)",
              ylabel="fraction of reuses <= x", xscale="log")
    for axes in (occupancy, backlog, blocks):
        axes.xaxis.set_major_formatter(EngFormatter())
    for axes in (occupancy, backlog, blocks, reuse):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# the panels of plot_modes: (title, y label, [(row field or reader, bar label)])
_MODE_PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("migrations", "attempts", (("migrations", "done"), ("migrations_conflict", "conflict"),
                                ("migrations_busy", "busy"), ("migrations_refused", "refused"))),
    ("guest allocations refused", "allocations", (("alloc_exhausted", "exhausted"),
                                                  ("alloc_quota", "quota"))),
    ("host PASIDs held at peak", "DRAINING + QUARANTINED, all hosts", (("peak_held", "held"),)),
    ("guest reuse distance", "time (freed -> next allocated, same VM)",
     (("guest_reuse.mean", "mean"), ("guest_reuse.median", "median"))),
    ("stale accesses", "late device accesses", (
        ("stale", "quarantine"), ("stale_no_quarantine", "none"),
        ("stale_cross_vm_no_quarantine", "none, another VM's"))),
    ("throughput", "allocator calls per second", (("ops_per_s", "ops/s"),)),
)


def _field(row: dict[str, Any], name: str) -> float:
    value: Any = row
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if value is not None else 0.0


def plot_modes(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str] | IO[bytes], *,
               title: str = "pasid simulate --workload vms") -> None:
    """Bar charts of :func:`pasid.sim.vms.simulate_vms`'s rows, the designs side by side
    in each panel (migrations, refused allocations, peak held, guest reuse, stale
    accesses, throughput); saved to ``path`` (PNG). O(rows)."""
    plt = _pyplot()
    fig, grid = plt.subplots(2, 3, figsize=(15, 8.5))
    modes = [str(row["mode"]) for row in rows]
    for axes, (name, unit, bars) in zip(grid.flat, _MODE_PANELS):
        width = 0.8 / len(bars)
        for k, (field, label) in enumerate(bars):
            positions = np.arange(len(rows)) + (k - (len(bars) - 1) / 2) * width
            axes.bar(positions, [_field(row, field) for row in rows], width, label=label)
        axes.set_xticks(np.arange(len(rows)), modes)
        axes.set(title=name, ylabel=unit)
        axes.grid(alpha=0.3, axis="y")
        if len(bars) > 1:
            axes.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
