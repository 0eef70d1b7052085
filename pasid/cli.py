"""The ``pasid`` command line.

``pasid bench``: the compiled core against ``pasid.pure.IDA`` on the standard
churn, nearly-full and batch workloads; ns per operation and ratios from one
run, backends interleaved in rotated order, medians of the repetitions.
(``simulate`` and ``replay`` are not written yet.)
"""

import argparse
import random
import statistics
import sys
import time

import numpy as np

import pasid._core as core
import pasid.pure as pure

BITS = 20


def _half_full(make, size, seed):
    """An allocator with all of ``size`` IDs taken, then a random half freed."""
    allocator = make()
    for _ in range(size):
        allocator.alloc()
    order = list(range(size))
    random.Random(seed).shuffle(order)
    for p in order[: size // 2]:
        allocator.free(p)
    return allocator, order[size // 2:]


def churn(make, size, pairs, seed):
    """W1: ns per free(random allocated) + alloc() pair on a half-full space."""
    allocator, allocated = _half_full(make, size, seed)
    victims = np.array(allocated[:pairs]).tolist()
    free, alloc = allocator.free, allocator.alloc
    start = time.perf_counter()
    for victim in victims:
        free(victim)
        alloc()
    return (time.perf_counter() - start) / len(victims) * 1e9


def nearly_full(make, size, ops, seed):
    """W3: ns per alloc at 99.9% full (then the same IDs freed again)."""
    allocator = make()
    for _ in range(size):
        allocator.alloc()
    holes = np.array(sorted(random.Random(seed).sample(range(size), size // 1000))).tolist()
    for p in holes:
        allocator.free(p)
    alloc, free = allocator.alloc, allocator.free
    elapsed = 0.0
    done = 0
    while done < ops:
        start = time.perf_counter()
        got = [alloc() for _ in holes]
        elapsed += time.perf_counter() - start
        for p in got:
            free(p)
        done += len(holes)
    return elapsed / done * 1e9


def batch(n):
    """W4: ns per ID of alloc_many(n), then of free_many."""
    allocator = core.PasidAllocator(bits=BITS, reserved=())
    start = time.perf_counter()
    ids = allocator.alloc_many(n)
    middle = time.perf_counter()
    allocator.free_many(ids)
    end = time.perf_counter()
    return (middle - start) / n * 1e9, (end - middle) / n * 1e9


def bench(repeat, quick, out=sys.stdout, progress=sys.stderr):
    size = 1 << (16 if quick else BITS)
    candidates = {
        "pasid.pure.IDA": lambda: pure.IDA(),
        "pasid.IDA": lambda: core.IDA(),
        "pasid.PasidAllocator": lambda: core.PasidAllocator(bits=BITS, reserved=()),
    }
    pairs = {"pasid.pure.IDA": 2_000 if quick else 5_000}
    results = {(w, name): [] for w in ("W1", "W3") for name in candidates}
    names = list(candidates)
    for rep in range(repeat):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            print(f"  repetition {rep + 1}/{repeat}: {name}", file=progress, flush=True)
            n = pairs.get(name, 50_000)
            results[("W1", name)].append(churn(candidates[name], size, n, seed=rep))
            results[("W3", name)].append(nearly_full(candidates[name], size, n, seed=rep))
    many = [batch(100_000) for _ in range(repeat)]
    base = {w: statistics.median(results[(w, "pasid.pure.IDA")]) for w in ("W1", "W3")}
    print(f"{'workload':10s} {'candidate':24s} {'ns/op':>10s} {'vs pure IDA':>12s}", file=out)
    for w in ("W1", "W3"):
        for name in names:
            median = statistics.median(results[(w, name)])
            print(f"{w:10s} {name:24s} {median:10.1f} {base[w] / median:11.1f}x", file=out)
    alloc_ns = statistics.median(a for a, _ in many)
    free_ns = statistics.median(f for _, f in many)
    print(f"{'W4':10s} {'alloc_many (per ID)':24s} {alloc_ns:10.2f}", file=out)
    print(f"{'W4':10s} {'free_many (per ID)':24s} {free_ns:10.2f}", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pasid", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bench_parser = commands.add_parser("bench", help="compiled core vs pasid.pure.IDA: ns/op and ratios")
    bench_parser.add_argument("--repeat", type=int, default=3, help="repetitions (median taken)")
    bench_parser.add_argument("--quick", action="store_true", help="a 16-bit space: seconds, not a minute")
    args = parser.parse_args(argv)
    if args.command == "bench":
        if args.repeat < 1:
            parser.error("--repeat must be >= 1")
        bench(args.repeat, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
