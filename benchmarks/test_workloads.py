"""SPEC §6 standard workloads and the replay benchmark, for pytest-benchmark.

One ``benchmark.group`` per workload; the rounds (setup, timed body, operations,
check against the plan) are :class:`pasid.bench.Case` objects, the same ones
``pasid bench`` times, so both front ends measure the same thing. Here each
case goes through ``benchmark.pedantic``; pytest-benchmark's statistics cover
the whole round, and the per-phase times the body records itself go into
``extra_info["phase_times"]`` with ``extra_info["ops"]`` (operations per round
and per phase) so ``ratios.py`` can divide. See ``pasid/bench.py`` for the
rules every round follows.
"""

import pytest

from pasid import bench


def _record(benchmark, case, rep, disabled):
    info = benchmark.extra_info
    info["workload"] = case.workload
    info["rep"] = rep
    info["row"] = case.row
    info["candidate"] = case.cand.path
    info["kind"] = case.cand.kind
    info["compiled"] = case.cand.compiled
    info["mode"] = bench.mode_of(case.row)
    info["unit"] = case.unit
    info["ops"] = case.ops
    if case.phases:
        drop = 0 if disabled else case.warmup   # warm-up rounds ran the body too
        info["phase_times"] = {k: v[drop:] for k, v in case.phases.items()}


def _bench(benchmark, session, workload, rep, variant, disabled):
    case = session.case(workload, variant)
    benchmark.group = case.group
    result = benchmark.pedantic(case.body, setup=lambda: (case.setup(), {}),
                                rounds=case.rounds, warmup_rounds=case.warmup)
    case.check(result)
    _record(benchmark, case, rep, disabled)


# File order: W3 first, so each stage goes full -> 99.9% -> half (only frees,
# the cheap direction for the pure backend), then W1, W1-cold and W5 on the half
# state (pasid.bench.ORDER).

@pytest.mark.variants(*bench.ROWS["W3"])
def test_w3_nearly_full(benchmark, session, rep, variant, disabled):
    """99.9% allocated (1049 FREE): alloc the lowest 1000 one at a time, free them."""
    _bench(benchmark, session, "W3", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["W1"])
def test_w1_churn(benchmark, session, rep, variant, disabled):
    """Half the space allocated at random; timed: 20,000 free(random allocated) + alloc() pairs."""
    _bench(benchmark, session, "W1", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["W1-cold"])
def test_w1_cold(benchmark, session, rep, variant, disabled):
    """W1's pairs in blocks of 250, the caches evicted (untimed) before each block (cold
    rows) or not (warm rows); each block's first pair and the rest timed apart,
    phase_times["first"] and ["rest"] (pasid.bench.block_total)."""
    _bench(benchmark, session, "W1-cold", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["W5"])
def test_w5_range(benchmark, session, rep, variant, disabled):
    """Half state; 10,000 x alloc in [2**19, 2**20 - 1] (alloc_range / alloc(min=, max=)),
    then free them."""
    _bench(benchmark, session, "W5", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["W2"])
def test_w2_fill(benchmark, session, rep, variant, disabled):
    """Empty to full one alloc() at a time (2**20), then free all (ascending); a fresh
    object per round."""
    _bench(benchmark, session, "W2", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["W4"])
def test_w4_batch(benchmark, session, rep, variant, disabled):
    """alloc_many(100_000) then free_many (PasidAllocator), against 100,000
    per-call alloc() then free() of every candidate; from empty each round."""
    _bench(benchmark, session, "W4", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["W6"])
def test_w6_lifecycle(benchmark, session, rep, variant, disabled):
    """grace=1, two devices with drain=0.5; 2,000 lifecycles a round (7 calls each)."""
    _bench(benchmark, session, "W6", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["W6-cold"])
def test_w6_cold(benchmark, session, rep, variant, disabled):
    """W6's lifecycles in blocks of 10, the caches evicted (untimed) before each block
    (cold) or not (warm); phase_times["first"] (each block's first) and ["rest"]."""
    _bench(benchmark, session, "W6-cold", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["W6-owners"])
def test_w6_owners(benchmark, session, rep, variant, disabled):
    """W6 with alloc(owner=o), an int owner per lifecycle; W6 itself in the same group."""
    _bench(benchmark, session, "W6-owners", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["owner-pairs"])
def test_owner_pairs(benchmark, session, rep, variant, disabled):
    """free(alloc()) / free(alloc(owner="vm0")) (vm0 holds 1,000) / free(alloc(owner="vm1"))
    (its only PASID), 20,000 pairs on one shared state."""
    _bench(benchmark, session, "owner-pairs", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["owner-churn"])
def test_owner_churn(benchmark, session, rep, variant, disabled):
    """2,000 processes a round: alloc(owner=pid), bind, exit_owner(pid), unbind."""
    _bench(benchmark, session, "owner-churn", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["replay"])
def test_replay(benchmark, session, rep, variant, disabled):
    """The default workload (seed 0) replayed with strategy "lowest": the compiled
    loop and the per-call Python loop on the compiled allocator, and the pure backend."""
    _bench(benchmark, session, "replay", rep, variant, disabled)


@pytest.mark.variants(*bench.ROWS["replay-random"])
def test_replay_random(benchmark, session, rep, variant, disabled):
    """The same trace replayed with strategy "random": the compiled loop, and the pure
    backend's."""
    _bench(benchmark, session, "replay-random", rep, variant, disabled)
