#!/usr/bin/env python
"""Stress the compiled core for a time budget: threads, re-entrant user code, snapshots, from_bytes.

    python fuzz/stress.py --seconds 45                 # the compiled core of this checkout
    python fuzz/stress.py --seconds 45 --backend python

Run on the sanitized build by CI (.ci/run): AddressSanitizer and UBSan watch
the core while it runs, in rounds until the budget is spent:

1. threads: fuzz/threadstress.py, 4 to 8 workers on one allocator with a
   Python clock, Python-hashed owners and devices (plain-data ones every
   other round, so ``to_bytes`` snapshots can be taken), callbacks that call
   back, snapshots;
2. re-entrant operation sequences (fuzzlib.OpRunner): hashes, ``__eq__``, the
   clock and ``on_teardown`` calling back into the allocator or raising;
3. differential sequences, the core beside the pure backend;
4. mutated snapshots through ``from_bytes`` on both backends;
5. batches without the GIL (fuzz/batchstress.py): a thread changing the
   caller's array meanwhile, readers during batches, fork() during batches.

Every round checks its invariants (see the modules); the first failure is
printed with how to replay it and the exit status is 1. A sanitizer report
aborts the process (non-zero status). Failures already reported are steered
around (``fuzzlib.KNOWN``); ``--no-avoid`` runs straight into them.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                         # fuzzlib


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="time budget (default 45)")
    parser.add_argument("--backend", choices=["cython", "python"], default="cython")
    parser.add_argument("--seed", type=int, default=None, help="default: from the time")
    parser.add_argument("--no-avoid", action="store_true",
                        help="do not steer around the failures in fuzzlib.KNOWN")
    args = parser.parse_args(argv)

    import batchstress
    import fuzzlib
    import threadstress

    import pasid

    (mod,) = fuzzlib.backends(args.backend)
    both = fuzzlib.backends("both") if args.backend == "cython" else [mod]
    avoid = set() if args.no_avoid else None
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    rnd = random.Random(seed)
    print(f"[stress] {mod.__name__} from {os.path.dirname(pasid.__file__)}, seed {seed}, "
          f"{args.seconds:.0f} s", flush=True)

    started = time.monotonic()
    deadline = started + args.seconds
    totals = {"thread runs": 0, "threads": 0, "thread operations": 0, "snapshots in threads": 0,
              "user-code callbacks in threads": 0, "quiet points": 0}
    batch_totals = {}
    ops_stats, snap_stats = fuzzlib.Stats(), fuzzlib.Stats()
    seeds = fuzzlib.seed_snapshots(16)           # the same as fuzz/fuzz_snapshot.py: replayable
    round_no = 0
    replay = ""
    try:
        while time.monotonic() < deadline:
            round_no += 1
            # 1. threads
            threads = rnd.randint(4, 8)
            s = rnd.getrandbits(32)
            plain = round_no % 2 == 0
            replay = (f"threadstress.ThreadStress({mod.__name__}, threads={threads}, seed={s}, "
                      f"plain={plain}, ops=300).run()")
            result = threadstress.ThreadStress(mod, threads=threads, ops=300, seed=s, plain=plain,
                                               avoid=avoid,
                                               timeout=max(60.0, args.seconds)).run()
            totals["thread runs"] += 1
            totals["threads"] += threads
            totals["thread operations"] += result["operations"]
            totals["snapshots in threads"] += sum(result["snapshots"].values())
            totals["user-code callbacks in threads"] += result["callbacks"]
            totals["quiet points"] += result["quiet points"]
            # 2. and 3. operation sequences
            for _ in range(20):
                if time.monotonic() > deadline:
                    break
                s = rnd.getrandbits(32)
                replay = f"fuzz/fuzz_ops.py --replay {s} --mode reentrant --backend {args.backend}"
                fuzzlib.run_reentrant(mod, fuzzlib.RandomSource(s), 60, ops_stats, avoid=avoid)
                if len(both) > 1:
                    replay = f"fuzz/fuzz_ops.py --replay {s} --mode differential"
                    fuzzlib.run_differential(both, fuzzlib.RandomSource(s), 60, ops_stats,
                                             avoid=avoid)
            # 4. snapshots
            for _ in range(100):
                if time.monotonic() > deadline:
                    break
                s = rnd.getrandbits(32)
                replay = f"fuzz/fuzz_snapshot.py --replay {s}"
                fuzzlib.snapshot_case(fuzzlib.RandomSource(s), both, seeds, snap_stats,
                                      avoid=avoid)
            # 5. batches: one scenario a round, in turn, for a second
            name = batchstress.SCENARIOS[(round_no - 1) % len(batchstress.SCENARIOS)]
            s = rnd.getrandbits(32)
            replay = (f"fuzz/batchstress.py --scenario {name} --backend {args.backend} "
                      f"--seed {s}")
            if time.monotonic() < deadline:
                found = batchstress.run(name, mod, 1.0, s)
                for key, value in found.items():
                    batch_totals[key] = batch_totals.get(key, 0) + value
    except fuzzlib.Bug as bug:
        print(f"[stress] FAILURE in round {round_no} (replay: {replay}"
              f"{' --no-avoid' if args.no_avoid else ''}):\n{bug}", flush=True)
        return 1
    elapsed = time.monotonic() - started
    print(f"[stress] {elapsed:.1f} s, {round_no} rounds, no failure", flush=True)
    print("[stress] threads: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    print(f"[stress] operation sequences: {ops_stats.line()}")
    print(f"[stress] snapshots: {snap_stats.line()}")
    print("[stress] batches: " + ", ".join(f"{k} {v}" for k, v in batch_totals.items()))
    return 0


if __name__ == "__main__":
    sys.path.insert(1, os.path.dirname(HERE))    # the pasid of this checkout (built in place)
    sys.exit(main())
