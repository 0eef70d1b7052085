"""Batch calls in two threads: how far the compiled core scales when it lets the GIL go.

One group, ``threads-batch``, two rows doing the same work: two allocators
(``PasidAllocator(bits=20, reserved=())``, fresh each round and warmed by one
untimed cycle), each taking
``CYCLES`` x (``alloc_many(1,000,000)``, then ``free_many`` of them).

============  ================================================================
1-thread      one thread works the two allocators in turn
2-threads     a thread per allocator, started together (thread start included)
============  ================================================================

The core runs a batch's C loops without the GIL (pasid/_allocator.pxi,
"Threads"), so the two threads overlap; what is left under the GIL (argument
checks, the output array, the private copy of the IDs freed) does not. The
table printed at the end gives the median round time of each row and the
scaling, 1-thread / 2-threads within each repetition (2.0 would be perfect on
this 2-core machine). Skipped under ``PASID_NO_EXTENSION=1``.
"""

import statistics
import threading
from time import perf_counter

import pytest

ROWS = ("1-thread", "2-threads")
GROUP = "threads-batch"
IDS = 1_000_000
CYCLES = 10


def work(allocator, cycles):
    for _ in range(cycles):
        allocator.free_many(allocator.alloc_many(IDS))


def one_thread(allocators, cycles, times):
    t0 = perf_counter()
    for allocator in allocators:
        work(allocator, cycles)
    times.append(perf_counter() - t0)


def two_threads(allocators, cycles, times):
    start = threading.Barrier(len(allocators) + 1)

    def run(allocator):
        start.wait()
        work(allocator, cycles)

    threads = [threading.Thread(target=run, args=(allocator,)) for allocator in allocators]
    for thread in threads:
        thread.start()
    t0 = perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    times.append(perf_counter() - t0)


@pytest.fixture(scope="module")
def results(write_table):
    """``results[row][rep]`` = median seconds per round; a table at the end."""
    samples = {}
    yield samples
    one, two = samples.get("1-thread", {}), samples.get("2-threads", {})
    scaling = [one[r] / two[r] for r in one if r in two and two[r] > 0]
    if not scaling:
        return
    write_table([f"Batch calls on two allocators ({CYCLES} x alloc_many/free_many of "
             f"{IDS:,} IDs each), median ms per round:",
             f"  1 thread {statistics.median(one.values()) * 1e3:7.2f}   "
             f"2 threads {statistics.median(two.values()) * 1e3:7.2f}   "
             f"scaling {statistics.median(scaling):4.2f}x"])


@pytest.mark.variants(*ROWS)
def test_threads_batch(benchmark, session, rep, variant, results, disabled):
    """Two allocators' batch churn, in one thread or in two."""
    import pasid._core as core

    benchmark.group = GROUP
    cycles = 1 if disabled else CYCLES
    times, made = [], []
    run = one_thread if variant == "1-thread" else two_threads

    def setup():
        allocators = [core.PasidAllocator(bits=20, reserved=()) for _ in range(2)]
        for allocator in allocators:
            work(allocator, 1)              # warm: the tables' pages exist, as in use
        made.extend(allocators)
        return (allocators, cycles, times), {}

    benchmark.pedantic(run, setup=setup, rounds=1 if disabled else 10,
                       warmup_rounds=0 if disabled else 1)
    benchmark.extra_info.update(workload=GROUP, rep=rep, row=variant, unit="round",
                                ops={"round": 2 * 2 * cycles * IDS})
    if not disabled:
        results.setdefault(variant, {})[rep] = statistics.median(times[1:])   # no warm-up
    # the same work in both rows: every allocator took and gave back (1 + cycles) x IDS
    for allocator in made:
        stats = allocator.stats()
        assert (stats["allocations"], stats["releases"], len(allocator)) == (
            (1 + cycles) * IDS, (1 + cycles) * IDS, 0)
