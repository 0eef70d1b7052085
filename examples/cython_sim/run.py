"""Time the loops of churn.pyx against the same work through the Python methods.

    python run.py                      # builds in place first if needed
    python run.py --build-dir DIR      # use (or make) the build in DIR
    python run.py --pairs 2000 --cycles 500 --commands 2000 --repeat 3

W1: a 20-bit allocator, half of it allocated at random; ``pairs`` x
(``put(victim)``, ``alloc()``). W6: grace 1, two devices of drain 0.5;
``cycles`` x (alloc, bind x2, put, unbind x2, advance by 1). Each loop has
its own copy of the same starting state, kept for the whole run (warm
caches: a fresh 20-bit copy costs the W1 pair twice as much) and restored
between repetitions; after every repetition the two copies must be identical
(``to_bytes()``): the C-level API does the same work, counters included.
Guests (SPEC §7): a 20-bit host holding 10,000 PASIDs and a translated VM
holding 1,000; ``commands`` x the virtual command pair (ALLOC, FREE of the
PASID it gave: ``vcmd_churn``) and ``commands`` guest allocations keeping the
last 8 (``guest_churn``), each against the Python loop on a twin host (states,
stats and ``export()`` compared after each repetition); the host's own
``alloc`` + ``put`` pair from Cython on the same state is printed beside the
vcmd pair. Prints ns per pair / per lifecycle, medians of ``--repeat``
repetitions after one untimed warm-up. For the benchmark with pytest-benchmark, see
``benchmarks/test_embedding.py``.
"""

from __future__ import annotations

import argparse
import heapq
import statistics
import sys
from itertools import repeat
from pathlib import Path
from time import perf_counter

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import build  # noqa: E402  (next to this file)

BITS = 20
N = 1 << BITS


def half_state(seed: int = 1):
    """A 20-bit allocator (no reserved ID, seeded) with a random half allocated."""
    from pasid._core import PasidAllocator

    rng = np.random.default_rng(seed)
    a = PasidAllocator(BITS, reserved=(), seed=seed)
    a.alloc_many(N)
    a.free_many(np.sort(rng.permutation(N)[: N // 2]))
    return a


def victims(a, pairs: int, seed: int = 2) -> np.ndarray:
    """``pairs`` victims, each allocated when its turn comes under lowest-free allocation."""
    rng = np.random.default_rng(seed)
    states = a.states(np.arange(N))
    allocated = np.flatnonzero(states == 2).tolist()
    free = np.flatnonzero(states == 0).tolist()      # ascending: a valid heap
    out = []
    for j in rng.integers(0, len(allocated), size=pairs).tolist():
        j %= len(allocated)
        v = allocated[j]
        allocated[j] = allocated[-1]
        allocated.pop()
        allocated.append(heapq.heappushpop(free, v))
        out.append(v)
    return np.array(out, dtype=np.int64)


def python_churn(a, ids):
    free, alloc = a.free, a.alloc
    for v in ids:
        free(v)
        p = alloc()
    return p


def python_lifecycle(a, d0, d1, cycles):
    alloc, bind, free, unbind, advance = a.alloc, a.bind, a.free, a.unbind, a.advance
    for _ in repeat(None, cycles):
        p = alloc()
        bind(p, d0)
        bind(p, d1)
        free(p)
        unbind(p, d0)
        unbind(p, d1)
        advance(by=1)
    return p


def lifecycle_allocator():
    from pasid._core import PasidAllocator

    a = PasidAllocator(BITS, reserved=(), grace=1, seed=0)
    handles = (a.add_device("dev0", drain=0.5), a.add_device("dev1", drain=0.5))
    return a, handles


def guest_state():
    """A 20-bit host with 10,000 PASIDs ACTIVE and a translated VM holding 1,000
    (benchmarks/test_guest.py's state): (host, vm)."""
    from pasid._core import PasidAllocator

    host = PasidAllocator(BITS, seed=0)
    host.alloc_many(10_000)
    vm = host.add_vm("vm0", mode="translated")
    for _ in range(1000):
        vm.alloc()
    return host, vm


def python_vcmd_churn(vm, n, encoding="3.3"):
    """``churn.vcmd_churn``'s work through ``GuestSpace.vcmd``."""
    from pasid import _vcmd

    layout = _vcmd.LAYOUTS[encoding]
    vcmd, parse, alloc = vm.vcmd, _vcmd.parse_response, _vcmd.ALLOC
    success = layout.codes[_vcmd.Status.SUCCESS]
    last, refused = -1, 0
    for _ in repeat(None, n):
        in_progress, code, pasid = parse(vcmd(alloc, encoding=encoding), encoding)
        if in_progress or code != success:
            refused += 1
            continue
        vcmd(_vcmd.FREE | pasid << layout.operand_shift, encoding=encoding)
        last = pasid
    return last, refused


def python_guest_churn(vm, n, hold=8):
    """``churn.guest_churn``'s work through try_alloc, host_pasid, guest_pasid, free."""
    ring, last, refused, host_sum = [], -1, 0, 0
    for _ in repeat(None, n):
        g = vm.try_alloc()
        if g is None:
            refused += 1
            continue
        h = vm.host_pasid(g)
        if vm.guest_pasid(h) != g:
            raise RuntimeError(f"guest PASID {g} does not translate back through {h}")
        host_sum += h
        last = g
        ring.append(g)
        if len(ring) > hold:
            vm.free(ring.pop(0))
    return last, refused, host_sum


def same_guests(a, b):
    """Whether two (host, vm) pairs hold the same state (a host with VMs has no snapshot)."""
    everything = np.arange(N)
    return (np.array_equal(a[0].states(everything), b[0].states(everything))
            and a[0].stats() == b[0].stats() and a[1].stats() == b[1].stats()
            and a[1].export() == b[1].export())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=str(build.HERE))
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--cycles", type=int, default=2_000)
    parser.add_argument("--commands", type=int, default=20_000,
                        help="vcmd pairs and guest allocations per repetition")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if not build.built_path(args.build_dir).is_file():
        build.build(args.build_dir)
    churn = build.load(args.build_dir)
    from pasid import State
    from pasid._core import PasidAllocator

    start = half_state()
    ids = victims(start, args.pairs)
    everything = np.arange(N)
    start_states = start.states(everything)

    def restore(a):
        """Back to the start state: free what the round took, re-take what it freed."""
        states = a.states(everything)
        a.free_many(np.flatnonzero((start_states == State.FREE) & (states == State.ACTIVE)))
        for v in np.flatnonzero((start_states == State.ACTIVE) & (states == State.FREE)).tolist():
            a.alloc_exact(v)

    # one long-lived object per row, as in benchmarks/: warm caches, restored between rounds
    snapshot = start.to_bytes()
    by_c, by_python = PasidAllocator.from_bytes(snapshot), PasidAllocator.from_bytes(snapshot)
    w1 = {"cython": [], "python": []}
    w6 = {"cython": [], "python": []}
    pair = {"cython": [], "python": [], "host": []}
    guests = {"cython": [], "python": []}
    by_c_vm, by_python_vm = guest_state(), guest_state()
    for rep in range(args.repeat + 1):      # the first repetition warms up, untimed
        restore(by_c)
        t0 = perf_counter()
        last_c = churn.churn(by_c, ids)
        t1 = perf_counter()
        restore(by_python)
        walk = ids.tolist()           # fresh contiguous ints (PERF-NOTES)
        t2 = perf_counter()
        last_p = python_churn(by_python, walk)
        t3 = perf_counter()
        if last_c != last_p or by_c.to_bytes() != by_python.to_bytes():
            sys.exit("the C loop and the Python loop disagree (W1)")

        (a, (a0, a1)), (b, _) = lifecycle_allocator(), lifecycle_allocator()
        t4 = perf_counter()
        result = churn.lifecycle(a, a0, a1, args.cycles)
        t5 = perf_counter()
        python_lifecycle(b, "dev0", "dev1", args.cycles)
        t6 = perf_counter()
        if result[1:] != (args.cycles, 0) or a.to_bytes() != b.to_bytes():
            sys.exit("the C loop and the Python loop disagree (W6)")

        # guests: the vcmd pair, the host's pair on the same state, then the guest churn
        # (each leaves the state as it found it but for the last 8 guest PASIDs held)
        t7 = perf_counter()
        vcmd_c = churn.vcmd_churn(by_c_vm[1], args.commands)
        t8 = perf_counter()
        churn.alloc_put(by_c_vm[0], args.commands)
        t9 = perf_counter()
        vcmd_p = python_vcmd_churn(by_python_vm[1], args.commands)
        t10 = perf_counter()
        host_alloc, host_free = by_python_vm[0].alloc, by_python_vm[0].free
        for _ in repeat(None, args.commands):           # alloc_put's work, untimed
            host_free(host_alloc())
        t11 = perf_counter()
        churn_c = churn.guest_churn(by_c_vm[1], args.commands)
        t12 = perf_counter()
        churn_p = python_guest_churn(by_python_vm[1], args.commands)
        t13 = perf_counter()
        if vcmd_c != vcmd_p or churn_c != churn_p or not same_guests(by_c_vm, by_python_vm):
            sys.exit("the C loop and the Python loop disagree (guests)")
        for held in (by_c_vm, by_python_vm):        # back to the start: the 8 kept freed
            for g in sorted(held[1])[1000:]:
                held[1].free(g)
        if rep:
            pair["cython"].append((t8 - t7) / args.commands)
            pair["host"].append((t9 - t8) / args.commands)
            pair["python"].append((t10 - t9) / args.commands)
            guests["cython"].append((t12 - t11) / args.commands)
            guests["python"].append((t13 - t12) / args.commands)
            w1["cython"].append((t1 - t0) / args.pairs)
            w1["python"].append((t3 - t2) / args.pairs)
            w6["cython"].append((t5 - t4) / args.cycles)
            w6["python"].append((t6 - t5) / args.cycles)
    for title, samples, unit in (("W1 churn", w1, "pair"), ("W6 lifecycle", w6, "lifecycle")):
        cy, py = (statistics.median(samples[k]) * 1e9 for k in ("cython", "python"))
        print(f"{title:<13} cython {cy:8.1f} ns/{unit}   python loop {py:8.1f} ns/{unit}   "
              f"{py / cy:5.2f}x")
    for title, samples, unit in (("vcmd pair", pair, "pair"), ("guest churn", guests, "alloc")):
        cy, py = (statistics.median(samples[k]) * 1e9 for k in ("cython", "python"))
        print(f"{title:<13} cython {cy:8.1f} ns/{unit}   python loop {py:8.1f} ns/{unit}   "
              f"{py / cy:5.2f}x")
    host = statistics.median(pair["host"]) * 1e9
    cy = statistics.median(pair["cython"]) * 1e9
    print(f"{'host pair':<13} cython {host:8.1f} ns/pair   (alloc + put on the same host: "
          f"the vcmd pair costs {cy / host:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
