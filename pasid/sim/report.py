"""Sweeps at a glance: the key metrics of a sweep's rows per point and strategy, over the seeds.

:func:`read_rows` reads the JSON lines :func:`pasid.sim.sweep.sweep` wrote;
:func:`summarise` groups them by (workload, generator, point, strategy, and for
the VM workload the design ``mode``) and gives each key metric's mean and
spread over the seeds; :func:`format_summary` prints that as a table (``pasid
report FILE.jsonl``, and the end of ``pasid sweep``); :func:`plot_summary`
draws each metric against the swept parameter, one line per strategy with
its seed spread (``pasid report FILE.jsonl --plot FILE.png``; needs
matplotlib, the ``plot`` extra).

The key metrics are the row fields (:func:`pasid.sim.replay.row`)
``failures`` (``fail``), ``peak_held`` (``held^``), ``reuse.median``
(``reuse median``), ``stale_no_quarantine`` (``stale-noq``) and
``blocks_peak`` (``blocks^``); for VM rows (:func:`pasid.sim.vms.vm_row`)
``alloc_refused``, ``migrations``, ``peak_held``, ``guest_reuse.mean``,
``stale_no_quarantine`` and ``stale_cross_vm_no_quarantine``. A metric a
seed has no value for (a median with nothing reused) leaves that seed out of
that metric; ``n`` counts the seeds.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from pasid._args import STRATEGIES

__all__ = ["METRICS", "VM_METRICS", "Group", "Spread", "format_summary", "plot_summary",
           "read_rows", "summarise"]

# (row field, dotted for a nested one; column heading)
METRICS: tuple[tuple[str, str], ...] = (
    ("failures", "fail"), ("peak_held", "held^"), ("reuse.median", "reuse median"),
    ("stale_no_quarantine", "stale-noq"), ("blocks_peak", "blocks^"))
VM_METRICS: tuple[tuple[str, str], ...] = (
    ("alloc_refused", "alloc-fail"), ("migrations", "migr"), ("peak_held", "held^"),
    ("guest_reuse.mean", "reuse mean"), ("stale_no_quarantine", "stale-noq"),
    ("stale_cross_vm_no_quarantine", "x-vm-noq"))

_IDENTITY = ("workload", "params", "root_seed", "seed_index", "strategy")


@dataclass(frozen=True)
class Spread:
    """One metric over the seeds of a point: ``n`` values, their mean, min, max and
    sample standard deviation (0 for one value); ``n == 0``: no seed had a value."""

    n: int
    mean: float | None
    min: float | None
    max: float | None
    stdev: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(0, None, None, None, None)
        return cls(len(values), statistics.fmean(values), min(values), max(values),
                   statistics.stdev(values) if len(values) > 1 else 0.0)

    def __str__(self) -> str:
        if self.mean is None or self.min is None or self.max is None:
            return "-"
        if self.min == self.max:
            return _num(self.mean)
        return f"{_num(self.mean)} ({_num(self.min)}..{_num(self.max)})"


@dataclass(frozen=True)
class Group:
    """The rows of one (workload, generator, point, strategy, mode) over the seeds."""

    workload: str
    generator: int
    params: dict[str, Any]
    strategy: str
    mode: str | None
    seeds: int
    metrics: dict[str, Spread]      # by row field (METRICS or VM_METRICS)

    @property
    def kind(self) -> tuple[str, int, bool]:
        """What a table or a plot holds one of: (workload, generator, VM rows)."""
        return self.workload, self.generator, self.mode is not None


def _num(value: float) -> str:
    return f"{value:.4g}"


def _field(row: dict[str, Any], name: str) -> float | None:
    value: Any = row
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a sweep's JSON-lines file, in file order. O(the file's size).

    Blank lines are skipped, and so is a last line cut short (no newline and
    not JSON: a sweep stopped mid-write, which the sweep itself drops when it
    resumes). Raises OSError for a file that cannot be read, and ValueError
    naming the file and line (``FILE:LINE: ...``) for a line that is not
    UTF-8, not JSON, or not a sweep row (an object with ``workload``,
    ``params``, ``root_seed``, ``seed_index`` and ``strategy``), and for a
    file with no rows.
    """
    name = os.fsdecode(path)
    with open(path, "rb") as handle:
        content = handle.read()
    lines = content.split(b"\n")
    cut = lines.pop() if lines else b""             # after the last newline: b"" when whole
    rows = []
    for number, line in enumerate([*lines, cut], 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{name}:{number}: not UTF-8 text (is this a sweep's "
                             "JSON-lines file?)") from None
        except ValueError:
            if line is cut:
                continue                            # a write cut short
            raise ValueError(f"{name}:{number}: not a JSON line") from None
        missing = ([key for key in _IDENTITY if key not in row] if isinstance(row, dict)
                   else list(_IDENTITY))
        if missing or not isinstance(row["params"], dict):
            raise ValueError(f"{name}:{number}: not a sweep row (it lacks "
                             f"{', '.join(missing) or 'params as an object'})")
        rows.append(row)
    if not rows:
        raise ValueError(f"{name}: no sweep rows in it")
    return rows


def summarise(rows: Iterable[dict[str, Any]]) -> list[Group]:
    """The rows grouped by (workload, generator, point, strategy, mode), the key metrics'
    spread over the seeds of each; ordered by workload, point (its values), strategy.

    A row whose (root_seed, seed_index) its group already has counts once (the
    first kept, as the sweep's resume rule says). O(rows log rows).

    >>> rows = [{"workload": "default", "params": {"grace": 0}, "root_seed": 0,
    ...          "seed_index": i, "strategy": "fifo", "failures": i, "peak_held": 4,
    ...          "reuse": {"median": None}, "stale_no_quarantine": 2 * i, "blocks_peak": 1}
    ...         for i in range(3)]
    >>> [group] = summarise(rows)
    >>> group.params, group.strategy, group.seeds, str(group.metrics["failures"])
    ({'grace': 0}, 'fifo', 3, '1 (0..2)')
    >>> str(group.metrics["peak_held"]), str(group.metrics["reuse.median"])
    ('4', '-')
    """
    grouped: dict[tuple[Any, ...], dict[tuple[Any, Any], dict[str, Any]]] = {}
    for row in rows:
        key = (row["workload"], row.get("generator", 1),
               json.dumps(row["params"], sort_keys=True), row["strategy"], row.get("mode"))
        grouped.setdefault(key, {}).setdefault((row["root_seed"], row["seed_index"]), row)
    groups = []
    for (workload, generator, params, strategy, mode), seeds in grouped.items():
        metrics = VM_METRICS if mode is not None else METRICS
        spread = {}
        for field, _ in metrics:
            values = [_field(row, field) for row in seeds.values()]
            spread[field] = Spread.of([v for v in values if v is not None])
        groups.append(Group(workload, generator, json.loads(params), strategy, mode,
                            len(seeds), spread))
    groups.sort(key=lambda g: (g.workload, g.generator, g.mode is not None,
                               _order(g.params), _strategy_order(g.strategy), g.mode or ""))
    return groups


def _order(params: dict[str, Any]) -> tuple[Any, ...]:
    """A sort key for points: by each parameter's value, numbers before other values."""
    return tuple((name, 0, value, "") if isinstance(value, (int, float))
                 else (name, 1, 0, json.dumps(value, sort_keys=True))
                 for name, value in sorted(params.items()))


def _strategy_order(strategy: str) -> tuple[int, str]:
    return (STRATEGIES.index(strategy) if strategy in STRATEGIES else len(STRATEGIES), strategy)


def _swept(groups: Sequence[Group]) -> list[str]:
    """The parameters whose values differ between the groups, in name order (for VM rows,
    not ``strategy`` and ``mode``: the rows' own columns say them)."""
    shown = {"strategy", "mode"} if groups and groups[0].mode is not None else set()
    names = sorted({name for group in groups for name in group.params} - shown)
    return [name for name in names
            if len({json.dumps(group.params.get(name), sort_keys=True)
                    for group in groups}) > 1]


def _sections(groups: Sequence[Group]) -> list[list[Group]]:
    sections: dict[tuple[str, int, bool], list[Group]] = {}
    for group in groups:
        sections.setdefault(group.kind, []).append(group)
    return list(sections.values())


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _cell(spread: Spread, seeds: int) -> str:
    """A metric's cell; ``[n=K]`` when only K of the seeds have a value."""
    return str(spread) + (f" [n={spread.n}]" if 0 < spread.n < seeds else "")


def format_summary(groups: Sequence[Group]) -> str:
    """The groups as aligned tables, one per (workload, generator, row kind). O(groups).

    Columns: the swept parameters (those whose values differ), the strategy
    (and design for VM rows), the seeds, then each key metric as ``mean
    (min..max)`` over the seeds (the mean alone when they agree; ``-`` when no
    seed has a value, ``[n=K]`` after it when only K of them have one).
    """
    blocks = []
    for section in _sections(groups):
        first = section[0]
        vms = first.mode is not None
        swept = _swept(section)
        fixed = {name: value for name, value in first.params.items()
                 if name not in swept and not (vms and name in ("strategy", "mode"))}
        heading = f"workload {first.workload} (generator {first.generator})"
        if fixed:
            heading += ", " + " ".join(f"{k}={_value(v)}" for k, v in sorted(fixed.items()))
        metrics = VM_METRICS if vms else METRICS
        head = [*swept, "strategy", *(["mode"] if vms else []), "seeds",
                *(title for _, title in metrics)]
        table = [head]
        for group in section:
            table.append([*(_value(group.params.get(name)) for name in swept), group.strategy,
                          *([str(group.mode)] if vms else []), str(group.seeds),
                          *(_cell(group.metrics[field], group.seeds) for field, _ in metrics)])
        widths = [max(len(line[k]) for line in table) for k in range(len(head))]
        lines = [heading + "; each metric: mean (min..max) over the seeds"]
        lines += ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)).rstrip()
                  for line in table]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def plot_summary(groups: Sequence[Group], path: str | os.PathLike[str] | IO[bytes], *,
                 title: str = "pasid report") -> None:
    """Each key metric against the swept parameter, saved to ``path`` (PNG). O(groups).

    One line per strategy (VM rows: per strategy and design) through the
    means, with a band and bars from the seeds' min to max; a parameter with number
    values is an axis of numbers, any other a row of labels. With several
    parameters swept, the one with the most values is the axis and the others
    join the strategy in the line's label; with none, the strategies stand at
    one point. ValueError unless the groups are of one workload and one kind
    of row (:func:`summarise` of one sweep's rows is); RuntimeError without
    matplotlib.
    """
    from pasid.sim.plot import _STYLES, _pyplot

    sections = _sections(groups)
    if len(sections) != 1:
        kinds = ", ".join(f"{w} (generator {g}{', VM rows' if vm else ''})"
                          for w, g, vm in (s[0].kind for s in sections))
        raise ValueError(f"a plot shows one workload; these rows hold {kinds or 'none'}: "
                         "choose one (pasid report --workload NAME)")
    section = sections[0]
    swept = _swept(section)
    axis = max(swept, key=lambda name: len({json.dumps(g.params.get(name)) for g in section}),
               default=None)
    xs = [None if axis is None else group.params.get(axis) for group in section]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    labels = sorted({json.dumps(x, sort_keys=True) for x in xs}) if not numeric else []
    vms = section[0].mode is not None
    metrics = VM_METRICS if vms else METRICS

    lines: dict[str, list[tuple[float, Group]]] = {}
    for group, x in zip(section, xs):
        label = group.strategy + (f" {group.mode}" if vms else "")
        others = [f"{name}={_value(group.params.get(name))}" for name in swept if name != axis]
        if others:
            label += " " + " ".join(others)
        position = float(x) if numeric and x is not None else (
            labels.index(json.dumps(x, sort_keys=True)) if labels else 0.0)
        lines.setdefault(label, []).append((position, group))

    plt = _pyplot()
    columns = 3
    rows = math.ceil(len(metrics) / columns)
    fig, grid = plt.subplots(rows, columns, figsize=(5 * columns, 4.2 * rows), squeeze=False)
    for axes, (field, heading) in zip(grid.flat, metrics):
        for label, points in lines.items():
            points.sort(key=lambda point: point[0])
            shown = [(x, g.metrics[field]) for x, g in points if g.metrics[field].n]
            if not shown:
                continue
            style, width = _STYLES.get(label.split()[0], ("-", 1.2))
            at = [x for x, _ in shown]
            drawn = axes.plot(at, [s.mean for _, s in shown], marker="o",
                              linestyle=style, linewidth=width, label=label)
            means = np.array([s.mean for _, s in shown], dtype=float)
            lows = np.array([s.min for _, s in shown], dtype=float)
            highs = np.array([s.max for _, s in shown], dtype=float)
            color = drawn[0].get_color()
            axes.fill_between(at, lows, highs, color=color, alpha=0.15)
            axes.errorbar(at, means, yerr=[means - lows, highs - means], fmt="none",
                          ecolor=color, capsize=3, alpha=0.7)
        axes.set(title=f"{heading} ({field})", xlabel=axis or "",
                 ylabel="mean; band: min..max over the seeds")
        if axis is None:
            axes.set_xticks([0], ["(no parameter swept)"])
        elif labels:
            axes.set_xticks(range(len(labels)), [_value(json.loads(text)) for text in labels])
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    for axes in list(grid.flat)[len(metrics):]:
        axes.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
