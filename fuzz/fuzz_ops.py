#!/usr/bin/env python
"""Fuzz operation sequences on PasidAllocator, with user code that calls back.

    python fuzz/fuzz_ops.py --seconds 60                    # atheris if installed, else random
    python fuzz/fuzz_ops.py --seconds 60 --engine random --seed 7
    python fuzz/fuzz_ops.py --replay 1234 --mode reentrant  # one random-engine run, traced
    python fuzz/fuzz_ops.py crash-0123abcd                  # replay an atheris crash file

Modes (``--mode``, default ``both``: each input picks one):

- ``reentrant``: one backend (``--backend``), owners and devices with Python
  ``__hash__``/``__eq__``, a Python clock and ``on_teardown`` callbacks that
  call back into the allocator (any operation, snapshots included) or raise;
- ``differential``: the compiled core and the pure backend side by side, no
  user code: equal results, errors and snapshot bytes after every operation.

Invariants checked after every operation: see ``fuzzlib.OpRunner``. A broken
one prints the operation log and exits 1 (atheris: writes the crash input).
Failures already reported are steered around (``fuzzlib.KNOWN``); ``--no-avoid``
runs straight into them.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                         # fuzzlib, driver

import driver  # noqa: E402


def parse(argv):
    p = driver.parser(__doc__.split("\n")[0], ops=60, ops_help="operations per input",
                      backend_help="re-entrant runs: which backend (both: alternate)")
    p.add_argument("--mode", choices=["both", "reentrant", "differential"], default="both")
    p.add_argument("--replay", type=int, help="random engine: run this one seed, traced")
    return p.parse_known_args(argv)

def main(argv=None):
    args, rest = parse(sys.argv[1:] if argv is None else argv)
    engine = driver.engine(args, trace_replay=True)
    import fuzzlib

    mods = fuzzlib.backends("both")
    single = fuzzlib.backends(args.backend if args.backend != "both" else "both")
    avoid = set() if args.no_avoid else None
    stats = fuzzlib.Stats()
    started = time.monotonic()
    last_report = [started]

    def one(src):
        """One input: the mode and the backend drawn first, unless given
        (``--mode reentrant --backend cython`` runs ``RandomSource(seed)`` as is)."""
        mode = args.mode
        if mode == "both":
            mode = "reentrant" if src.int(0, 1) == 0 or len(mods) == 1 else "differential"
        if mode == "reentrant":
            mod = single[src.int(0, len(single) - 1)] if len(single) > 1 else single[0]
            fuzzlib.run_reentrant(mod, src, args.ops, stats, avoid=avoid)
        else:
            fuzzlib.run_differential(mods, src, args.ops, stats, avoid=avoid)

    def report(final=False):
        elapsed = time.monotonic() - started
        print(f"[fuzz_ops] {elapsed:.0f} s, {'final' if final else 'so far'}: {stats.line()}",
              flush=True)

    if engine == "atheris":
        import atheris                       # instrumented pasid already (driver.engine)

        def test_one_input(data):
            now = time.monotonic()
            if now - started >= args.seconds:
                report(final=True)
                os._exit(0)
            if now - last_report[0] > 15:
                last_report[0] = now
                report()
            if not data:
                return
            fdp = atheris.FuzzedDataProvider(data)
            try:
                one(fuzzlib.AtherisSource(fdp))
            except fuzzlib.Bug:
                report(final=True)
                raise

        # inputs long enough for a whole run (libFuzzer starts them short and grows slowly)
        if not any(arg.startswith("-max_len=") for arg in rest):
            rest += ["-max_len=2048", "-len_control=0"]
        atheris.Setup([sys.argv[0], f"-max_total_time={int(args.seconds) + 30}",
                       "-rss_limit_mb=4096", *rest], test_one_input)
        atheris.Fuzz()
        return 0

    # the random engine: seeds in order, each one input
    if args.replay is not None:
        one(fuzzlib.RandomSource(args.replay))
        print(f"seed {args.replay}: no failure")
        return 0
    failures = {}
    seed = args.seed
    while time.monotonic() - started < args.seconds:
        try:
            one(fuzzlib.RandomSource(seed))
        except fuzzlib.Bug as bug:
            first = str(bug).split("\n")[0]
            key = first[:80]
            if key not in failures:
                failures[key] = seed
                print(f"=== FAILURE at seed {seed} (replay: python fuzz/fuzz_ops.py --replay "
                      f"{seed} --mode {args.mode} --backend {args.backend}"
                      f"{' --no-avoid' if args.no_avoid else ''})\n{bug}\n", flush=True)
            if not args.keep_going:
                report(final=True)
                return 1
        seed += 1
        if time.monotonic() - last_report[0] > 15:
            last_report[0] = time.monotonic()
            report()
    report(final=True)
    print(f"[fuzz_ops] seeds {args.seed}..{seed - 1}; distinct failures: {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(1, os.path.dirname(HERE))    # the pasid of this checkout (built in place)
    sys.exit(main())
