"""What :mod:`pasid.bench` times: the candidates, the seeded plan and the stages
that hold each candidate's states, the cache evictions of the cold rows, and the
timed round bodies.

The rules these follow (identical work from an identical state, loops without
int objects, every result checked against the plan) and the workloads built from
them are :mod:`pasid.bench`'s; this module is where the pieces live, imported
(and re-exported) by it. ``pasid._core`` is imported only when a candidate's class
is first used (:attr:`Candidate.cls`).
"""

from __future__ import annotations

import heapq
import importlib
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from pasid.sim.replay import Run
    from pasid.sim.trace import Trace

# An object under test: an IDA or a PasidAllocator of either backend, its class
# chosen by name at run time (Candidate.cls); the harness calls what its kind has.
Subject = Any
# Times a body records per phase ("alloc", "free", "loop"), seconds.
Phases = dict[str, list[float]]

BITS = 20
N = 1 << BITS
SEED = 0x5A51D
NEARLY_FREE = N - round(N * 0.999)  # 1049 FREE IDs at 99.9% allocated


# ------------------------------------------------------------ candidates

class Candidate:
    """One class under test and the untimed helpers used to prepare its states."""

    def __init__(self, name: str, path: str, compiled: bool, kind: str, module: str,
                 classname: str, **kwargs: Any) -> None:
        self.name = name            # short label used in ids and tables
        self.path = path            # what it is, for the table
        self.compiled = compiled
        self.kind = kind            # "ida" or "pa"
        self.module = module        # imported on first use (pasid._core is optional)
        self.classname = classname
        self.kwargs = kwargs

    @property
    def cls(self) -> Any:
        return getattr(importlib.import_module(self.module), self.classname)

    def new(self, **extra: Any) -> Subject:
        return self.cls(**self.kwargs, **extra)

    # -- untimed state preparation (never inside a timed region) ----------
    def fill(self, obj: Subject) -> None:
        """Allocate every ID of the 20-bit space (the object must be empty)."""
        if self.kind == "pa":
            obj.alloc_many(N)     # same IDs as N calls of alloc() (SPEC §3.2)
        else:
            alloc = obj.alloc
            for _ in repeat(None, N):
                alloc()

    def pin(self, obj: Subject, ids: Iterable[int]) -> None:
        """Allocate exactly these (FREE) IDs."""
        if self.kind == "pa":
            alloc_exact = obj.alloc_exact
            for v in ids:
                alloc_exact(v)
        else:
            alloc_range = obj.alloc_range
            for v in ids:
                if alloc_range(v, v) != v:  # pragma: no cover - alloc_range raises instead
                    raise AssertionError(v)

    def release(self, obj: Subject, ids: Sequence[int]) -> None:
        """Free exactly these (allocated) IDs."""
        if self.kind == "pa":
            if ids:
                obj.free_many(np.asarray(ids, dtype=np.int64))
        else:
            free = obj.free
            for v in ids:
                free(v)


CANDIDATES = {
    c.name: c
    for c in (
        Candidate("cy-IDA", "pasid._core.IDA", True, "ida", "pasid._core", "IDA"),
        Candidate("py-IDA", "pasid.pure.IDA", False, "ida", "pasid.pure", "IDA"),
        Candidate("cy-PA", "pasid._core.PasidAllocator(bits=20, reserved=())", True, "pa",
                  "pasid._core", "PasidAllocator", bits=BITS, reserved=()),
        Candidate("py-PA", "pasid.pure.PasidAllocator(bits=20, reserved=())", False, "pa",
                  "pasid.pure", "PasidAllocator", bits=BITS, reserved=()),
    )
}

LABELS = {
    "cy-IDA": "pasid._core.IDA", "py-IDA": "pasid.pure.IDA",
    "cy-PA": "pasid._core.PasidAllocator", "py-PA": "pasid.pure.PasidAllocator",
}


def candidate_of(row: str) -> Candidate:
    """The :class:`Candidate` of a row (``"cy-PA:batch"`` -> cy-PA)."""
    return CANDIDATES[row.split(":")[0]]


def mode_of(row: str) -> str:
    """The mode of a row (``"cy-PA:batch"`` -> ``"batch"``; a bare candidate: ``"call"``)."""
    return row.split(":")[1] if ":" in row else "call"


# ---------------------------------------------------------------- the plan

class Plan:
    """Seeded FREE sets, by state name, and the W1 victim sequences (untimed, cached).

    ``half``: a random half of the space is FREE (SPEC: "half the space
    allocated at random": allocate all 2**20, free a random half).
    ``nearly``: 1049 random IDs FREE (99.9% allocated); chosen as a subset of
    the ``half`` FREE set so a stage moves between the two cheaply.
    ``full``: nothing FREE. W1 adds the state its rounds end in.

    What the benchmarks need to do identical, checked work without keeping
    books in the timed loops; not a model of the allocator (that is
    tests/model.py): the one rule it relies on is that ``alloc()`` takes the
    lowest FREE ID.
    """

    def __init__(self) -> None:
        rng = np.random.default_rng(SEED)
        perm = rng.permutation(N)
        self.half_free = np.sort(perm[: N // 2])
        self.nearly_free = np.sort(perm[:NEARLY_FREE])
        self.states = {
            "full": frozenset(),
            "half": frozenset(self.half_free.tolist()),
            "nearly": frozenset(self.nearly_free.tolist()),
        }
        self._transitions: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self._churn: dict[tuple[int, int], tuple[npt.NDArray[np.int64], int | None, str]] = {}

    def transition(self, src: str, dst: str) -> tuple[list[int], list[int]]:
        """(IDs to pin, IDs to free) to go from FREE set ``src`` to ``dst``; cached."""
        key = (src, dst)
        if key not in self._transitions:
            cur, want = self.states[src], self.states[dst]
            self._transitions[key] = (sorted(cur - want), sorted(want - cur))
        return self._transitions[key]

    def churn(self, pairs: int, seed: int = SEED + 1
              ) -> tuple[npt.NDArray[np.int64], int | None, str]:
        """Victims for W1 on the ``half`` state, and what the round leaves.

        Each timed pair is ``free(v); alloc()``. ``v`` is drawn uniformly from
        the IDs allocated at that moment (a list; the FREE IDs are a heap), and
        the plan's ``alloc`` takes the lowest FREE ID, exactly what both IDA and
        the "lowest" PasidAllocator do. So every ``free`` in the round hits an
        allocated ID without the timed loop keeping any book (no append, no
        set). The FREE set after the round is known too (registered as the
        state ``w1-end-<pairs>``); the next round's setup restores the
        ``half`` state (free what the round allocated, pin what it freed), so
        every round of every candidate does identical work from the identical
        state, and a backend that allocated anything else would fail that
        restore. Returns ``(victims ndarray, last ID alloc returns, end state name)``.
        """
        key = (pairs, seed)
        if key not in self._churn:
            rng = np.random.default_rng(seed)
            allocated = np.setdiff1d(np.arange(N), self.half_free).tolist()
            heap = self.half_free.tolist()  # sorted, hence a valid heap
            picks = rng.integers(0, len(allocated), size=pairs).tolist()
            victims = []
            last = None
            for j in picks:
                v = allocated[j]
                allocated[j] = allocated[-1]
                allocated.pop()
                last = heapq.heappushpop(heap, v)  # free v, then the lowest FREE is taken
                allocated.append(last)
                victims.append(v)
            end = f"w1-end-{pairs}-{seed}"
            self.states[end] = frozenset(heap)
            self._churn[key] = (np.array(victims, dtype=np.int64), last, end)
        return self._churn[key]


_PLAN: Plan | None = None


def plan() -> Plan:
    """The process's :class:`Plan` (built on first use, about a second)."""
    global _PLAN
    if _PLAN is None:
        _PLAN = Plan()
    return _PLAN


class Stage:
    """One long-lived object per candidate, in a named, exactly known state."""

    def __init__(self, cand: Candidate) -> None:
        self.cand = cand
        self.obj = cand.new()
        cand.fill(self.obj)
        self.state: str | None = "full"

    def ensure(self, name: str) -> Subject:
        """Move to state ``name`` (pin / free exactly the IDs that differ); the object."""
        if self.state == name:
            return self.obj
        assert self.state is not None   # Session.stage replaces a stage whose move failed
        to_pin, to_free = plan().transition(self.state, name)
        self.state = None           # unknown until both steps succeed
        self.cand.pin(self.obj, to_pin)
        self.cand.release(self.obj, to_free)
        self.state = name
        return self.obj


# ------------------------------------------------------------ cold caches

def cache_sizes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> dict[int, int]:
    """CPU 0's data or unified cache size per level, in bytes (sysfs; {} if unreadable)."""
    sizes: dict[int, int] = {}
    try:
        names = os.listdir(root)
    except OSError:
        names = []
    for name in names:
        if not name.startswith("index"):
            continue
        try:
            with open(os.path.join(root, name, "level")) as f:
                level = int(f.read())
            with open(os.path.join(root, name, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(root, name, "size")) as f:
                text = f.read().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text[:-1] if scale != 1 else text
        if kind != "Instruction" and digits.isdigit():
            sizes[level] = max(sizes.get(level, 0), int(digits) * scale)
    return sizes


def llc_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """The size of CPU 0's highest-level data or unified cache (sysfs), else 32 MiB."""
    sizes = cache_sizes(root)
    return sizes[max(sizes)] if sizes else 32 << 20


def l2_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """The size of CPU 0's level-2 cache (sysfs), else 1 MiB."""
    return cache_sizes(root).get(2, 1 << 20)


class Evictor:
    """``evict()``: read one byte of every 64-byte line of a buffer twice the
    last-level cache (:func:`llc_bytes`), pushing what was cached out to
    memory, as a simulator's own data does between two allocator calls.
    About 2-3 ms for 64 MiB here; never inside a timed region.

    It evicts everything, code and the interpreter's objects too (the L2
    here holds what L1 holds), so a block's first calls also bring back the
    caller's frame and bytecode, the bound methods and their arguments: the
    same for every candidate, once a block. Measured here: seven calls of a
    pure-Python stand-in object, the W6 lifecycle's, cost ~4-5 us on their
    first round after an eviction (0.3 us warm)."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size if size is not None else 2 * llc_bytes()
        self._buffer = np.ones(self.size, dtype=np.uint8)    # written: every page mapped
        self._lines = self._buffer[::64]

    def __call__(self) -> int:
        return int(self._lines.max())


def no_eviction() -> int:
    """The warm rows' stand-in for :class:`Evictor` (the same call, nothing evicted)."""
    return 0


# ------------------------------------------------------------ timed bodies

def alloc_free_round(alloc: Callable[[], int], free: Callable[[int], None], n: int,
                     ids: Iterable[int], phases: Phases) -> int:
    """n x alloc(), then free every ID of ``ids``; each phase timed."""
    t0 = perf_counter()
    for _ in repeat(None, n):
        p = alloc()
    t1 = perf_counter()
    for v in ids:
        free(v)
    t2 = perf_counter()
    phases["alloc"].append(t1 - t0)
    phases["free"].append(t2 - t1)
    return p


def churn_round(free: Callable[[int], None], alloc: Callable[[], int],
                victims: Iterable[int]) -> int:
    """W1: free(v) + alloc() pairs; ``victims`` are valid by construction
    (:meth:`Plan.churn`), so the loop keeps no book."""
    for v in victims:
        free(v)
        p = alloc()
    return p


def range_round_ida(alloc_range: Callable[[int, int], int], free: Callable[[int], None],
                    lo: int, hi: int, n: int, ids: Iterable[int], phases: Phases) -> int:
    """W5 on an IDA: n x alloc_range(lo, hi), then free ``ids``; each phase timed."""
    t0 = perf_counter()
    for _ in repeat(None, n):
        p = alloc_range(lo, hi)
    t1 = perf_counter()
    for v in ids:
        free(v)
    t2 = perf_counter()
    phases["alloc"].append(t1 - t0)
    phases["free"].append(t2 - t1)
    return p


def range_round_pa(alloc: Callable[..., int], free: Callable[[int], None], lo: int, hi: int,
                   n: int, ids: Iterable[int], phases: Phases) -> int:
    """W5 on a PasidAllocator: n x alloc(min=lo, max=hi), then free ``ids``; each phase timed."""
    t0 = perf_counter()
    for _ in repeat(None, n):
        p = alloc(min=lo, max=hi)
    t1 = perf_counter()
    for v in ids:
        free(v)
    t2 = perf_counter()
    phases["alloc"].append(t1 - t0)
    phases["free"].append(t2 - t1)
    return p


def batch_round(alloc_many: Callable[[int], npt.NDArray[np.uint32]],
                free_many: Callable[[npt.NDArray[np.uint32]], None], n: int,
                phases: Phases) -> npt.NDArray[np.uint32]:
    """W4 batch: alloc_many(n), then free_many of the result; each phase timed."""
    t0 = perf_counter()
    ids = alloc_many(n)
    t1 = perf_counter()
    free_many(ids)
    t2 = perf_counter()
    phases["alloc"].append(t1 - t0)
    phases["free"].append(t2 - t1)
    return ids


def lifecycle_round(alloc: Callable[[], int], bind: Callable[[int, str], None],
                    free: Callable[[int], None], unbind: Callable[[int, str], None],
                    advance: Callable[..., int], d0: str, d1: str, n: int) -> int:
    """W6: one lifecycle = alloc, bind x2, free (-> DRAINING), unbind x2
    (-> QUARANTINED until now + max(grace 1, drain 0.5)), advance(by=1) (-> FREE)."""
    for _ in repeat(None, n):
        p = alloc()
        bind(p, d0)
        bind(p, d1)
        free(p)
        unbind(p, d0)
        unbind(p, d1)
        r = advance(by=1)
    return r


def owner_pair_round(alloc: Callable[..., int], free: Callable[[int], None], owner: Any,
                     n: int) -> int:
    """owner-pairs, tagged: n x ``free(alloc(owner=owner))``."""
    for _ in repeat(None, n):
        p = alloc(owner=owner)
        free(p)
    return p


def untagged_pair_round(alloc: Callable[[], int], free: Callable[[int], None], owner: Any,
                        n: int) -> int:
    """owner-pairs, untagged: n x ``free(alloc())`` (``owner`` unused: the same arguments)."""
    for _ in repeat(None, n):
        p = alloc()
        free(p)
    return p


def owner_churn_round(alloc: Callable[..., int], bind: Callable[[int, str], None],
                      exit_owner: Callable[[Any], list[int]],
                      unbind: Callable[[int, str], None], dev: str, pids: Iterable[int]) -> int:
    """owner-churn: per process ``alloc(owner=pid)``, bind, ``exit_owner(pid)``, unbind."""
    for pid in pids:
        p = alloc(owner=pid)
        bind(p, dev)
        exit_owner(pid)
        unbind(p, dev)
    return p


def owner_lifecycle_round(alloc: Callable[..., int], bind: Callable[[int, str], None],
                          free: Callable[[int], None], unbind: Callable[[int, str], None],
                          advance: Callable[..., int], d0: str, d1: str,
                          owners: Iterable[int]) -> int:
    """W6-owners: :func:`lifecycle_round` with ``alloc(owner=o)``, one owner a lifecycle."""
    for o in owners:
        p = alloc(owner=o)
        bind(p, d0)
        bind(p, d1)
        free(p)
        unbind(p, d0)
        unbind(p, d1)
        r = advance(by=1)
    return r


def block_total(times: Sequence[float]) -> float:
    """A cold round's timed total from its (equal) blocks' times: the median block
    times their number. A plain sum would add the time slice of any block that
    another process preempted: a round is mostly evictions, so under load most
    rounds hold such a block, and the median over rounds does not remove it."""
    return statistics.median(times) * len(times)


def cold_churn_round(free: Callable[[int], None], alloc: Callable[[], int],
                     blocks: Iterable[tuple[int, list[int]]], evict: Callable[[], object],
                     phases: Phases) -> int:
    """W1-cold: W1's pairs in blocks ``(first victim, the other victims)``, ``evict()``
    (untimed) before each; each block's first pair and the rest timed apart,
    ``phases["first"]`` and ``phases["rest"]``: their :func:`block_total`. Each part
    is :func:`churn_round` (one call a part: W1's own loop)."""
    firsts, rests = [], []
    for first, rest in blocks:
        evict()
        t0 = perf_counter()
        churn_round(free, alloc, (first,))
        t1 = perf_counter()
        p = churn_round(free, alloc, rest)
        t2 = perf_counter()
        firsts.append(t1 - t0)
        rests.append(t2 - t1)
    phases["first"].append(block_total(firsts))
    phases["rest"].append(block_total(rests))
    return p


def cold_lifecycle_round(alloc: Callable[[], int], bind: Callable[[int, str], None],
                         free: Callable[[int], None], unbind: Callable[[int, str], None],
                         advance: Callable[..., int], d0: str, d1: str, blocks: int,
                         block: int, evict: Callable[[], object], phases: Phases) -> int:
    """W6-cold: ``blocks`` blocks of ``block`` W6 lifecycles, ``evict()`` (untimed) before
    each; each block's first lifecycle and the rest timed apart, ``phases["first"]`` and
    ``phases["rest"]``: their :func:`block_total`. Each part is :func:`lifecycle_round`
    (one call a part: W6's own loop; ``block`` >= 2)."""
    firsts, rests = [], []
    for _ in repeat(None, blocks):
        evict()
        t0 = perf_counter()
        lifecycle_round(alloc, bind, free, unbind, advance, d0, d1, 1)
        t1 = perf_counter()
        r = lifecycle_round(alloc, bind, free, unbind, advance, d0, d1, block - 1)
        t2 = perf_counter()
        firsts.append(t1 - t0)
        rests.append(t2 - t1)
    phases["first"].append(block_total(firsts))
    phases["rest"].append(block_total(rests))
    return r


def replay_round(replay: Callable[..., Run], trace: Trace, strategy: str, engine: str,
                 allocator: str, phases: Phases) -> Run:
    """Replay: one :func:`pasid.sim.replay.replay` call (fresh allocator, devices
    declared, the whole trace); ``phases["loop"]`` gets the loop's own wall
    time (``Run.seconds``: construction and result assembly excluded)."""
    result = replay(trace, strategy, engine=engine, allocator=allocator)
    phases["loop"].append(result.seconds)
    return result
