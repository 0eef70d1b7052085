"""SPEC §6 standard workloads on a 20-bit space, for pytest-benchmark.

One ``benchmark.group`` per workload; every candidate of a group does the same
work per round from the same state (pure rows run fewer rounds, never less
work per round). Timed loops are plain ``for`` loops over bound methods:

* loops that only allocate use ``itertools.repeat(None, n)`` (no int objects);
* loops that walk IDs walk a list rebuilt right before the round with
  ``ndarray.tolist()`` (contiguous fresh ints; scattered ints cost 130-150 ns
  an iteration, PERF-NOTES);
* rounds with two phases (alloc, then free) time each phase with
  ``perf_counter`` inside the round and keep the samples in
  ``extra_info["phase_times"]``; pytest-benchmark's own statistics cover the
  whole round. ``extra_info["ops"]`` gives the operations per round and per
  phase so ``ratios.py`` can divide.

Each round's result is checked against the model (the lowest FREE ID is
deterministic), so a candidate that does different work fails, not wins.
"""

from itertools import repeat
from time import perf_counter

import numpy as np
import pytest

from conftest import (
    CANDIDATES,
    HALF_FREE,
    N,
    NEARLY_FREE_IDS,
    STATES,
    churn_model,
    stage,
)

ALL4 = ("cy-IDA", "py-IDA", "cy-PA", "py-PA")   # compiled and pure alternate

W1_PAIRS = 20_000
W3_OPS = 1_000
W4_IDS = 100_000
W5_OPS = 10_000
W6_CYCLES = 2_000

# rounds per repetition: (compiled, pure)
ROUNDS = {
    "W1": (15, 3),
    "W2": (3, 1),
    "W3": (50, 15),
    "W4-batch": (30, 2),
    "W4-call": (10, 2),
    "W5": (20, 3),
    "W6": (20, 3),
}


def _rounds(key, cand):
    """(rounds, warmup_rounds). One untimed warm-up round for compiled rows
    only: a pure round is thousands of operations and warms the interpreter
    itself, and a warm-up of the pure W2 round would cost ~7 s."""
    compiled, pure = ROUNDS[key]
    return (compiled, 1) if cand.compiled else (pure, 0)


def _record(benchmark, workload, rep, variant, cand, ops, unit, phases=None, warmup=0,
            disabled=False):
    info = benchmark.extra_info
    info["workload"] = workload
    info["rep"] = rep
    info["row"] = variant
    info["candidate"] = cand.path
    info["kind"] = cand.kind
    info["compiled"] = cand.compiled
    info["mode"] = variant.split(":")[1] if ":" in variant else "call"
    info["unit"] = unit
    info["ops"] = ops
    if phases is not None:
        drop = 0 if disabled else warmup   # warm-up rounds ran the target too
        info["phase_times"] = {k: v[drop:] for k, v in phases.items()}


# ------------------------------------------------------------ timed bodies

def alloc_free_round(alloc, free, n, ids, phases):
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


def churn_round(free, alloc, victims):
    """W1: free(v) + alloc() pairs; ``victims`` are valid by construction
    (conftest.churn_model), so the loop keeps no book."""
    for v in victims:
        free(v)
        p = alloc()
    return p


def range_round_ida(alloc_range, free, lo, hi, n, ids, phases):
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


def range_round_pa(alloc, free, lo, hi, n, ids, phases):
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


def batch_round(alloc_many, free_many, n, phases):
    t0 = perf_counter()
    ids = alloc_many(n)
    t1 = perf_counter()
    free_many(ids)
    t2 = perf_counter()
    phases["alloc"].append(t1 - t0)
    phases["free"].append(t2 - t1)
    return ids


def lifecycle_round(alloc, bind, free, unbind, advance, d0, d1, n):
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


# ------------------------------------------------------------ workloads
# File order: W3 first, so each stage goes full -> 99.9% -> half (only frees,
# the cheap direction for the pure backend), then W1 and W5 on the half state.

@pytest.mark.variants(*ALL4)
def test_w3_nearly_full(benchmark, rep, variant, disabled):
    """99.9% allocated (1049 FREE): alloc the lowest 1000 one at a time, free them."""
    benchmark.group = "W3-nearly-full"
    cand = CANDIDATES[variant]
    obj = stage(cand).ensure("nearly")
    ids = NEARLY_FREE_IDS[:W3_OPS]
    phases = {"alloc": [], "free": []}
    rounds, warmup = _rounds("W3", cand)

    def setup():
        return (obj.alloc, obj.free, W3_OPS, ids.tolist(), phases), {}

    last = benchmark.pedantic(alloc_free_round, setup=setup, rounds=rounds,
                              warmup_rounds=warmup)
    assert last == ids[-1]
    _record(benchmark, "W3", rep, variant, cand,
            {"round": 2 * W3_OPS, "alloc": W3_OPS, "free": W3_OPS}, "op", phases, warmup,
            disabled)


_W1 = {}


def _w1_model():
    if not _W1:
        victims, last, end_free = churn_model(W1_PAIRS)
        STATES["w1-end"] = end_free
        _W1.update(victims=victims, last=last)
    return _W1


@pytest.mark.variants(*ALL4)
def test_w1_churn(benchmark, rep, variant):
    """Half the space allocated at random; timed: 20,000 free(random allocated) + alloc() pairs."""
    benchmark.group = "W1-churn"
    cand = CANDIDATES[variant]
    model = _w1_model()
    st = stage(cand)
    rounds, warmup = _rounds("W1", cand)

    def setup():
        # Restore the seeded half state (untimed), then record where the round
        # below leaves the object: the model's post-round FREE set.
        obj = st.ensure("half")
        st.state = "w1-end"
        return (obj.free, obj.alloc, model["victims"].tolist()), {}

    last = benchmark.pedantic(churn_round, setup=setup, rounds=rounds, warmup_rounds=warmup)
    assert last == model["last"]
    st.ensure("half")   # raises if the backend strayed from the model
    _record(benchmark, "W1", rep, variant, cand, {"round": W1_PAIRS}, "pair")


@pytest.mark.variants(*ALL4)
def test_w5_range(benchmark, rep, variant, disabled):
    """Half state; 10,000 x alloc in [2**19, 2**20 - 1] (alloc_range / alloc(min=, max=)), then free them."""
    benchmark.group = "W5-range"
    cand = CANDIDATES[variant]
    obj = stage(cand).ensure("half")
    lo, hi = N // 2, N - 1
    ids = HALF_FREE[HALF_FREE >= lo][:W5_OPS]
    phases = {"alloc": [], "free": []}
    rounds, warmup = _rounds("W5", cand)
    if cand.kind == "ida":
        body, alloc = range_round_ida, obj.alloc_range
    else:
        body, alloc = range_round_pa, obj.alloc

    def setup():
        return (alloc, obj.free, lo, hi, W5_OPS, ids.tolist(), phases), {}

    last = benchmark.pedantic(body, setup=setup, rounds=rounds, warmup_rounds=warmup)
    assert last == ids[-1]
    _record(benchmark, "W5", rep, variant, cand,
            {"round": 2 * W5_OPS, "alloc": W5_OPS, "free": W5_OPS}, "op", phases, warmup,
            disabled)


@pytest.mark.variants(*ALL4)
def test_w2_fill(benchmark, rep, variant, disabled):
    """Empty to full one alloc() at a time (2**20), then free all (ascending); fresh object per round."""
    benchmark.group = "W2-fill"
    cand = CANDIDATES[variant]
    phases = {"alloc": [], "free": []}
    rounds, warmup = _rounds("W2", cand)
    all_ids = np.arange(N, dtype=np.int64)

    def setup():
        obj = cand.new()
        return (obj.alloc, obj.free, N, all_ids.tolist(), phases), {}

    last = benchmark.pedantic(alloc_free_round, setup=setup, rounds=rounds,
                              warmup_rounds=warmup)
    assert last == N - 1
    _record(benchmark, "W2", rep, variant, cand,
            {"round": 2 * N, "alloc": N, "free": N}, "op", phases, warmup, disabled)


@pytest.mark.variants("cy-PA:batch", "py-IDA:call", "cy-IDA:call", "py-PA:batch",
                      "cy-PA:call", "py-PA:call")
def test_w4_batch(benchmark, rep, variant, disabled):
    """alloc_many(100_000) then free_many (PasidAllocator), against 100,000
    per-call alloc() then free() of every candidate; from empty each round."""
    benchmark.group = "W4-batch"
    name, mode = variant.split(":")
    cand = CANDIDATES[name]
    obj = cand.new()
    phases = {"alloc": [], "free": []}
    rounds, warmup = _rounds("W4-" + mode, cand)
    expect = np.arange(W4_IDS, dtype=np.int64)
    if mode == "batch":
        def setup():
            return (obj.alloc_many, obj.free_many, W4_IDS, phases), {}

        ids = benchmark.pedantic(batch_round, setup=setup, rounds=rounds, warmup_rounds=warmup)
        assert ids.dtype == np.uint32 and np.array_equal(ids, expect)
    else:
        def setup():
            return (obj.alloc, obj.free, W4_IDS, expect.tolist(), phases), {}

        last = benchmark.pedantic(alloc_free_round, setup=setup, rounds=rounds,
                                  warmup_rounds=warmup)
        assert last == W4_IDS - 1
    assert len(obj) == 0
    _record(benchmark, "W4", rep, variant, cand,
            {"round": 2 * W4_IDS, "alloc": W4_IDS, "free": W4_IDS}, "id", phases, warmup,
            disabled)


@pytest.mark.variants("cy-PA", "py-PA")
def test_w6_lifecycle(benchmark, rep, variant):
    """grace=1, two devices with drain=0.5; 2,000 lifecycles a round (7 calls each)."""
    benchmark.group = "W6-lifecycle"
    cand = CANDIDATES[variant]
    obj = cand.new(grace=1)
    d0, d1 = "dev0", "dev1"
    obj.add_device(d0, drain=0.5)
    obj.add_device(d1, drain=0.5)
    rounds, warmup = _rounds("W6", cand)

    def setup():
        return (obj.alloc, obj.bind, obj.free, obj.unbind, obj.advance, d0, d1, W6_CYCLES), {}

    last = benchmark.pedantic(lifecycle_round, setup=setup, rounds=rounds, warmup_rounds=warmup)
    assert last == 1                       # the last advance reclaimed its PASID
    stats = obj.stats()
    assert stats["free"] == N and stats["active"] == 0
    assert stats["reclaimed"] == stats["allocations"] == stats["releases"]
    _record(benchmark, "W6", rep, variant, cand, {"round": W6_CYCLES}, "lifecycle")
