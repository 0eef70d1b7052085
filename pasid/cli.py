"""The ``pasid`` command line (also ``python -m pasid``).

``pasid simulate``  a workload through every strategy: one row of metrics each
``pasid replay``    the same for a recorded trace
``pasid sweep``     strategies x parameters x seeds, as JSON lines (resumable)
``pasid report``    a sweep's rows: key metrics per point and strategy over the seeds
``pasid bench``     the compiled core against the pure backend on W1-W6

Bad input gives one line on stderr (``pasid: error: ...``) and exit status 2; the
files a command will write (``--plot``, ``--record``, ``--out``) are checked before
any work runs, and a trace's errors name its file and line (or operation).
Long runs show progress on stderr: a bar on a terminal (tqdm when it is
installed), else a plain line every few seconds (:class:`Progress`). The
command line uses only the public package, so ``pasid --help`` works without
the compiled extension.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import pasid
from pasid._args import MAX_BITS, STRATEGIES, as_strategy

if TYPE_CHECKING:
    from pasid.sim.chunk import Chunk
    from pasid.sim.replay import Run, TraceStream
    from pasid.sim.vms import VMWorkload
    from pasid.sim.workload import Workload

Row = dict[str, Any]    # one strategy's metrics (pasid.sim.replay.row)

METRIC_COLUMNS: tuple[tuple[str, int, Callable[[Row], object]], ...] = (
    # (heading, width, how to read it from a row)
    ("strategy", 8, lambda r: r["strategy"]),
    ("ops/s", 10, lambda r: _si(r["ops_per_s"])),
    ("fail", 6, lambda r: r["failures"]),
    ("active^", 7, lambda r: r["peak_active"]),
    ("held^", 6, lambda r: r["peak_held"]),
    ("reuse min", 10, lambda r: _num(r["reuse"]["min"])),
    ("p1", 9, lambda r: _num(r["reuse"]["p1"])),
    ("median", 9, lambda r: _num(r["reuse"]["median"])),
    ("stale", 6, lambda r: r["stale"]),
    ("stale-noq", 9, lambda r: r["stale_no_quarantine"]),
    ("blocks^", 7, lambda r: r["blocks_peak"]),
    ("highest", 8, lambda r: r["highest"]),
)

VM_COLUMNS: tuple[tuple[str, int, Callable[[Row], object]], ...] = (
    # the rows of pasid.sim.vms.vm_row, one per guest PASID design
    ("mode", 14, lambda r: r["mode"]),
    ("ops/s", 9, lambda r: _si(r["ops_per_s"])),
    ("migr", 5, lambda r: r["migrations"]),
    ("conflict", 8, lambda r: r["migrations_conflict"]),
    ("busy", 5, lambda r: r["migrations_busy"]),
    ("refused", 7, lambda r: r["migrations_refused"]),
    ("alloc-fail", 10, lambda r: r["alloc_refused"]),
    ("held^", 6, lambda r: r["peak_held"]),
    ("reuse mean", 10, lambda r: _num(r["guest_reuse"]["mean"])),
    ("stale", 6, lambda r: r["stale"]),
    ("stale-noq", 9, lambda r: r["stale_no_quarantine"]),
    ("x-vm-noq", 8, lambda r: r["stale_cross_vm_no_quarantine"]),
)

VM_LEGEND = ("migr/conflict/busy/refused: migrations done, refused with a MigrationConflict on "
             "another VM's PASIDs, refused by the VM's own earlier stay on the destination, "
             "refused otherwise; alloc-fail: guest allocations refused; held^: peak host "
             "PASIDs DRAINING+QUARANTINED over all hosts; reuse mean: guest number freed -> "
             "next allocated in the same VM; stale-noq, x-vm-noq: late device accesses that "
             "hit a reallocated host PASID (x-vm: now another VM's) without quarantine")

LEGEND = ("active^/held^/blocks^: peaks of ACTIVE, DRAINING+QUARANTINED and 64-PASID "
          "table blocks in use; reuse: release -> next allocation of the same PASID; "
          "stale-noq: late device accesses that hit a reused PASID without quarantine")


class UsageError(Exception):
    """Bad input from the command line: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ---------------------------------------------------------------- progress

class Progress:
    """Progress of a long run on stderr: ``progress(done, total)`` as work is done.

    On a terminal: nothing for the first second, then a bar (tqdm when
    installed, else one plain line rewritten in place: count, rate, time left).
    Elsewhere (a CI log, ``| tee``): plain lines, ``DESCRIPTION: done/total
    UNIT, ELAPSED elapsed, about LEFT left``, the first after ``every``
    seconds and then at most one every ``every`` seconds, also while no work
    finishes (a thread ticks, so one slow task does not look like a hang), and
    a last one when closed if any was printed. ``every`` defaults to the
    environment's ``PASID_PROGRESS_EVERY`` (seconds; 0 prints at every update),
    else 5. ``total`` may be None (unknown) or an estimate (passed: counted on);
    ``note`` says where the work is. Thread-safe; close it when done.
    """

    def __init__(self, description: str, stream: TextIO | None = None, *, unit: str = "",
                 every: float | None = None) -> None:
        self.description = description
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = _progress_every() if every is None else every
        self.started = time.monotonic()
        self.bar: Any = None        # None: not yet decided; False: no tqdm; else the tqdm bar
        self.done = 0
        self.total: int | None = None
        self.note = ""
        self.printed: float | None = None   # when the last log line was printed
        self.logged: tuple[int, int | None, str] | None = None     # and what it said
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.ticker: threading.Thread | None = None

    def __call__(self, done: int, total: int | None, note: str = "") -> None:
        """``done`` of ``total`` (None: unknown; it may be an estimate) are done."""
        with self.lock:
            self.done, self.total, self.note = done, total, note
            if self.terminal:
                self._draw()
                return
            self._log(time.monotonic(), final=False)
            if self.ticker is None and self.every > 0 and not self.stopped.is_set():
                self.ticker = threading.Thread(target=self._tick, name="pasid-progress",
                                               daemon=True)
                self.ticker.start()

    def close(self) -> None:
        """End the progress: the bar or line cleared, or a last log line if any was printed."""
        self.stopped.set()
        if self.ticker is not None:
            self.ticker.join()
        with self.lock:
            if self.bar:
                self.bar.close()
            elif self.bar is False:
                print(file=self.stream)
            elif not self.terminal and self.printed is not None and (
                    self.logged != (self.done, self.total, self.note)):
                self._log(time.monotonic(), final=True)

    # -- a log (not a terminal)
    def _tick(self) -> None:
        while not self.stopped.wait(self.every):
            with self.lock:
                self._log(time.monotonic(), final=False)

    def _log(self, now: float, final: bool) -> None:
        elapsed = now - self.started
        if not final and (elapsed < self.every or (
                self.printed is not None and now - self.printed < self.every)):
            return
        done, total = self.done, self.total
        left = None
        if total is not None and total > done and done > 0:
            left = _duration((total - done) * elapsed / done)
        unit = f" {self.unit}" if self.unit else ""
        line = self._line(f"{unit}, {_duration(elapsed)} elapsed", left)
        print(line, file=self.stream, flush=True)
        self.printed = now
        self.logged = (done, total, self.note)

    # -- a terminal
    def _draw(self) -> None:
        now = time.monotonic()
        if now - self.started < 1.0:
            return
        done, total = self.done, self.total
        if self.bar is None:
            try:
                from tqdm import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]
            except ImportError:
                self.bar = False
            else:
                self.bar = tqdm(total=total, desc=self.description, file=self.stream,
                                leave=False, unit_scale=True, unit=self.unit or "it")
        if self.bar:
            if total is not None and total < done:
                total = None        # past an estimate: the bar counts on
            self.bar.total = total
            self.bar.update(done - self.bar.n)
            if self.note:
                self.bar.set_postfix_str(self.note, refresh=False)
        else:
            rate = done / (now - self.started)
            left = None
            if total is not None and total > done and rate > 0:
                left = f"{(total - done) / rate:.0f} s"
            line = self._line(f", {_si(rate)}/s", left)
            print(f"\r{line}   ", end="", file=self.stream, flush=True)

    def _line(self, middle: str, left: str | None) -> str:
        """``description: done[/total]``, then ``middle``, the time ``left`` if known, and
        the note: the line both displays print."""
        line = f"{self.description}: {_si(self.done)}"
        if self.total is not None and self.total >= self.done:
            line += f"/{_si(self.total)}"
        line += middle
        if left is not None:
            line += f", about {left} left"
        if self.note:
            line += f" ({self.note})"
        return line


def _progress_every() -> float:
    """Seconds between progress lines in a log: ``PASID_PROGRESS_EVERY``, else 5."""
    text = os.environ.get("PASID_PROGRESS_EVERY", "")
    try:
        every = float(text) if text else 5.0
    except ValueError:
        every = -1.0
    if not every >= 0 or every == float("inf"):
        raise UsageError(f"PASID_PROGRESS_EVERY wants seconds >= 0, got {text!r}")
    return every


def _duration(seconds: float) -> str:
    """``42 s``, ``3m 05s``, ``1h 02m``."""
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole // 60 % 60:02d}m"


# ---------------------------------------------------------------- output

def _si(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def format_table(rows: Iterable[Row], columns: Sequence[tuple[str, int, Callable[[Row], object]]]
                 = METRIC_COLUMNS, legend: str = LEGEND) -> str:
    """The rows of a simulation as an aligned text table with a legend."""
    lines = [" ".join(f"{head:>{width}}" for head, width, _ in columns)]
    for row in rows:
        lines.append(" ".join(f"{str(get(row)):>{width}}" for _, width, get in columns))
    lines.append("")
    lines.append(legend)
    return "\n".join(lines)


def _report(args: argparse.Namespace, rows: list[Row], runs: list[Run],
            header: dict[str, Any], out: TextIO, vms: bool = False) -> None:
    if args.json:
        json.dump({**header, "backend": pasid.BACKEND, "rows": rows}, out, indent=2)
        out.write("\n")
    else:
        print(" ".join(f"{k}={v}" for k, v in header.items() if not isinstance(v, dict)),
              file=out)
        print(format_table(rows, VM_COLUMNS, VM_LEGEND) if vms else format_table(rows), file=out)
    if args.plot:
        from pasid.sim.plot import plot_modes, plot_runs

        title = f"pasid {args.command}: {header.get('source')}"
        if vms:
            plot_modes(rows, args.plot, title=title)
        else:
            plot_runs(runs, args.plot, title=title)


def _run_simulation(args: argparse.Namespace, source: TraceStream, header: dict[str, Any],
                    out: TextIO, grace: float | None = None,
                    extra: dict[str, Any] | None = None) -> None:
    """Replay ``source`` under every strategy (with and without quarantine, in one pass
    over its chunks), then report ``header``, the operations and the last time, and
    ``extra``."""
    from pasid.sim.replay import TraceStream, simulate

    seen = _Seen(source.chunks)
    stream = TraceStream(source.header, iter(seen), source.end, source.total)
    progress = Progress(f"{args.command} ({len(args.strategy)} strategies x 2)")
    try:
        rows, runs = simulate(stream, args.strategy, seed=args.seed, grace=grace,
                              engine=args.engine, progress=progress)
    finally:
        progress.close()
    header = {**header, "ops": seen.ops, "duration": seen.end, **(extra or {})}
    _report(args, rows, runs, header, out)


class _Seen:
    """The chunks of a stream, passed on as they come, counted: operations, last time."""

    def __init__(self, chunks: Iterable[Chunk]) -> None:
        self.chunks = chunks
        self.ops = 0
        self.end = 0.0

    def __iter__(self) -> Iterator[Chunk]:
        for chunk in self.chunks:
            self.ops += len(chunk)
            if chunk.end is not None:
                self.end = chunk.end
            yield chunk


# ---------------------------------------------------------------- output files, before work

_OUTPUTS = (("--plot", "plot"), ("--record", "record"), ("--out", "out"))   # (option, dest)


def _check_outputs(args: argparse.Namespace) -> None:
    """Every file the command will write, checked before any work runs: UsageError (one
    line, exit 2) naming the option and the path if it is a directory, its directory is
    missing or not writable, two options (or an option and the trace replayed) name one
    file, or a plot could not be drawn there (no matplotlib, a suffix it does not write)."""
    seen: dict[str, str] = {}
    if isinstance(getattr(args, "trace", None), str):       # pasid replay's input
        seen[os.path.realpath(args.trace)] = "the trace replayed"
    for option, dest in _OUTPUTS:
        path = getattr(args, dest, None)
        if path is None:
            continue
        _check_output(option, path)
        key = os.path.realpath(path)
        if key in seen:
            raise UsageError(f"{option} {path}: the same file as {seen[key]}")
        seen[key] = option
    if getattr(args, "plot", None) is not None:
        from pasid.sim.plot import check_target

        try:
            check_target(args.plot)
        except (ValueError, RuntimeError) as error:
            raise UsageError(f"--plot {args.plot}: {error}") from None


def _check_output(option: str, path: str) -> None:
    """One output path (see :func:`_check_outputs`); UsageError naming it."""
    if not path:
        raise UsageError(f"{option} needs a file name")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory (name a file in it)")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        what = "is not a directory" if os.path.exists(folder) else "does not exist"
        raise UsageError(f"{option} {path}: {folder} {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the directory {folder} is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: the file is not writable")


# ---------------------------------------------------------------- commands

def cmd_simulate(args: argparse.Namespace, out: TextIO) -> None:
    from pasid.sim.vms import VM_PRESETS

    if args.workload in VM_PRESETS:
        cmd_simulate_vms(args, out)
        return
    from pasid.sim.replay import TraceStream
    from pasid.sim.workload import end_estimate, expected_ops, parse_overrides, preset, stream

    overrides = parse_overrides(args.param)
    for name in ("bits", "drain"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.grace is not None:
        overrides["grace"] = args.grace
    workload = preset(args.workload, **overrides)
    trace_header, chunks = stream(workload, args.seed)
    if args.record:
        from pasid.sim.traceio import recorded

        chunks = recorded(args.record, trace_header, chunks)
    header = {"source": f"workload {args.workload}", "seed": args.seed}
    source = TraceStream(trace_header, chunks, end_estimate(workload), expected_ops(workload))
    # the grace is in the trace's header
    _run_simulation(args, source, header, out, extra={"workload": _workload_fields(workload)})


def cmd_simulate_vms(args: argparse.Namespace, out: TextIO) -> None:
    """``pasid simulate --workload vms``: one row per guest PASID design (pasid.sim.vms)."""
    from pasid.sim.vms import parse_vm_overrides, simulate_vms, vm_preset

    if args.strategy_given:
        raise UsageError("--strategy does not apply to --workload vms; the hosts' strategy "
                         "is a parameter: --param strategy=NAME")
    overrides = parse_vm_overrides(args.param)
    for name in ("bits", "drain", "grace"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    workload = vm_preset(args.workload, **overrides)
    began = time.perf_counter()
    if args.record:
        from pasid.sim.vms import record_vms

        trace = record_vms(workload, args.seed)
        trace.write(args.record)
        _replay_vm_trace(args, trace, workload.modes(), {
            "source": f"workload {args.workload}", "seed": args.seed}, began, out,
            extra={"workload": _workload_fields(workload)})
        return
    progress = Progress(f"{args.command} ({len(workload.modes())} modes x 2)")
    try:
        rows = simulate_vms(workload, args.seed, engine=args.engine, progress=progress)
    finally:
        progress.close()
    header = {"source": f"workload {args.workload}", "seed": args.seed,
              "wall": round(time.perf_counter() - began, 2),
              "workload": _workload_fields(workload)}
    _report(args, rows, [], header, out, vms=True)


def _replay_vm_trace(args: argparse.Namespace, trace: Any, modes: Sequence[str],
                     header: dict[str, Any], began: float, out: TextIO,
                     extra: dict[str, Any] | None = None) -> None:
    """Replay a VM trace under ``modes`` and print the VM table (as simulate --workload vms).

    ``--engine``: ``compiled`` the C loop on the compiled hosts, ``python`` the
    Python loop on the pure hosts, ``auto`` the C loop when the compiled core is in use.
    """
    from pasid.sim.vms import replay_vms

    progress = Progress(f"{args.command} ({len(modes)} modes x 2)")
    try:
        rows = replay_vms(trace, modes=modes, engine=args.engine, progress=progress)
    finally:
        progress.close()
    header = {**header, "wall": round(time.perf_counter() - began, 2), "ops": len(trace),
              "duration": trace.duration, **(extra or {})}
    _report(args, rows, [], header, out, vms=True)


def _workload_fields(workload: Workload | VMWorkload) -> Any:
    import dataclasses

    fields = dataclasses.asdict(workload)
    return json.loads(json.dumps(fields, default=str))


def cmd_replay(args: argparse.Namespace, out: TextIO) -> None:
    from pasid.sim.replay import TraceStream
    from pasid.sim.traceio import open_trace
    from pasid.sim.vmtrace import trace_version

    if trace_version(args.trace) == 2:
        cmd_replay_vms(args, out)
        return
    trace_header, chunks = open_trace(args.trace)
    header = {"source": f"trace {args.trace}", "seed": args.seed}
    _run_simulation(args, TraceStream(trace_header, chunks), header, out, grace=args.grace)


def cmd_replay_vms(args: argparse.Namespace, out: TextIO) -> None:
    """``pasid replay VMTRACE``: a VM trace (pasid-trace 2) under the three designs."""
    import dataclasses

    from pasid.sim.vms import MODES
    from pasid.sim.vmtrace import read_vm_trace

    if args.strategy_given:
        raise UsageError("--strategy does not apply to a VM trace: the hosts' strategy is in "
                         "its header")
    began = time.perf_counter()
    trace = read_vm_trace(args.trace)
    if args.grace is not None:
        from pasid._args import as_grace

        trace = dataclasses.replace(trace, grace=as_grace(args.grace))
    _replay_vm_trace(args, trace, MODES, {"source": f"trace {args.trace}"}, began, out)


def cmd_sweep(args: argparse.Namespace, out: TextIO) -> None:
    from pasid.sim.sweep import sweep
    from pasid.sim.workload import parse_overrides

    from pasid.sim.vms import VM_PRESETS, parse_vm_overrides

    vms = args.workload in VM_PRESETS
    if vms and args.strategy_given:
        raise UsageError("--strategy does not apply to --workload vms; sweep the hosts' "
                         "strategy as a parameter: --param strategy=lowest,fifo")
    parse = parse_vm_overrides if vms else parse_overrides
    grid: dict[str, list[Any]] = {}
    for item in args.param:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise UsageError(f"--param wants NAME=V1,V2,..., got {item!r}")
        grid[name] = [parse([f"{name}={v}"])[name] for v in values.split(",")]
    progress = Progress("sweep", unit="tasks")
    try:
        written = sweep(args.workload, grid, None if vms else args.strategy, args.seeds, root_seed=args.root_seed,
                        out=args.out, dask=args.dask, workers=args.workers, progress=progress)
    finally:
        progress.close()
    print(f"{written} rows written to {args.out}", file=sys.stderr)
    _sweep_summary(args, grid, vms, out)


def _sweep_summary(args: argparse.Namespace, grid: dict[str, list[Any]], vms: bool,
                   out: TextIO) -> None:
    """After a sweep: the summary of its rows in ``--out`` (this grid, seeds and strategies,
    rows written before included), as ``pasid report`` prints it."""
    from pasid.sim.report import format_summary, read_rows, summarise

    def ours(row: Row) -> bool:
        params = row["params"]
        return (row["workload"] == args.workload and row["root_seed"] == args.root_seed
                and row["seed_index"] < args.seeds and set(params) == set(grid)
                and all(params[name] in values for name, values in grid.items())
                and (vms or row["strategy"] in args.strategy))

    rows = [row for row in read_rows(args.out) if ours(row)]
    if rows:
        print(format_summary(summarise(rows)), file=out)


def cmd_report(args: argparse.Namespace, out: TextIO) -> None:
    """``pasid report FILE.jsonl``: a sweep's rows summed up per point and strategy."""
    from pasid.sim.report import format_summary, plot_summary, read_rows, summarise

    rows = read_rows(args.rows)
    if args.workload is not None:
        names = sorted({str(row["workload"]) for row in rows})
        rows = [row for row in rows if row["workload"] == args.workload]
        if not rows:
            raise UsageError(f"{args.rows} has no rows of workload {args.workload!r} "
                             f"(it has {', '.join(names)})")
    groups = summarise(rows)
    print(format_summary(groups), file=out)
    if args.plot:
        plot_summary(groups, args.plot, title=f"pasid report {args.rows}")


def cmd_bench(args: argparse.Namespace, out: TextIO) -> None:
    if pasid.BACKEND != "cython":
        raise UsageError("pasid bench measures the compiled core, which is not in use "
                         "(PASID_NO_EXTENSION=1, or the extension is not built)")
    if args.repeat < 1:
        raise UsageError("--repeat must be >= 1")
    from pasid import bench

    progress = Progress("bench", unit="steps")     # a minute or more: say where it is
    try:
        bench.run(repeat=args.repeat, quick=args.quick, workloads=args.workload, out=out,
                  progress=progress)
    finally:
        progress.close()


# ---------------------------------------------------------------- parser

def _strategies(parser: argparse.ArgumentParser, values: list[str] | None) -> list[str]:
    chosen = values or list(STRATEGIES)
    for name in chosen:
        try:
            as_strategy(name)
        except ValueError as exc:
            parser.error(str(exc))
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pasid", description="PCIe PASID allocation: simulate, replay, "
                                               "sweep and benchmark allocation strategies.")
    parser.add_argument("--version", action="version",
                        version=f"pasid {pasid.__version__} ({pasid.BACKEND} backend)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def replay_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--strategy", action="append", metavar="NAME",
                         help=f"a strategy to run, repeatable ({', '.join(STRATEGIES)}; "
                              "default: all four)")
        sub.add_argument("--seed", type=int, default=0,
                         help="seeds the workload and the random strategy (default 0)")
        sub.add_argument("--grace", type=float, metavar="TIME",
                         help="grace period from release to reuse (default: the workload's)")
        sub.add_argument("--json", action="store_true", help="print the rows as JSON")
        sub.add_argument("--plot", metavar="FILE.png",
                         help="draw occupancy, backlog and reuse distances (needs matplotlib)")
        sub.add_argument("--engine", choices=("auto", "compiled", "python"), default="auto",
                         help="the replay loop: compiled C, or one Python call per operation "
                              "(--workload vms and VM traces: the C loop on compiled hosts, "
                              "or the Python loop on pure ones; auto: the backend in use)")

    simulate = commands.add_parser(
        "simulate", help="run a workload through the strategies and compare them",
        description="Generate a workload and replay it under each strategy, with and "
                    "without device quarantine; print one row of metrics per strategy.")
    simulate.add_argument("--workload", default="default",
                          help="a preset: default, exhaustion, vm-churn, or vms (VMs on "
                               "several hosts, one row per guest PASID design: identity, "
                               "translated, identity-split) (default: default)")
    simulate.add_argument("--bits", type=int, help=f"PASID width, 1..{MAX_BITS}")
    simulate.add_argument("--drain", type=float, metavar="TIME",
                          help="every device's drain time (default: each device's own)")
    simulate.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                          help="any workload parameter (arrival, lifetime, kill, ...), repeatable")
    simulate.add_argument("--record", metavar="TRACE", help="also write the workload as a trace")
    replay_options(simulate)

    replay = commands.add_parser("replay", help="the same metrics for a recorded trace",
                                 description="Replay a trace (see the README for the format) "
                                             "under each strategy.")
    replay.add_argument("trace", help="the trace file")
    replay_options(replay)

    sweep = commands.add_parser(
        "sweep", help="strategies x parameters x seeds, as JSON lines",
        description="Run a workload over a grid of parameters and seeds; one JSON line per "
                    "(point, seed, strategy). Rows already in --out are skipped, so an "
                    "interrupted sweep (Ctrl-C keeps the rows written) resumes; a file in "
                    "use by another sweep is refused.")
    sweep.add_argument("--workload", default="default",
                       help="a preset (default: default); vms sweeps the VM workload, "
                            "one row per guest PASID design (or --param mode=...)")
    sweep.add_argument("--strategy", action="append", metavar="NAME",
                       help="a strategy, repeatable (default: all four)")
    sweep.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2",
                       help="a workload parameter and its values, repeatable (the grid)")
    sweep.add_argument("--seeds", type=int, default=3, help="seeds per point (default 3)")
    sweep.add_argument("--root-seed", type=int, default=0,
                       help="the root the seeds are spawned from (default 0)")
    sweep.add_argument("--out", required=True, metavar="FILE.jsonl", help="where rows go")
    sweep.add_argument("--workers", type=int, help="local processes (default: one per core)")
    sweep.add_argument("--dask", metavar="ADDRESS",
                       help="run on a Dask cluster (tcp://host:port; needs pasid[dask])")

    report = commands.add_parser(
        "report", help="a sweep's rows at a glance: key metrics per point and strategy",
        description="Read the JSON lines pasid sweep wrote and print, per point and "
                    "strategy, the key metrics (fail, held^, reuse median, stale-noq, "
                    "blocks^) as their mean and min..max over the seeds.")
    report.add_argument("rows", metavar="FILE.jsonl", help="a sweep's --out file")
    report.add_argument("--workload", metavar="NAME",
                        help="only this workload's rows (a file may hold several)")
    report.add_argument("--plot", metavar="FILE.png",
                        help="draw each metric against the swept parameter, one line per "
                             "strategy with its seed spread (needs matplotlib)")

    bench = commands.add_parser("bench", help="compiled core vs the pure backend: ns/op, ratios",
                                description="The standard workloads W1-W6 (the definitions "
                                            "benchmarks/ uses), ratios from one run.")
    bench.add_argument("--repeat", type=int, default=3, help="repetitions (median taken)")
    bench.add_argument("--quick", action="store_true", help="smaller rounds: seconds, not minutes")
    bench.add_argument("--workload", action="append", metavar="NAME",
                       help="a workload (W1 .. W6, replay, or a group name such as "
                            "W6-lifecycle), repeatable (default: all)")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], None]] = {
    "simulate": cmd_simulate, "replay": cmd_replay, "sweep": cmd_sweep, "report": cmd_report,
    "bench": cmd_bench}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input)."""
    out = sys.stdout if out is None else out
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command in ("simulate", "replay", "sweep"):
            args.strategy_given = args.strategy is not None
            args.strategy = _strategies(parser, args.strategy)
        _check_outputs(args)
        COMMANDS[args.command](args, out)
    except UsageError as exc:
        print(f"pasid: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as exc:
        # bad input found past the parser: a trace, a parameter, a file, a missing extra
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.filename is not None:
            message = f"{exc.strerror}: {exc.filename}"
        print(f"pasid: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pasid: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
