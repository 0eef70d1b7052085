"""The standard workloads (SPEC §6, W1-W6) and the replay benchmark: one definition.

Two front ends time the rounds defined here and print the same table:

* ``benchmarks/`` (pytest-benchmark): ``benchmark.pedantic`` times each
  round; ``benchmarks/ratios.py`` reads the JSON and calls :func:`report`;
* :func:`run` (``pasid bench``): ``perf_counter`` around the same round
  bodies, the same setups, the same rounds, then :func:`report`.

Candidates, all on a 20-bit space (``ROWS``: the rows of each workload)::

    cy-IDA  pasid._core.IDA
    py-IDA  pasid.pure.IDA                                    (baseline, W1-W5)
    cy-PA   pasid._core.PasidAllocator(bits=20, reserved=())  (strategy "lowest")
    py-PA   pasid.pure.PasidAllocator(bits=20, reserved=())   (baseline, W6)

A row is a candidate, or ``candidate:mode`` (W4: ``call``/``batch``; replay:
the ``compiled`` or ``python`` loop; the groups below: their own modes).
:meth:`Session.case` gives, for one (workload, row), a :class:`Case`: the
timed round body, the untimed setup that returns its arguments, the rounds
and warm-up rounds, the operations a round (and each of its phases) holds,
and the check of the last result against the plan. The rules every round follows:

* identical work from an identical state for every candidate of a group
  (pure rows run fewer rounds, never less work per round);
* loops that only allocate use ``itertools.repeat(None, n)`` (no int
  objects); loops that walk IDs walk a list rebuilt by the setup, right
  before the round, with ``ndarray.tolist()`` (contiguous fresh ints:
  scattered ints add 130-150 ns an iteration, PERF-NOTES);
* a round with two phases (alloc, then free) times each phase with
  ``perf_counter`` inside the body (``Case.phases``); the harness times the
  whole round;
* one untimed warm-up round for compiled rows only (a pure round is
  thousands of operations and warms the interpreter itself);
* every result is checked against the plan (the lowest FREE ID is
  deterministic), so a candidate that does different work fails, not wins.

Simulator paths (issue 19): the calls a simulator makes, which W1-W6 do not.

* ``owner-pairs``: ``free(alloc(owner=O))`` on one compiled allocator per
  session in which owner ``"vm0"`` holds PASIDs 0..999 (``OWNER_HELD``), so
  every pair takes PASID 1000. Rows: ``untagged`` (``free(alloc())``),
  ``vm0`` (the owner holds 1,000 others), ``vm1`` (the pair is the owner's
  only PASID: its record is made and dropped every pair, the one-PASID
  process of SVA). The three rows share the object: the same state.
* ``owner-churn``: processes, each ``alloc(owner=pid)``, ``bind`` one
  device, ``exit_owner(pid)``, then the device's ``unbind`` (a killed
  process in ``pasid.sim.workload``: the exit releases, the device tears
  down after); ``pid`` from a fresh list ``1..n`` (distinct in a round,
  every owner gone at its end). grace 0 and drain 0, so the unbind returns
  the PASID to FREE and no ``advance`` is needed: the round is the process's
  own four calls. ns per process; compiled against pure.
* ``W6-owners``: W6's lifecycle with ``alloc(owner=o)``, a distinct int
  owner per lifecycle from a fresh list (what the simulator's replay does:
  one owner per process, its only PASID, owners are ints); its ``plain`` row
  is W6 itself (the same body and object construction) in the same group, so
  the owners' cost is a ratio within one run.
* ``W1-cold`` and ``W6-cold``: W1's and W6's rounds (the same plan, states,
  checks), but in blocks: before each block the caches are evicted by
  reading one byte a line of a buffer twice the last-level cache
  (:class:`Evictor`; the size read from sysfs), untimed. Each block's first
  operation (phase ``first``) and the rest (``rest``) are timed apart with
  ``perf_counter``; a round's phase time is the median block's time times
  the number of blocks (:func:`block_total`: robust to a preempted block).
  The ``round`` time includes the evictions and is not shown.
  Why a buffer, not interleaved candidates: the allocators' tables (2 MiB,
  128 KiB) are far smaller than the last-level cache, so interleaving them
  evicts only L2; a simulator's own data between two calls is what pushes
  them to memory. Why blocks: an eviction costs milliseconds, a pair ~100 ns.
  Why ``first`` apart: an eviction also empties the caches of what every
  operation shares (the interpreter's code and objects, the caller's frame,
  the allocator's code, summaries, the lowest FREE IDs): a block's first
  operation brings them back, ~5 us here, the same for every candidate, and
  a sum over the block would spread that over its operations (the ratio
  would depend on the block size). W1 evicts every ``COLD_W1_BLOCK`` (250)
  pairs: each pair frees a random victim, and 250 lines are few against
  IDA's 2,048 bitmap lines and the PasidAllocator's 32,768 slot lines, so
  in ``rest`` nearly every victim's line is still a miss for both: the cost
  a simulator pays per call once its own data has evicted the tables (the
  target reads ``rest``). W6 reuses one PASID, so only a block's first
  lifecycle is cold: W6-cold evicts every ``COLD_W6_BLOCK`` (10) lifecycles
  and ``first`` is the cold lifecycle (Python's side included, see
  :class:`Evictor`), ``rest`` warm again. W1-cold's ``l2`` rows read a buffer
  twice the L2 instead: the tables leave L2 but stay in the last-level cache,
  a simulator whose own data is a few MiB (IDA's 128 KiB bitmap is back in
  L2 at once, the 2 MiB slot table is not: the PasidAllocator's worst case).
  The ``warm`` rows run the same blocks and timers without evicting: the
  cold/warm ratios are within one run and one loop.
* ``replay`` and ``replay-random``: the default workload's trace (seed 0,
  174,158 operations) replayed from a fresh allocator a round, with strategy
  "lowest" and "random" (whose PASIDs lie anywhere in the space: its tables'
  pages are first touched in the loop, its lines are out of cache). The
  ``loop`` phase is the replay loop's own time (``Run.seconds``); the targets
  read it. Every row of a strategy must give the same counters and reuse
  distances.

Repetitions: each repetition runs the rows of a workload in the order of
``ROWS`` rotated by the repetition number (:func:`rotated`), so the order
changes while compiled and pure rows keep alternating. The table reports the
median over repetitions of each row's per-repetition median, and ratios taken
within each repetition, then the median.

Prepared states (half the space allocated at random, 99.9% allocated) are
expensive to build with the pure backend (about 2 s to fill 2**20 IDs one at
a time), so each candidate keeps ONE object per :class:`Session` in a
:class:`Stage`, moved between the named states by freeing / pinning exactly
the IDs that differ. Every workload that uses a stage leaves it in a known
state (it either returns to where it started or says where it ends).

``pasid._core`` is imported only inside functions: ``import pasid.bench``
works without the compiled extension; :func:`run` then refuses with a
:class:`RuntimeError`.
"""

from __future__ import annotations

import importlib
import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from time import perf_counter
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from pasid._benchwork import (
    CANDIDATES, LABELS, N, Candidate, Evictor, Phases, Stage, alloc_free_round, batch_round,
    block_total, candidate_of, churn_round, cold_churn_round, cold_lifecycle_round, l2_bytes,
    lifecycle_round, llc_bytes, mode_of, no_eviction, owner_churn_round, owner_lifecycle_round,
    owner_pair_round, plan, range_round_ida, range_round_pa, replay_round, untagged_pair_round,
)

if TYPE_CHECKING:
    from pasid.sim.replay import Run
    from pasid.sim.trace import Trace

# samples[(workload, row, phase)][repetition] = ns per operation
Samples = dict[tuple[str, str, str], dict[int, float]]

__all__ = [
    "CANDIDATES", "Case", "Evictor", "Session", "WORKLOADS", "ROWS", "ORDER",
    "report", "run", "memory", "rotated", "require_core", "figures", "llc_bytes", "l2_bytes",
    "block_total", "plan", "mode_of",
]

DEFAULT_REPS = 5

# operations per round (standard / quick); quick mode: see QUICK_NOTE
W1_PAIRS = 20_000
W2_IDS = N
W3_OPS = 1_000
W4_IDS = 100_000
W5_OPS = 10_000
W6_CYCLES = 2_000
OWNER_PAIRS = 20_000
OWNER_HELD = 1_000              # PASIDs owner "vm0" holds in the owner-pairs state
OWNER_PROCESSES = 2_000
COLD_W1_BLOCK = 250             # pairs between two evictions (W1-cold)
COLD_W6_BLOCK = 10              # lifecycles between two evictions (W6-cold)
QUICK_SIZES = {"W1": 5_000, "W2": N // 4, "W4": 25_000, "W5": 2_500, "W6": 500,
               "owner-pairs": 5_000, "owner-churn": 500}

REPLAY_PRESET = "default"
REPLAY_SEED = 0
REPLAY_STRATEGY = "lowest"
REPLAY_TARGET = 5_000_000       # compiled replay loop, ops per second
REPLAY_RANDOM_TARGET = 6_000_000   # the same with strategy "random" (replay-random)
# each replay group's strategy and compiled-loop target (ops per second)
REPLAYS = {"replay": (REPLAY_STRATEGY, REPLAY_TARGET),
           "replay-random": ("random", REPLAY_RANDOM_TARGET)}

# rounds per repetition: (compiled rows, pure rows); standard, then quick
ROUNDS = {
    "W1": (15, 3),
    "W2": (3, 1),
    "W3": (50, 15),
    "W4-batch": (30, 2),
    "W4-call": (10, 2),
    "W5": (20, 3),
    "W6": (20, 3),
    "replay-compiled": (10, 0),
    "replay-python": (3, 1),
    "owner-pairs": (15, 0),
    "owner-churn": (20, 3),
    "W6-owners": (20, 3),
    "W1-cold": (5, 0),
    "W6-cold": (3, 0),
}
QUICK_ROUNDS = {
    "W1": (5, 1),
    "W2": (1, 1),
    "W3": (15, 3),
    "W4-batch": (10, 1),
    "W4-call": (3, 1),
    "W5": (5, 1),
    "W6": (5, 1),
    "replay-compiled": (3, 0),
    "replay-python": (1, 1),
    "owner-pairs": (5, 0),
    "owner-churn": (5, 1),
    "W6-owners": (5, 1),
    "W1-cold": (2, 0),
    "W6-cold": (2, 0),
}
QUICK_NOTE = (
    "quick: fewer rounds per repetition, and smaller rounds: W1 5,000 pairs (W1-cold keeps "
    "20,000: how much of the slot table a round touches decides where it is cached), W2 a "
    "quarter of the space (2**18 IDs from empty), W4 25,000 IDs, W5 2,500 allocations, W6 "
    "(and W6-owners, W6-cold) 500 lifecycles, owner pairs 5,000, owner churn 500 processes; "
    "the replay group's python rows run 1 round and no warm-up"
)


# ------------------------------------------------------------ cases

@dataclass
class Case:
    """One (workload, row) ready to time: see the module docstring.

    A harness calls ``setup()`` (untimed) before every round, warm-up rounds
    included, and passes what it returns to ``body``; after the last round it
    calls ``check(result)``. ``phases``: per phase, the times the body itself
    recorded, warm-up rounds included (the first ``warmup`` entries). ``ops``:
    operations per round (``"round"``) and per phase.
    """

    workload: str
    group: str
    row: str
    cand: Candidate
    body: Callable[..., Any]
    setup: Callable[[], tuple[Any, ...]]
    rounds: int
    warmup: int
    ops: dict[str, int]
    unit: str
    check: Callable[[Any], None]
    phases: Phases = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    """A benchmark group: its names, its rows, and which Session method builds its cases."""

    key: str            # "W1" ... "W6", "replay": the workload in result files
    group: str          # the pytest-benchmark group
    title: str          # the table's heading
    unit: str           # what one operation is
    rows: tuple[str, ...]   # in interleaved order (compiled and pure alternate)
    build: str          # the Session method that makes a Case
    show_round: bool = True     # False: the round holds untimed work (evictions)


ALL4 = ("cy-IDA", "py-IDA", "cy-PA", "py-PA")   # compiled and pure alternate

WORKLOADS = {
    w.key: w
    for w in (
        Workload("W1", "W1-churn",
                 "W1-churn: half full at random, free(random allocated) + alloc() pairs",
                 "pair", ALL4, "_w1"),
        Workload("W2", "W2-fill", "W2-fill: empty -> full by alloc(), then free all",
                 "op", ALL4, "_w2"),
        Workload("W3", "W3-nearly-full",
                 "W3-nearly-full: 99.9% allocated, alloc the last 1000 then free them",
                 "op", ALL4, "_w3"),
        Workload("W4", "W4-batch",
                 "W4-batch: alloc_many(100_000) + free_many, vs 100_000 per-call alloc()/free()",
                 "id", ("cy-PA:batch", "py-IDA:call", "cy-IDA:call", "py-PA:batch",
                        "cy-PA:call", "py-PA:call"), "_w4"),
        Workload("W5", "W5-range",
                 "W5-range: alloc in [2**19, 2**20-1] on the half state, then free",
                 "op", ALL4, "_w5"),
        Workload("W6", "W6-lifecycle",
                 "W6-lifecycle: alloc, bind x2, free, unbind x2, advance(by=1); grace 1, "
                 "drain 0.5", "lifecycle", ("cy-PA", "py-PA"), "_w6"),
        Workload("replay", "replay",
                 f"replay: preset({REPLAY_PRESET!r}) seed {REPLAY_SEED}, strategy "
                 f"{REPLAY_STRATEGY!r}: compiled loop vs per-call Python loop",
                 "op", ("cy-PA:compiled", "py-PA:python", "cy-PA:python"), "_replay"),
        Workload("replay-random", "replay-random",
                 "replay-random: the same trace, strategy 'random' (its PASIDs anywhere "
                 "in the space): compiled loop vs the pure backend's",
                 "op", ("cy-PA:compiled", "py-PA:python"), "_replay"),
        Workload("owner-pairs", "owner-pairs",
                 f"owner-pairs: free(alloc(owner=O)); 'vm0' holds {OWNER_HELD:,} PASIDs, "
                 "'vm1' none (the pair is its only PASID)", "pair",
                 ("cy-PA:untagged", "cy-PA:vm0", "cy-PA:vm1"), "_owner_pairs"),
        Workload("owner-churn", "owner-churn",
                 "owner-churn: alloc(owner=pid), bind, exit_owner(pid), unbind; a pid a "
                 "process, grace 0, drain 0", "process", ("cy-PA", "py-PA"), "_owner_churn"),
        Workload("W6-owners", "W6-owners",
                 "W6-owners: W6 with alloc(owner=o), an int owner a lifecycle; plain: W6",
                 "lifecycle", ("cy-PA:owners", "py-PA:owners", "cy-PA:plain"), "_w6_owners"),
        Workload("W1-cold", "W1-cold",
                 f"W1-cold: W1, caches evicted (untimed) every {COLD_W1_BLOCK} pairs (l2: L2 "
                 "alone); first: a block's first pair, rest: the others; warm: not evicted",
                 "pair", ("cy-PA:cold", "cy-IDA:cold", "cy-PA:l2", "cy-IDA:l2", "cy-PA:warm",
                          "cy-IDA:warm"), "_w1_cold", False),
        Workload("W6-cold", "W6-cold",
                 f"W6-cold: W6, caches evicted (untimed) every {COLD_W6_BLOCK} lifecycles; "
                 "first: a block's first lifecycle, rest: the others; warm: not evicted",
                 "lifecycle", ("cy-PA:cold", "cy-PA:warm"), "_w6_cold", False),
    )
}
ROWS = {key: w.rows for key, w in WORKLOADS.items()}
# Run order: W3 first, so each stage goes full -> 99.9% -> half (only frees,
# the cheap direction for the pure backend), then W1 and W5 on the half state.
# The cold W1 follows W1 on the same stages (compiled rows only: cheap moves).
ORDER = ("W3", "W1", "W5", "W1-cold", "W2", "W4", "W6", "W6-cold", "W6-owners", "owner-pairs",
         "owner-churn", "replay", "replay-random")
TABLE_ORDER = ("W1", "W1-cold", "W2", "W3", "W4", "W5", "W6", "W6-cold", "W6-owners",
               "owner-pairs", "owner-churn", "replay", "replay-random")
ROW_ORDER = ["cy-IDA", "cy-IDA:call", "cy-IDA:cold", "cy-IDA:l2", "cy-IDA:warm", "cy-PA",
             "cy-PA:call", "cy-PA:batch", "cy-PA:compiled", "cy-PA:python", "cy-PA:cold",
             "cy-PA:l2", "cy-PA:warm",
             "cy-PA:untagged", "cy-PA:vm0", "cy-PA:vm1", "cy-PA:plain", "cy-PA:owners",
             "py-IDA", "py-IDA:call", "py-PA", "py-PA:call", "py-PA:batch", "py-PA:python",
             "py-PA:owners"]
PHASES = ("round", "loop", "first", "rest", "alloc", "free")


def rotated(rows: Sequence[str], rep: int) -> list[str]:
    """``rows`` rotated by ``rep``: the order of repetition ``rep``."""
    k = rep % len(rows)
    return list(rows[k:]) + list(rows[:k])


class Session:
    """The prepared objects of one benchmarking session.

    One :class:`Stage` per candidate, the W1 plan, the replay trace and its
    reference result; ``quick`` selects the smaller rounds (``QUICK_NOTE``).
    """

    def __init__(self, quick: bool = False) -> None:
        self.quick = quick
        self.stages: dict[str, Stage] = {}
        self._trace: Trace | None = None
        self.replay_reference: dict[str, tuple[Any, ...]] = {}    # by strategy
        self._evictors: dict[str, Evictor] = {}
        self._owned: dict[str, list[Any]] = {}      # owner-pairs: [object, allocations]

    def stage(self, cand: Candidate) -> Stage:
        """The session's prepared object for ``cand`` (built on first use)."""
        st = self.stages.get(cand.name)
        if st is None or st.state is None:      # None: a move between states failed
            st = self.stages[cand.name] = Stage(cand)
        return st

    def size(self, key: str, standard: int) -> int:
        return QUICK_SIZES.get(key, standard) if self.quick else standard

    def rounds(self, key: str, cand: Candidate) -> tuple[int, int]:
        """(rounds, warmup_rounds) of a row. One untimed warm-up round for
        compiled rows only: a pure round is thousands of operations and warms
        the interpreter itself, and a warm-up of the pure W2 round would cost ~7 s."""
        compiled, pure = (QUICK_ROUNDS if self.quick else ROUNDS)[key]
        if not cand.compiled:
            return pure, 0
        if self.quick and key == "replay-python":
            return compiled, 0
        return compiled, 1

    def case(self, workload: str, row: str) -> Case:
        """The :class:`Case` for ``row`` of ``workload`` ("W1".."W6", "replay", ...)."""
        w = WORKLOADS[workload]
        if row not in w.rows:
            raise ValueError(f"{workload} has no row {row!r} (rows: {', '.join(w.rows)})")
        build: Callable[[Workload, str, Candidate, str], Case] = getattr(self, w.build)
        return build(w, row, candidate_of(row), mode_of(row))

    # -- one builder per workload: the setup, ops and check of its rounds ---

    def _w1(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """Half the space allocated at random; timed: free(random allocated) + alloc() pairs."""
        pairs = self.size("W1", W1_PAIRS)
        victims, last, end = plan().churn(pairs)
        st = self.stage(cand)
        rounds, warmup = self.rounds("W1", cand)

        def setup() -> tuple[Any, ...]:
            # Restore the seeded half state (untimed), then record where the
            # round below leaves the object: the plan's post-round FREE set.
            obj = st.ensure("half")
            st.state = end
            return (obj.free, obj.alloc, victims.tolist())

        def check(result: Any) -> None:
            assert result == last, (result, last)
            st.ensure("half")   # raises if the backend strayed from the plan

        return Case("W1", w.group, row, cand, churn_round, setup, rounds, warmup,
                    {"round": pairs}, w.unit, check)

    def _w2(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """Empty to full one alloc() at a time, then free all (ascending); a fresh object
        per round."""
        n = self.size("W2", W2_IDS)
        phases: Phases = {"alloc": [], "free": []}
        rounds, warmup = self.rounds("W2", cand)
        all_ids = np.arange(n, dtype=np.int64)

        def setup() -> tuple[Any, ...]:
            obj = cand.new()
            return (obj.alloc, obj.free, n, all_ids.tolist(), phases)

        def check(result: Any) -> None:
            assert result == n - 1, (result, n - 1)

        return Case("W2", w.group, row, cand, alloc_free_round, setup, rounds, warmup,
                    {"round": 2 * n, "alloc": n, "free": n}, w.unit, check, phases)

    def _w3(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """99.9% allocated (1049 FREE): alloc the lowest 1000 one at a time, free them."""
        st = self.stage(cand)
        ids = plan().nearly_free[:W3_OPS]
        phases: Phases = {"alloc": [], "free": []}
        rounds, warmup = self.rounds("W3", cand)

        def setup() -> tuple[Any, ...]:
            obj = st.ensure("nearly")
            return (obj.alloc, obj.free, W3_OPS, ids.tolist(), phases)

        def check(result: Any) -> None:
            assert result == ids[-1], (result, ids[-1])

        return Case("W3", w.group, row, cand, alloc_free_round, setup, rounds, warmup,
                    {"round": 2 * W3_OPS, "alloc": W3_OPS, "free": W3_OPS}, w.unit, check,
                    phases)

    def _w4(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """alloc_many(n) then free_many (PasidAllocator), against n per-call
        alloc() then free() of every candidate; from empty each round."""
        n = self.size("W4", W4_IDS)
        obj = cand.new()
        phases: Phases = {"alloc": [], "free": []}
        rounds, warmup = self.rounds("W4-" + mode, cand)
        expect = np.arange(n, dtype=np.int64)
        body: Callable[..., Any]
        if mode == "batch":
            def setup() -> tuple[Any, ...]:
                return (obj.alloc_many, obj.free_many, n, phases)

            def check(result: Any) -> None:
                assert result.dtype == np.uint32 and np.array_equal(result, expect)
                assert len(obj) == 0

            body = batch_round
        else:
            def setup() -> tuple[Any, ...]:
                return (obj.alloc, obj.free, n, expect.tolist(), phases)

            def check(result: Any) -> None:
                assert result == n - 1, (result, n - 1)
                assert len(obj) == 0

            body = alloc_free_round
        return Case("W4", w.group, row, cand, body, setup, rounds, warmup,
                    {"round": 2 * n, "alloc": n, "free": n}, w.unit, check, phases)

    def _w5(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """Half state; n x alloc in [2**19, 2**20 - 1] (alloc_range / alloc(min=, max=)),
        then free them."""
        n = self.size("W5", W5_OPS)
        st = self.stage(cand)
        lo, hi = N // 2, N - 1
        half_free = plan().half_free
        ids = half_free[half_free >= lo][:n]
        phases: Phases = {"alloc": [], "free": []}
        rounds, warmup = self.rounds("W5", cand)
        body = range_round_ida if cand.kind == "ida" else range_round_pa

        def setup() -> tuple[Any, ...]:
            obj = st.ensure("half")
            alloc = obj.alloc_range if cand.kind == "ida" else obj.alloc
            return (alloc, obj.free, lo, hi, n, ids.tolist(), phases)

        def check(result: Any) -> None:
            assert result == ids[-1], (result, ids[-1])

        return Case("W5", w.group, row, cand, body, setup, rounds, warmup,
                    {"round": 2 * n, "alloc": n, "free": n}, w.unit, check, phases)

    def _w6(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """grace=1, two devices with drain=0.5; n lifecycles a round (7 calls each)."""
        return self._lifecycle(w, row, cand, "plain")

    def _w6_owners(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """W6 with ``alloc(owner=o)``, owners ``1..n`` (a fresh list each round); the
        ``plain`` row: W6 itself."""
        return self._lifecycle(w, row, cand, mode)

    def _w6_cold(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """W6 in blocks of ``COLD_W6_BLOCK`` lifecycles, evicted (``cold``) or not before
        each."""
        return self._lifecycle(w, row, cand, mode)

    def _lifecycle(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """W6's object and check, for W6 (``plain``), W6-owners (``owners``/``plain``)
        and W6-cold (``cold``/``warm``): n lifecycles a round from the empty state,
        each ending FREE again."""
        n = self.size("W6", W6_CYCLES)
        obj = cand.new(grace=1)
        d0, d1 = "dev0", "dev1"
        obj.add_device(d0, drain=0.5)
        obj.add_device(d1, drain=0.5)
        rounds, warmup = self.rounds(w.key, cand)
        started = []                            # one entry per round set up
        calls = (obj.alloc, obj.bind, obj.free, obj.unbind, obj.advance, d0, d1)
        ops = {"round": n}
        phases: Phases = {}
        body: Callable[..., Any]
        if mode == "owners":
            owners = np.arange(1, n + 1, dtype=np.int64)

            def setup() -> tuple[Any, ...]:
                started.append(n)
                return (*calls, owners.tolist())

            body = owner_lifecycle_round
        elif mode in ("cold", "warm"):
            assert n % COLD_W6_BLOCK == 0, n            # equal blocks (block_total)
            blocks = n // COLD_W6_BLOCK
            evict = self.evictor() if mode == "cold" else no_eviction
            phases = {"first": [], "rest": []}
            ops = {"round": n, "first": blocks, "rest": n - blocks}

            def setup() -> tuple[Any, ...]:
                started.append(n)
                return (*calls, blocks, COLD_W6_BLOCK, evict, phases)

            body = cold_lifecycle_round
        else:
            def setup() -> tuple[Any, ...]:
                started.append(n)
                return (*calls, n)

            body = lifecycle_round

        def check(result: Any) -> None:
            assert result == 1, result          # the last advance reclaimed its PASID
            stats = obj.stats()
            assert stats["free"] == N and stats["active"] == 0, stats
            assert stats["allocations"] == sum(started), (stats, sum(started))
            assert stats["reclaimed"] == stats["allocations"] == stats["releases"], stats

        return Case(w.key, w.group, row, cand, body, setup, rounds, warmup, ops, w.unit, check,
                    phases)

    def evictor(self, level: str = "llc") -> Evictor:
        """The session's :class:`Evictor` for ``level`` (its buffer allocated on first
        use): ``"llc"``, twice the last-level cache; ``"l2"``, twice the L2."""
        ev = self._evictors.get(level)
        if ev is None:
            ev = self._evictors[level] = Evictor(2 * (l2_bytes() if level == "l2"
                                                      else llc_bytes()))
        return ev

    def _w1_cold(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """W1's pairs, plan and stage, in blocks of ``COLD_W1_BLOCK`` pairs (each a fresh
        list), before each the caches evicted (``cold``), L2 alone (``l2``) or nothing
        (``warm``)."""
        pairs = W1_PAIRS       # quick too: see QUICK_NOTE
        victims, last, end = plan().churn(pairs)
        st = self.stage(cand)
        rounds, warmup = self.rounds(w.key, cand)
        evict = {"cold": self.evictor, "l2": lambda: self.evictor("l2")}.get(
            mode, lambda: no_eviction)()
        phases: Phases = {"first": [], "rest": []}
        assert pairs % COLD_W1_BLOCK == 0, pairs     # equal blocks (block_total)
        starts = range(0, pairs, COLD_W1_BLOCK)
        nblocks = len(starts)

        def setup() -> tuple[Any, ...]:
            obj = st.ensure("half")
            st.state = end
            blocks = [(int(victims[i]), victims[i + 1:i + COLD_W1_BLOCK].tolist())
                      for i in starts]
            return (obj.free, obj.alloc, blocks, evict, phases)

        def check(result: Any) -> None:
            assert result == last, (result, last)
            st.ensure("half")   # raises if the backend strayed from the plan

        return Case(w.key, w.group, row, cand, cold_churn_round, setup, rounds, warmup,
                    {"round": pairs, "first": nblocks, "rest": pairs - nblocks}, w.unit,
                    check, phases)

    def _owner_pairs(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """``free(alloc(owner=O))`` pairs on one object per candidate and session, where
        "vm0" holds PASIDs ``0..OWNER_HELD-1``: every pair takes PASID ``OWNER_HELD``.
        The rows (``untagged``, ``vm0``, ``vm1``) share the object: the same state."""
        n = self.size(w.key, OWNER_PAIRS)
        held = self._owned.get(cand.name)
        if held is None:
            held = self._owned[cand.name] = [cand.new(), OWNER_HELD]   # object, allocations
            for _ in range(OWNER_HELD):
                held[0].alloc(owner="vm0")
        obj = held[0]
        rounds, warmup = self.rounds(w.key, cand)
        body = untagged_pair_round if mode == "untagged" else owner_pair_round
        owner = None if mode == "untagged" else mode

        def setup() -> tuple[Any, ...]:
            held[1] += n
            return (obj.alloc, obj.free, owner, n)

        def check(result: Any) -> None:
            assert result == OWNER_HELD, (result, OWNER_HELD)
            stats = obj.stats()
            assert stats["active"] == OWNER_HELD and stats["allocations"] == held[1], (
                stats, held[1])
            assert obj.owner(OWNER_HELD - 1) == "vm0"

        return Case(w.key, w.group, row, cand, body, setup, rounds, warmup, {"round": n},
                    w.unit, check)

    def _owner_churn(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """grace 0, one device with drain 0; per process (pid ``1..n``, a fresh list each
        round) alloc(owner=pid), bind, exit_owner(pid), unbind: PASID 0 every time."""
        n = self.size(w.key, OWNER_PROCESSES)
        obj = cand.new()
        dev = "dev0"
        obj.add_device(dev, drain=0)
        pids = np.arange(1, n + 1, dtype=np.int64)
        rounds, warmup = self.rounds(w.key, cand)
        started = []

        def setup() -> tuple[Any, ...]:
            started.append(n)
            return (obj.alloc, obj.bind, obj.exit_owner, obj.unbind, dev, pids.tolist())

        def check(result: Any) -> None:
            assert result == 0, result
            stats = obj.stats()
            assert stats["free"] == N and stats["active"] == 0, stats
            assert (stats["allocations"] == stats["releases"] == stats["reclaimed"]
                    == sum(started)), (stats, sum(started))

        return Case(w.key, w.group, row, cand, owner_churn_round, setup, rounds, warmup,
                    {"round": n}, w.unit, check)

    def trace(self) -> Trace:
        """The replay trace, generated once per session (untimed)."""
        if self._trace is None:
            from pasid.sim.workload import generate, preset

            self._trace = generate(preset(REPLAY_PRESET), REPLAY_SEED)
        return self._trace

    def _replay(self, w: Workload, row: str, cand: Candidate, mode: str) -> Case:
        """The trace replayed with strategy "lowest" (replay-random: "random"): the
        compiled loop or the per-call Python loop on the compiled allocator, or the
        pure backend."""
        from pasid.sim.replay import replay

        strategy = REPLAYS[w.key][0]
        trace = self.trace()
        allocator = "cython" if cand.compiled else "python"
        rounds, warmup = self.rounds("replay-" + mode, cand)
        phases: Phases = {"loop": []}

        def setup() -> tuple[Any, ...]:
            return (replay, trace, strategy, mode, allocator, phases)

        def check(result: Any) -> None:
            assert result.ops == len(trace), (result.ops, len(trace))
            assert result.engine == mode, result.engine
            summary = replay_summary(result)
            reference = self.replay_reference.setdefault(strategy, summary)
            assert summary == reference, (row, strategy, summary, reference)

        return Case(w.key, w.group, row, cand, replay_round, setup, rounds, warmup,
                    {"round": len(trace), "loop": len(trace)}, w.unit, check, phases)


def replay_summary(result: Run) -> tuple[Any, ...]:
    """What every engine and backend must agree on for one trace and strategy:
    the counters and the reuse distances (checked against the session's first
    replay, whichever row ran it)."""
    return (result.ops, result.allocations, result.failures, result.skipped, result.stale,
            result.peak_active, result.peak_held, result.blocks_peak, result.highest,
            result.distances.tobytes())


# ------------------------------------------------------------ the harness

def require_core(replay: bool = False) -> None:
    """Raise :class:`RuntimeError` (one line) unless the compiled core is in use."""
    if os.environ.get("PASID_NO_EXTENSION") == "1":
        raise RuntimeError("pasid bench measures the compiled core, which is disabled "
                           "(PASID_NO_EXTENSION=1)")
    try:
        importlib.import_module("pasid._core")
        if replay:
            importlib.import_module("pasid.sim._replay")
    except ImportError as exc:
        raise RuntimeError(f"pasid bench measures the compiled core, which is not available "
                           f"({exc}); build it with pip install -e .") from None


def select(workloads: Iterable[str] | None) -> list[str]:
    """The workload keys to run, in run order; accepts keys and group names."""
    if workloads is None:
        return list(ORDER)
    names: dict[str, str] = {}
    key: str | None
    for key, w in WORKLOADS.items():
        names[key.lower()] = key
        names[w.group.lower()] = key
    chosen = set()
    for name in workloads:
        key = names.get(str(name).lower())
        if key is None:
            raise ValueError(f"unknown workload {name!r} (one of {', '.join(TABLE_ORDER)})")
        chosen.add(key)
    return [key for key in ORDER if key in chosen]


def time_case(case: Case) -> tuple[list[float], Phases]:
    """Time ``case`` as ``benchmark.pedantic`` does: per-round times (warm-up
    rounds excluded), then the per-phase times; checks the last result."""
    for _ in range(case.warmup):
        case.body(*case.setup())
    for times in case.phases.values():
        del times[:]
    body, setup = case.body, case.setup
    round_times = []
    result = None
    for _ in range(case.rounds):
        args = setup()
        start = perf_counter()
        result = body(*args)
        round_times.append(perf_counter() - start)
    case.check(result)
    return round_times, {k: list(v) for k, v in case.phases.items()}


def add_samples(samples: Samples, case: Case, rep: int, round_times: list[float],
                phase_times: Phases) -> None:
    """``samples[(workload, row, phase)][rep]``: the median ns per operation."""
    key = (case.workload, case.row)
    samples.setdefault((*key, "round"), {})[rep] = (
        statistics.median(round_times) * 1e9 / case.ops["round"])
    for phase, times in phase_times.items():
        if times:
            samples.setdefault((*key, phase), {})[rep] = (
                statistics.median(times) * 1e9 / case.ops[phase])


def run(repeat: int = 5, quick: bool = False, workloads: Iterable[str] | None = None,
        out: TextIO = sys.stdout,
        progress: Callable[[int, int, str], object] | None = None) -> Samples:
    """Time the workloads, print the table and the targets to ``out``; the samples.

    The rounds are those of ``benchmarks/`` (the same :class:`Case` objects),
    timed with ``perf_counter``: per workload, ``repeat`` repetitions, each
    running every row in :func:`rotated` order. ``workloads``: keys or group
    names (default: all, W1-W6 and the replays). ``quick``: ``QUICK_NOTE``.
    ``progress(done, total, message)`` is called before each (repetition,
    workload, row), ``done`` of the ``total`` such steps being done and
    ``message`` naming the next, and once more at the end (``done == total``).
    Returns ``samples[(workload, row, phase)] = {rep: ns per op}``, the shape
    ``benchmarks/ratios.py`` reads from a pytest-benchmark file. Raises
    :class:`RuntimeError` if the compiled core is not available, ValueError
    for an unknown workload or ``repeat < 1``.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    keys = select(workloads)
    require_core(replay=any(key in REPLAYS for key in keys))
    session = Session(quick=quick)
    samples: Samples = {}
    steps = repeat * sum(len(WORKLOADS[key].rows) for key in keys)
    done = 0
    for key in keys:
        rows = WORKLOADS[key].rows
        for rep in range(repeat):
            for row in rotated(rows, rep):
                if progress is not None:
                    progress(done, steps, f"rep {rep + 1}/{repeat} {WORKLOADS[key].group} {row}")
                case = session.case(key, row)
                round_times, phase_times = time_case(case)
                add_samples(samples, case, rep, round_times, phase_times)
                done += 1
    if progress is not None:
        progress(done, steps, "done")
    header = (f"pasid bench: {repeat} repetition(s){' (quick)' if quick else ''}, medians; "
              f"{machine()}")
    report(samples, out=out, header=header, notes=[QUICK_NOTE] if quick else ())
    return samples


def machine() -> str:
    """Python and CPU, for the table's heading."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.python_implementation()} {platform.python_version()}, {cpu}"


# ------------------------------------------------------------ the table

def baselines(workload: str) -> list[tuple[str, str]]:
    """(column title, row giving the baseline) for a group. A title starting with
    ``x`` is the baseline's time over the row's (a speed-up), with ``/`` the row's
    over the baseline's (a cost); ``{mode}`` in a baseline is the row's own mode."""
    if workload in ("W6", "owner-churn"):
        return [("x py-PA", "py-PA")]
    if workload == "W4":
        return [("x py-IDA call", "py-IDA:call"), ("x py-PA call", "py-PA:call"),
                ("x py-PA batch", "py-PA:batch")]
    if workload == "replay":
        return [("x cy python", "cy-PA:python"), ("x py-PA", "py-PA:python")]
    if workload == "replay-random":
        return [("x py-PA", "py-PA:python")]
    if workload == "owner-pairs":
        return [("/ untagged", "cy-PA:untagged")]
    if workload == "W6-owners":
        return [("/ plain", "cy-PA:plain"), ("x py-PA", "py-PA:owners")]
    if workload == "W1-cold":
        return [("/ cy-IDA", "cy-IDA:{mode}"), ("/ warm", "{cand}:warm")]
    if workload == "W6-cold":
        return [("/ warm", "cy-PA:warm")]
    return [("x py-IDA", "py-IDA"), ("x py-PA", "py-PA")]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ns(samples: Samples, key: tuple[str, str, str]) -> float:
    """Median over repetitions of ``samples[key]`` (nan if absent)."""
    return _median(list(samples.get(key, {}).values()))


def ratio(samples: Samples, num_key: tuple[str, str, str],
          den_key: tuple[str, str, str]) -> float:
    """Median over repetitions of samples[num]/samples[den], same repetition (nan if none)."""
    a, b = samples.get(num_key, {}), samples.get(den_key, {})
    return _median([a[r] / b[r] for r in a if r in b and b[r] > 0])


def memory() -> tuple[int, int]:
    """``IDA._memory()`` of a full 20-bit compiled IDA and of 64 IDs at 2**31-64."""
    from pasid._core import IDA

    full = IDA()
    alloc = full.alloc
    for _ in repeat(None, N):
        alloc()
    sparse = IDA()
    for _ in range(64):
        sparse.alloc_min(2**31 - 64)
    return full._memory(), sparse._memory()


def _si_rate(ops_per_s: float) -> str:
    return f"{ops_per_s / 1e6:.2f} M"


def table(samples: Samples, units: Mapping[str, str] | None = None) -> list[str]:
    """The table's lines: per group each row's median ns/op and its speed-ups."""
    units = {**{k: w.unit for k, w in WORKLOADS.items()}, **(units or {})}
    lines = []
    for wl in TABLE_ORDER:
        rows = sorted({k[1] for k in samples if k[0] == wl},
                      key=lambda r: ROW_ORDER.index(r) if r in ROW_ORDER else len(ROW_ORDER))
        if not rows:
            continue
        cols = baselines(wl)
        rate = wl in REPLAYS
        lines.append("")
        lines.append(f"{WORKLOADS[wl].title}   [ns per {units.get(wl, 'op')}]")
        head = f"  {'row':<16}{'class':<36}{'phase':<7}{'ns/op':>11}"
        if rate:
            head += f"{'ops/s':>11}"
        head += "".join(f"{c:>15}" for c, _ in cols)
        lines.append(head)
        for row in rows:
            name = row.split(":")[0]
            label = LABELS.get(name, name) + (f" {row.split(':')[1]}" if ":" in row else "")
            for phase in PHASES:
                key = (wl, row, phase)
                if key not in samples or (phase == "round" and not WORKLOADS[wl].show_round):
                    continue
                value = ns(samples, key)
                line = f"  {row:<16}{label:<36}{phase:<7}{value:>11.1f}"
                if rate:
                    line += f"{_si_rate(1e9 / value):>11}"
                for title, base in cols:
                    base = base.format(mode=mode_of(row), cand=name)
                    if title.startswith("/"):
                        r = ratio(samples, key, (wl, base, phase))
                        line += f"{r:>14.2f}x" if r == r else f"{'-':>15}"
                    else:
                        r = ratio(samples, (wl, base, phase), key)
                        line += f"{r:>14.1f}x" if r == r else f"{'-':>15}"
                lines.append(line)
    return lines


def targets(samples: Samples, mem: tuple[int, int] | None = None
            ) -> list[tuple[str, str, str, bool | None]]:
    """``(description, value, target, ok)`` per target; ``ok`` is None when not measured."""
    checks = []

    def measured(value: float) -> bool:
        return value == value   # not nan

    def at_least(desc: str, value: float, target: float) -> None:
        ok = value >= target if measured(value) else None
        checks.append((desc, f"{value:.1f}x", f">= {target}x", ok))

    def at_most(desc: str, value: float, target: float, unit: str) -> None:
        ok = value <= target if measured(value) else None
        checks.append((desc, f"{value:.2f}{unit}", f"<= {target}{unit}", ok))

    at_least("W1 churn: _core.IDA vs pure IDA",
             ratio(samples, ("W1", "py-IDA", "round"), ("W1", "cy-IDA", "round")), 25)
    at_least("W1 churn: _core.PasidAllocator(lowest) vs pure IDA",
             ratio(samples, ("W1", "py-IDA", "round"), ("W1", "cy-PA", "round")), 15)
    for row in ("cy-IDA", "cy-PA"):
        at_least(f"W3 nearly full (alloc+free): {LABELS[row]} vs pure IDA",
                 ratio(samples, ("W3", "py-IDA", "round"), ("W3", row, "round")), 30)
    for row in ("cy-IDA", "cy-PA"):
        w3, w2 = samples.get(("W3", row, "alloc"), {}), samples.get(("W2", row, "alloc"), {})
        flat = _median([w3[r] / w2[r] for r in w3 if r in w2])
        checks.append((f"W3 flat: {LABELS[row]} W3 alloc / W2 alloc", f"{flat:.2f}x",
                       "<= 1.3x", flat <= 1.3 if measured(flat) else None))
    at_most("W4 alloc_many per ID (_core)", ns(samples, ("W4", "cy-PA:batch", "alloc")), 2.5,
            " ns")
    at_least("W4 alloc_many vs pure IDA per-call alloc",
             ratio(samples, ("W4", "py-IDA:call", "alloc"), ("W4", "cy-PA:batch", "alloc")), 500)
    at_most("W4 free_many per ID (_core)", ns(samples, ("W4", "cy-PA:batch", "free")), 4.0, " ns")
    at_least("W6 lifecycle: _core vs pure PasidAllocator",
             ratio(samples, ("W6", "py-PA", "round"), ("W6", "cy-PA", "round")), 15)
    for mode, what in (("vm0", "the owner holds 1,000"), ("vm1", "the owner's only PASID")):
        at_most(f"owner pair {mode} ({what}) / untagged pair (_core)",
                ratio(samples, ("owner-pairs", f"cy-PA:{mode}", "round"),
                      ("owner-pairs", "cy-PA:untagged", "round")), 1.3, "x")
    at_most("W6 with owners / W6 without (_core, one group)",
            ratio(samples, ("W6-owners", "cy-PA:owners", "round"),
                  ("W6-owners", "cy-PA:plain", "round")), 1.3, "x")
    for mode, what in (("cold", "cold (caches evicted)"), ("l2", "L2-cold (tables in L3)")):
        at_most(f"W1 {what}: _core.PasidAllocator / _core.IDA",
                ratio(samples, ("W1-cold", f"cy-PA:{mode}", "rest"),
                      ("W1-cold", f"cy-IDA:{mode}", "rest")), 1.5, "x")
    for group, (strategy, target) in REPLAYS.items():
        loop = ns(samples, (group, "cy-PA:compiled", "loop"))
        rate = 1e9 / loop if measured(loop) else float("nan")
        checks.append((f"{group}: compiled loop, {strategy}, ops/s (Run.seconds)",
                       f"{_si_rate(rate)}ops/s" if measured(rate) else "nan",
                       f">= {target / 1e6:g} Mops/s", rate >= target if measured(rate) else None))
    if mem is not None:
        full, sparse = mem
        checks.append(("memory: full 20-bit _core.IDA (IDA._memory())", f"{full / 1024:.1f} KiB",
                       "<= 160 KiB", full <= 160 * 1024))
        checks.append(("memory: 64 IDs at 2**31-64.. (IDA._memory())",
                       f"{sparse / 1024:.1f} KiB", "<= 1024 KiB", sparse <= 1024 * 1024))
    return checks


def figures(samples: Samples) -> list[tuple[str, str]]:
    """``(description, value)`` of the measured figures that have no target."""
    found = []

    def add(desc: str, value: float, fmt: str) -> None:
        if value == value:
            found.append((desc, format(value, fmt)))

    add("W1 warm (the same blocks, not evicted): _core.PasidAllocator / _core.IDA",
        ratio(samples, ("W1-cold", "cy-PA:warm", "rest"), ("W1-cold", "cy-IDA:warm", "rest")),
        ".2f")
    add("W1 cold, a block's first pair: _core.PasidAllocator / _core.IDA",
        ratio(samples, ("W1-cold", "cy-PA:cold", "first"), ("W1-cold", "cy-IDA:cold", "first")),
        ".2f")
    for row in ("cy-PA", "cy-IDA"):
        add(f"W1 cold / warm (rest pairs): {LABELS[row]}",
            ratio(samples, ("W1-cold", f"{row}:cold", "rest"), ("W1-cold", f"{row}:warm", "rest")),
            ".2f")
    for phase, what in (("first", "a block's first lifecycle"), ("rest", "the others")):
        add(f"W6 cold / warm: _core.PasidAllocator, {what}",
            ratio(samples, ("W6-cold", "cy-PA:cold", phase), ("W6-cold", "cy-PA:warm", phase)),
            ".2f")
    add("owner churn: _core ns per process", ns(samples, ("owner-churn", "cy-PA", "round")),
        ".1f")
    add("owner churn: pure / _core",
        ratio(samples, ("owner-churn", "py-PA", "round"), ("owner-churn", "cy-PA", "round")),
        ".1f")
    return [(desc, value + ("" if desc.endswith("per process") else "x"))
            for desc, value in found]


def report(samples: Samples, units: Mapping[str, str] | None = None, *, out: TextIO = sys.stdout,
           header: str | None = None, mem: tuple[int, int] | None = None,
           notes: Iterable[str] = ()) -> int:
    """Print the table and the targets for ``samples`` (see :func:`run`); the failed count.

    ``units``: per workload, what an operation is (default: the definitions').
    ``mem``: ``(full, sparse)`` bytes for the memory targets; None measures
    them with :func:`memory` when the compiled core imports, else leaves them
    out. Targets whose rows were not measured print as ``n/a``.
    """
    if header:
        print(header, file=out)
    for note in notes:
        print(note, file=out)
    for line in table(samples, units):
        print(line, file=out)
    if mem is None:
        try:
            mem = memory()
        except ImportError:
            mem = None
    extra = figures(samples)
    if extra:
        print("\nFigures (no target)", file=out)
        for desc, value in extra:
            print(f"        {desc:<66} {value:>13}", file=out)
    checks = targets(samples, mem)
    print("\nTargets", file=out)
    for desc, value, target, ok in checks:
        verdict = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        shown = "-" if ok is None else value
        print(f"  {verdict}  {desc:<66} {shown:>13}  (target {target})", file=out)
    passed = sum(ok is True for *_, ok in checks)
    failed = sum(ok is False for *_, ok in checks)
    missing = sum(ok is None for *_, ok in checks)
    summary = f"\n{passed} passed, {failed} failed"
    if missing:
        summary += f", {missing} not measured"
    print(summary, file=out, flush=True)
    return failed
