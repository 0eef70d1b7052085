"""Replaying a trace through an allocator, and what the replay measures.

:func:`replay` runs one trace under one strategy and returns a :class:`Run`;
:func:`simulate` runs a workload (or a trace) under several strategies, each
twice on the same operations (with device quarantine, and without it to count
the stale accesses it prevents) and returns one row of metrics per strategy.

The replay: a fresh allocator per run, ``cls(bits, strategy=..., grace=...,
seed=...)`` with the default ``reserved=(0,)`` (PASID 0 is never handed out:
a trace of ``bits B`` has ``1 .. 2**B - 1``); before each operation its logical
clock moves to the operation's time (``advance(to=t)``: every hold that ran
out since is reclaimed in that one call), then the operation runs. An
``alloc`` with a FITS device asks for ``max = 2**min(device bits, B) - 1``.
The ``fifo`` strategy queues PASIDs that become FREE in one call (that
``advance``, an ``exit``, a release with no hold) in ascending order, whatever
their release times.

The metrics (also in the README, section Metrics):

``ops``, ``seconds``, ``ops_per_s``
    Operations replayed, the wall time of the replay loop, their ratio.
``allocations``, ``failures``
    Allocations that got a PASID; allocations refused (nothing FREE in range).
    Operations on a refused allocation's handle are skipped (``skipped``).
``peak_active``, ``peak_held``
    The most PASIDs ACTIVE at once; the most DRAINING + QUARANTINED at once
    (released but not yet reusable: the backlog quarantine costs). Exact:
    the counts are taken after every operation, so a state between two
    operations at the same time counts. (The plot's series, ``Run.sample_*``,
    are samples: at ``samples`` evenly spaced times from 0 to the end, each
    taken after the first operation at or after it.)
``reuse``
    Reuse distance: for every allocation of a PASID that had been released
    before in the same replay, the time from that release (the moment it left
    ACTIVE: the last ``put`` or an ``exit``) to this allocation. ``count``,
    ``min``, ``p1`` (the value at rank ``floor(0.01 * (count - 1))`` in
    ascending order), ``median`` (``numpy.median``), and a histogram over
    powers of two of the time unit (bin ``[2**k, 2**(k+1))``; a first bin
    ``[0, 2**-10)``, edge ``0.0``, holds zero distances). With nothing
    reused: ``count`` 0, ``min``, ``p1`` and ``median`` None, the histogram's
    ``edges`` and ``counts`` empty.
``stale``
    Late accesses that hit a reused PASID: a trace ``access`` whose handle's
    PASID has been allocated again since the handle got it (its generation
    changed; an access of a refused allocation's handle is skipped). Zero with
    device quarantine, by rule: a checked trace lets a device access a handle
    only while bound to it (:func:`pasid.sim.trace.check`), and a bound device
    keeps its PASID out of reuse. ``stale_no_quarantine`` counts them on the
    same trace replayed without quarantine
    (:meth:`pasid.sim.trace.Trace.without_quarantine`: every device still
    bound is unbound right before the release, the handle's later unbinds are
    dropped, drains are 0, the grace stays), where an access after the
    release counts if the PASID was allocated again meanwhile.
``blocks_peak``
    PASID-table blocks in use: the most distinct 64-PASID blocks (PASIDs
    ``64k .. 64k+63``, one leaf table of a two-level PASID table) holding at
    least one ACTIVE or DRAINING PASID (an entry a device may still use) at
    once, taken after every operation.
``highest``
    The highest PASID handed out (-1 if none).
"""

from __future__ import annotations

import dataclasses
import time as _time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import pasid
from pasid._args import STRATEGIES, as_strategy
from pasid.sim import _replay_py
from pasid.sim._replaystate import ReplayState
from pasid.sim.chunk import Chunk, StreamHeader
from pasid.sim.trace import Trace

if TYPE_CHECKING:
    from types import ModuleType
    from typing import Literal, Union

    from typing_extensions import TypeAlias

    from pasid.sim.workload import Workload

    # An allocator class, or a backend's name, as replay() and simulate() take
    # it. Only for checkers: at run time the public class may be the pure one.
    _AllocatorChoice: TypeAlias = Union[
        type[pasid.PasidAllocator], type[pasid.pure.PasidAllocator],
        Literal["cython", "python"], None,
    ]

_compiled: ModuleType | None
try:
    from pasid.sim import _replay as _compiled
except ImportError:  # pragma: no cover - the pure install has no compiled loop
    _compiled = None

__all__ = ["Replayer", "Run", "STRATEGIES", "TraceStream", "replay", "simulate"]

HIST_LOW = -10          # the histogram's first power-of-two edge: 2**-10
CHUNK = 1 << 20         # operations per call of the loop when progress is shown


def one_line_repr(run: Any) -> str:
    """A dataclass's ``repr`` on one line: each field's value, an array or a list of
    values as its type and length (``<float64[812]>``, ``<list[812]>``). O(fields).

    >>> from dataclasses import dataclass
    >>> @dataclass(repr=False)
    ... class Series:
    ...     name: str
    ...     times: npt.NDArray[np.float64]
    ...     counts: list[int]
    >>> one_line_repr(Series("a", np.zeros(1000), [1, 2, 3]))
    "Series(name='a', times=<float64[1000]>, counts=<list[3]>)"
    """
    parts = []
    for field in dataclasses.fields(run):
        value = getattr(run, field.name)
        if isinstance(value, np.ndarray):
            shown = f"<{value.dtype}[{','.join(map(str, value.shape))}]>"
        elif isinstance(value, list):
            shown = f"<list[{len(value)}]>"
        else:
            shown = repr(value)
        parts.append(f"{field.name}={shown}")
    return f"{type(run).__name__}({', '.join(parts)})"


@dataclass(repr=False)
class Run:
    """One replay: the metrics (see the module docstring for exactly what each counts) and
    the series behind the plots.

    ``peak_*``, ``blocks_peak``: exact maxima, taken after every operation.
    ``distances``: the reuse distances in the order they happened (see
    :meth:`reuse` for the summary: ``None`` percentiles when empty).
    ``stale``: accesses whose handle's PASID was allocated again since (0 with
    quarantine, by the trace's rules). ``sample_time`` and ``sample_active``,
    ``sample_held``, ``sample_blocks``: the counts after the first operation at
    or after each sample time. Its ``repr`` is one line: the series show their
    type and length (``distances=<float64[812]>``), not their values.
    """

    strategy: str
    quarantine: bool
    engine: str                 # "compiled" (C loop) or "python" (one call per operation)
    ops: int
    seconds: float
    allocations: int
    failures: int
    skipped: int
    stale: int
    peak_active: int
    peak_held: int
    blocks_peak: int
    highest: int
    distances: npt.NDArray[np.float64]      # reuse distances, in the order they happened
    sample_time: npt.NDArray[np.float64]
    sample_active: npt.NDArray[np.int64]
    sample_held: npt.NDArray[np.int64]
    sample_blocks: npt.NDArray[np.int64]

    @property
    def ops_per_s(self) -> float | None:
        """Operations per second of the replay loop (None for a loop too quick to time)."""
        return self.ops / self.seconds if self.seconds > 0 else None

    def reuse(self) -> dict[str, Any]:
        """The reuse-distance summary: count, min, p1, median and the histogram."""
        return reuse_summary(self.distances)

    def __repr__(self) -> str:
        return one_line_repr(self)


def reuse_summary(distances: npt.ArrayLike) -> dict[str, Any]:
    """``count``, ``min``, ``p1``, ``median`` and ``hist`` of reuse distances (see the module).

    >>> reuse_summary(np.array([3.0, 1.0, 2.0]))["median"]
    2.0
    """
    ordered = np.sort(np.asarray(distances, dtype=np.float64))
    count = len(ordered)
    if not count:
        return {"count": 0, "min": None, "p1": None, "median": None,
                "hist": {"edges": [], "counts": []}}
    with np.errstate(divide="ignore"):
        power = np.floor(np.log2(ordered))
    power = np.where(ordered < 2.0 ** HIST_LOW, HIST_LOW - 1, power).astype(np.int64)
    first, last = int(power.min()), int(power.max())
    counts = np.bincount(power - first, minlength=last - first + 1)
    edges = [0.0 if k == HIST_LOW - 1 else 2.0 ** k for k in range(first, last + 2)]
    return {
        "count": count,
        "min": float(ordered[0]),
        "p1": float(ordered[int(0.01 * (count - 1))]),
        "median": float(np.median(ordered)),
        "hist": {"edges": edges, "counts": counts.tolist()},
    }


def _allocator_class(
    allocator: _AllocatorChoice,
) -> type[pasid.PasidAllocator] | type[pasid.pure.PasidAllocator] | None:
    if allocator is None:
        return pasid.PasidAllocator
    if isinstance(allocator, str):
        return {"cython": pasid._core.PasidAllocator if _has_core() else None,
                "python": pasid.pure.PasidAllocator}[allocator]
    return allocator


def _has_core() -> bool:
    try:
        import pasid._core  # noqa: F401
    except ImportError:
        return False
    return True


class Replayer:
    """One replay fed a chunk at a time: a fresh allocator, the loop, the bookkeeping.

    ``Replayer(header, strategy, ...)`` takes the options of :func:`replay`
    (``quarantine`` says which replay this is; the chunks fed to one with
    ``quarantine=False`` must already be rewritten, as
    :class:`pasid.sim.tracecheck.Detacher` does) and ``end``, the trace's last
    time when known (the sampling grid; see :class:`ReplayState`), and whether to
    keep the reuse distances (``distances``; without them ``Run.distances`` is
    empty and the replay keeps 8 bytes less per handle). Feed it the
    trace's chunks in order (:meth:`feed`), then :meth:`finish` gives the
    :class:`Run`. Memory: the allocator's tables and the replay's own (per
    PASID, per handle); nothing per operation. Time: the loop's, plus
    O(len(chunk)) numpy per chunk.
    """

    def __init__(self, header: StreamHeader | Trace, strategy: str = "lowest", *,
                 grace: float | None = None, seed: int = 0, quarantine: bool = True,
                 allocator: _AllocatorChoice = None, engine: str = "auto", samples: int = 500,
                 end: float | None = None, distances: bool = True) -> None:
        cls = _allocator_class(allocator)
        if cls is None:
            raise ValueError("the compiled allocator is not available")
        as_strategy(strategy)
        a = cls(header.bits, strategy=strategy, grace=header.grace if grace is None else grace,
                seed=seed)
        compiled_ok = _compiled is not None and type(a).__module__ == "pasid._core"
        if engine == "auto":
            engine = "compiled" if compiled_ok else "python"
        if engine == "compiled" and not compiled_ok:
            raise ValueError("the compiled replay loop needs the compiled allocator (pasid._core)")
        if engine not in ("compiled", "python"):
            raise ValueError(f"engine must be auto, compiled or python, got {engine!r}")
        # the compiled loop takes only the compiled allocator: its class was checked above
        self._loop: Callable[[Any, Chunk, ReplayState, int, int], None] = (
            _compiled.run if engine == "compiled" and _compiled is not None else _replay_py.run)
        self.allocator = a
        self.strategy = strategy
        self.quarantine = quarantine
        self.engine = engine
        self.seconds = 0.0
        self.state = ReplayState(a, samples, end, distances=distances)

    def feed(self, chunk: Chunk) -> None:
        """Replay ``chunk``, the next operations of the trace."""
        st = self.state
        st.take(chunk)
        began = _time.perf_counter()
        self._loop(self.allocator, chunk, st, 0, len(chunk))
        self.seconds += _time.perf_counter() - began

    def finish(self) -> Run:
        """The :class:`Run` of what was fed."""
        st = self.state
        failures = st.counter("failures")
        if self.allocator.stats()["failures"] != failures:
            raise AssertionError("the replay's failures disagree with the allocator's stats()")
        samples = st.counter("samples")
        return Run(
            strategy=self.strategy, quarantine=self.quarantine, engine=self.engine,
            ops=st.counter("done"), seconds=self.seconds, allocations=st.counter("allocations"),
            failures=failures, skipped=st.counter("skipped"), stale=st.counter("stale"),
            peak_active=st.counter("peak_active"), peak_held=st.counter("peak_held"),
            blocks_peak=st.counter("blocks_peak"), highest=st.counter("highest"),
            distances=st.distances[:st.counter("distances")].copy(),
            sample_time=st.sample_at[:samples].copy(),
            sample_active=st.sample_active[:samples].copy(),
            sample_held=st.sample_held[:samples].copy(),
            sample_blocks=st.sample_blocks[:samples].copy(),
        )


def replay(trace: Trace, strategy: str = "lowest", *, grace: float | None = None, seed: int = 0,
           quarantine: bool = True, allocator: _AllocatorChoice = None, engine: str = "auto",
           samples: int = 500, progress: Callable[[int, int], object] | None = None) -> Run:
    """Replay ``trace`` under ``strategy`` on a fresh allocator; returns the :class:`Run`.

    The allocator is ``allocator(trace.bits, strategy=..., grace=..., seed=...)``
    with PASID 0 reserved and a logical clock moved to each operation's time before
    it runs (reclaiming in one call every hold that ran out since: ``fifo`` queues
    those in ascending order); an ``alloc`` with a FITS device asks for
    ``max = 2**min(device bits, trace.bits) - 1``;
    ``allocator`` is a class (default :class:`pasid.PasidAllocator`) or
    ``"cython"``/``"python"``. ``grace`` overrides the trace's. ``quarantine=False``
    replays :meth:`~pasid.sim.trace.Trace.without_quarantine` instead.
    ``engine``: ``"compiled"`` (the C loop; needs the compiled allocator),
    ``"python"`` (one API call per operation, any allocator) or ``"auto"``
    (compiled when it can). ``progress(done, total)`` is called between chunks
    of operations. O(n) calls of O(log64 N) operations.

    >>> from pasid.sim.workload import generate, preset
    >>> trace = generate(preset("default", duration=2000), seed=1)
    >>> run = replay(trace, "fifo")
    >>> run.ops == len(trace), run.allocations == trace.counts()["alloc"], run.stale
    (True, True, 0)
    """
    as_strategy(strategy)
    if not quarantine:
        trace = trace.without_quarantine()
    replayer = Replayer(trace, strategy, grace=grace, seed=seed, quarantine=quarantine,
                        allocator=allocator, engine=engine, samples=samples, end=trace.duration)
    total = len(trace)
    size = None if progress is None else (CHUNK if replayer.engine == "compiled"
                                          else CHUNK >> 6)
    for chunk in trace.chunks(size):
        replayer.feed(chunk)
        if progress is not None:
            progress(chunk.start + len(chunk), total)
    return replayer.finish()


def row(on: Run, off: Run | None) -> dict[str, Any]:
    """One strategy's metrics as a JSON-ready dict: ``on`` with quarantine, ``off`` without."""
    return {
        "strategy": on.strategy,
        "ops": on.ops,
        "seconds": on.seconds,
        "ops_per_s": on.ops_per_s,
        "engine": on.engine,
        "allocations": on.allocations,
        "failures": on.failures,
        "skipped": on.skipped,
        "peak_active": on.peak_active,
        "peak_held": on.peak_held,
        "reuse": on.reuse(),
        "stale": on.stale,
        "stale_no_quarantine": None if off is None else off.stale,
        "blocks_peak": on.blocks_peak,
        "highest": on.highest,
    }


def simulate(source: Trace | Workload | TraceStream, strategies: Sequence[str] = STRATEGIES, *,
             seed: int = 0, grace: float | None = None, allocator: _AllocatorChoice = None,
             engine: str = "auto", samples: int = 500,
             progress: Callable[[int, int | None], object] | None = None,
             ) -> tuple[list[dict[str, Any]], list[Run]]:
    """Every strategy on the same operations: ``(rows, runs)``.

    ``source`` is a :class:`~pasid.sim.trace.Trace`, a
    :class:`~pasid.sim.workload.Workload` (generated with ``seed``; ``seed``
    also seeds the ``random`` strategy) or a :class:`TraceStream` (a trace
    read a chunk at a time: :func:`pasid.sim.traceio.open_trace`). Each
    strategy replays the trace with device quarantine and without it (for
    ``stale_no_quarantine``). ``rows``: one :func:`row` per strategy, in the
    order given; ``runs``: the quarantine-on :class:`Run` of each, for plots.
    Every name is checked before anything runs.

    A workload or a stream is never whole in memory: it is generated (or read),
    checked and rewritten for the no-quarantine replays a chunk at a time, and
    every replay takes each chunk in turn, so memory follows what is live (the
    allocators' tables, per-handle bookkeeping), not the trace's length. A
    :class:`~pasid.sim.trace.TraceError` in a chunk stops the run there (the
    replays start once the first chunk has checked).
    ``progress(done, total)`` is called after each chunk with the operations
    done and the total (an estimate for a workload, None when unknown).
    """
    for strategy in strategies:
        as_strategy(strategy)
    options: dict[str, Any] = dict(grace=grace, seed=seed, allocator=allocator, engine=engine)
    stream = _stream(source, seed)
    on: list[Replayer] = []
    off: list[Replayer] = []

    def start() -> None:
        """The replays, made once the first chunk has checked (a trace that fails at
        once makes no allocator)."""
        on[:] = [Replayer(stream.header, strategy, samples=samples, end=stream.end, **options)
                 for strategy in strategies]
        off[:] = [Replayer(stream.header, strategy, quarantine=False, samples=0,
                           distances=False, **options)
                  for strategy in strategies]

    if isinstance(source, Trace):
        start()
        # checked already, and whole: the no-quarantine replays take its rewrite whole
        for chunk in source.chunks(None if progress is None else CHUNK):
            for replayer in on:
                replayer.feed(chunk)
            if progress is not None:
                progress(chunk.start + len(chunk), len(source))
        for chunk in source.without_quarantine().chunks():
            for replayer in off:
                replayer.feed(chunk)
    else:
        from pasid.sim.tracecheck import Checker, Detacher

        checker, detacher = Checker(stream.header), Detacher()
        for chunk in stream.chunks:
            checker.feed(chunk)
            if not on:
                start()
            for replayer in on:
                replayer.feed(chunk)
            rewritten = detacher.feed(chunk)
            for replayer in off:
                replayer.feed(rewritten)
            if progress is not None:
                progress(chunk.start + len(chunk), stream.total)
        if not on:
            start()
    runs = [replayer.finish() for replayer in on]
    rows = [row(run, replayer.finish()) for run, replayer in zip(runs, off)]
    return rows, runs


@dataclass
class TraceStream:
    """A trace a chunk at a time: its header, its chunks (an iterator, used once),
    its last time and its length when known (or estimated), for sampling and
    progress."""

    header: StreamHeader
    chunks: Iterator[Chunk]
    end: float | None = None
    total: int | None = None


def _stream(source: Trace | Workload | TraceStream, seed: int) -> TraceStream:
    """``source`` as a :class:`TraceStream` (a workload's generated as it is read)."""
    if isinstance(source, TraceStream):
        return source
    if isinstance(source, Trace):
        return TraceStream(source.header(), source.chunks(), source.duration, len(source))
    from pasid.sim.workload import Workload, end_estimate, expected_ops, stream

    if not isinstance(source, Workload):
        raise TypeError(f"simulate needs a Trace, a Workload or a TraceStream, "
                        f"got {type(source).__name__}")
    header, chunks = stream(source, seed)
    return TraceStream(header, chunks, end_estimate(source), expected_ops(source))
