"""Candidates, parametrisation and prepared states for the SPEC §6 workloads.

Candidates (all on a 20-bit space):

    cy-IDA  pasid._core.IDA
    py-IDA  pasid.pure.IDA                                    (baseline, W1-W5)
    cy-PA   pasid._core.PasidAllocator(bits=20, reserved=())  (strategy "lowest")
    py-PA   pasid.pure.PasidAllocator(bits=20, reserved=())   (baseline, W6)

Every workload test is marked ``@pytest.mark.variants(...)`` with the rows it
runs; ``pytest_generate_tests`` turns that into ``(rep, variant)`` parameters,
``REPS`` repetitions, each repetition with the list rotated by one so that the
order changes while compiled and pure rows keep alternating. ``ratios.py``
takes medians over the repetitions and computes ratios within each one.

With ``--benchmark-disable`` there is a single repetition and every benchmark
body runs once (the CI smoke run). ``PASID_BENCH_REPS`` overrides the count.

Prepared states (half the space allocated at random, 99.9% allocated) are
expensive to build with the pure backend (about 2 s to fill 2**20 IDs one at a
time), so each candidate keeps ONE object for the session in a
:class:`Stage`, moved between the named states by freeing / pinning exactly the
IDs that differ. Every workload that uses a stage leaves it in a known state
(it either returns to where it started or says where it ends).
"""

import os

import numpy as np
import pytest

import pasid._core as core
import pasid.pure as pure

BITS = 20
N = 1 << BITS
SEED = 0x5A51D
NEARLY_FREE = N - round(N * 0.999)  # 1049 FREE IDs at 99.9% allocated
DEFAULT_REPS = 5


class Candidate:
    """One class under test and the untimed helpers used to prepare its states."""

    def __init__(self, name, path, compiled, kind, cls, **kwargs):
        self.name = name          # short label used in ids and tables
        self.path = path          # what it is, for the table
        self.compiled = compiled
        self.kind = kind          # "ida" or "pa"
        self.cls = cls
        self.kwargs = kwargs

    def new(self, **extra):
        return self.cls(**self.kwargs, **extra)

    # -- untimed state preparation (never inside a timed region) ----------
    def fill(self, obj):
        """Allocate every ID of the 20-bit space (the object must be empty)."""
        if self.kind == "pa":
            obj.alloc_many(N)     # same IDs as N calls of alloc() (SPEC §3.2)
        else:
            alloc = obj.alloc
            for _ in range(N):
                alloc()

    def pin(self, obj, ids):
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

    def release(self, obj, ids):
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
        Candidate("cy-IDA", "pasid._core.IDA", True, "ida", core.IDA),
        Candidate("py-IDA", "pasid.pure.IDA", False, "ida", pure.IDA),
        Candidate("cy-PA", "pasid._core.PasidAllocator(bits=20, reserved=())", True, "pa",
                  core.PasidAllocator, bits=BITS, reserved=()),
        Candidate("py-PA", "pasid.pure.PasidAllocator(bits=20, reserved=())", False, "pa",
                  pure.PasidAllocator, bits=BITS, reserved=()),
    )
}


# ---------------------------------------------------------------- the model

def _build_model():
    """Seeded FREE sets and the W1 victim sequence, computed once (untimed).

    ``half``: a random half of the space is FREE (SPEC: "half the space
    allocated at random": allocate all 2**20, free a random half).
    ``nearly``: 1049 random IDs FREE (99.9% allocated); chosen as a subset of
    the ``half`` FREE set so a stage moves between the two cheaply.
    """
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(N)
    half_free = np.sort(perm[: N // 2])
    nearly_free = np.sort(perm[:NEARLY_FREE])
    return rng, half_free, nearly_free


_RNG, HALF_FREE, NEARLY_FREE_IDS = _build_model()
STATES = {
    "full": frozenset(),
    "half": frozenset(HALF_FREE.tolist()),
    "nearly": frozenset(NEARLY_FREE_IDS.tolist()),
}


def churn_model(pairs, seed=SEED + 1):
    """Victims for W1 on the ``half`` state, and what the round leaves.

    Each timed pair is ``free(v); alloc()``. ``v`` is drawn uniformly from the
    IDs allocated at that moment in a model of the allocator, and the model's
    ``alloc`` takes the lowest FREE ID, exactly what both IDA and the "lowest"
    PasidAllocator do. So every ``free`` in the round hits an allocated ID
    without the timed loop keeping any book (no append, no set). The FREE set
    after the round is known too; the next round's setup restores the
    ``half`` state (free what the round allocated, pin what it freed), so every
    round of every candidate does identical work from the identical state —
    and a backend that allocated anything else would fail that restore.
    Returns ``(victims ndarray, last ID alloc returns, FREE set after)``.
    """
    import heapq

    rng = np.random.default_rng(seed)
    allocated = np.setdiff1d(np.arange(N), HALF_FREE).tolist()
    heap = HALF_FREE.tolist()  # sorted, hence a valid heap
    count = len(allocated)
    picks = rng.integers(0, count, size=pairs).tolist()
    victims = []
    f = None
    for j in picks:
        v = allocated[j]
        allocated[j] = allocated[-1]
        allocated.pop()
        f = heapq.heappushpop(heap, v)  # free v, then the lowest FREE is taken
        allocated.append(f)
        victims.append(v)
    return np.array(victims, dtype=np.int64), f, frozenset(heap)


class Stage:
    """One long-lived object per candidate, in a named, exactly known state."""

    def __init__(self, cand):
        self.cand = cand
        self.obj = cand.new()
        cand.fill(self.obj)
        self.state = "full"

    def ensure(self, name):
        if self.state == name:
            return self.obj
        to_pin, to_free = _transition(self.state, name)
        self.cand.pin(self.obj, to_pin)
        self.cand.release(self.obj, to_free)
        self.state = name
        return self.obj


_STAGES = {}
_TRANSITIONS = {}


def _transition(src, dst):
    """(IDs to pin, IDs to free) to go from FREE set ``src`` to ``dst``; cached."""
    key = (src, dst)
    if key not in _TRANSITIONS:
        cur, want = STATES[src], STATES[dst]
        _TRANSITIONS[key] = (sorted(cur - want), sorted(want - cur))
    return _TRANSITIONS[key]


def stage(cand):
    """The session's prepared object for ``cand`` (built on first use)."""
    if cand.name not in _STAGES:
        _STAGES[cand.name] = Stage(cand)
    return _STAGES[cand.name]


# -------------------------------------------------------- parametrisation

def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "variants(*names): the candidate rows a workload runs, in interleaved order",
    )


def reps_for(config):
    env = os.environ.get("PASID_BENCH_REPS")
    if env:
        return max(1, int(env))
    return 1 if config.getoption("benchmark_disable", False) else DEFAULT_REPS


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("variants")
    if marker is None or "variant" not in metafunc.fixturenames:
        return
    variants = list(marker.args)
    reps = reps_for(metafunc.config)
    params, ids = [], []
    for rep in range(reps):
        k = rep % len(variants)
        for variant in variants[k:] + variants[:k]:
            params.append((rep, variant))
            ids.append(f"r{rep}-{variant}")
    metafunc.parametrize(("rep", "variant"), params, ids=ids)


@pytest.fixture
def disabled(request):
    return bool(request.config.getoption("benchmark_disable", False))
