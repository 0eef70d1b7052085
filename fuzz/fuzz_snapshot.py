#!/usr/bin/env python
"""Fuzz PasidAllocator.from_bytes with mutated, truncated, extended and re-checksummed snapshots.

    python fuzz/fuzz_snapshot.py --seconds 60               # atheris if installed, else random
    python fuzz/fuzz_snapshot.py --seconds 60 --engine random --seed 7
    python fuzz/fuzz_snapshot.py --replay 1234              # one random-engine input, shown

Each input is a snapshot of a varied allocator (made by short operation runs;
some are hosts with VMs, version 3), mutated: raw bytes flipped, inserted, deleted, truncated or appended (the
checksum fixed or not), the version byte changed, or a field of the decoded
value replaced or tweaked and the whole encoded and checksummed again. With
atheris, half the inputs are also taken as a raw payload framed with the magic,
version and a correct checksum, so the decoder is fuzzed byte by byte.

Every backend must raise ``SnapshotError`` (``TypeError`` for a non-bytes
input) or load an allocator whose ``_check()`` passes and whose ``to_bytes()``
loads back to the same bytes; the backends must agree; a loaded allocator then
runs a short differential operation sequence. A failure prints the bytes and
exits 1. Failures already reported are steered around (``fuzzlib.KNOWN``);
``--no-avoid`` runs straight into them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                         # fuzzlib, driver

import driver  # noqa: E402


def parse(argv):
    p = driver.parser(__doc__.split("\n")[0], ops=12, ops_help="operations after a load")
    p.add_argument("--replay", type=int, help="random engine: run this one seed")
    return p.parse_known_args(argv)

def main(argv=None):
    args, rest = parse(sys.argv[1:] if argv is None else argv)
    engine = driver.engine(args, trace_replay=False)
    import fuzzlib
    from pasid import _snapshot

    mods = fuzzlib.backends(args.backend)
    avoid = set() if args.no_avoid else None
    stats = fuzzlib.Stats()
    seeds = fuzzlib.seed_snapshots(16)
    started = time.monotonic()
    last_report = [started]

    def report(final=False):
        elapsed = time.monotonic() - started
        print(f"[fuzz_snapshot] {elapsed:.0f} s, {'final' if final else 'so far'}: "
              f"{stats.line()}", flush=True)

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
            try:
                if data[0] < 128:
                    # the rest is a payload: framed with a correct checksum, loaded as is
                    fuzzlib.snapshot_case(fuzzlib.RandomSource(0), mods,
                                          [fuzzlib.frame(data[1:])], stats, ops=0, avoid=avoid,
                                          mutate=False)
                else:
                    fdp = atheris.FuzzedDataProvider(data[1:])
                    fuzzlib.snapshot_case(fuzzlib.AtherisSource(fdp), mods, seeds, stats,
                                          ops=args.ops, avoid=avoid)
            except fuzzlib.Bug:
                report(final=True)
                raise

        corpus = [arg for arg in rest if not arg.startswith("-")]
        if not corpus:
            # a seed corpus: the seed snapshots' payloads, as raw inputs
            directory = tempfile.mkdtemp(prefix="pasid-snapshot-corpus-")
            for i, blob in enumerate(seeds):
                with open(os.path.join(directory, f"seed{i}"), "wb") as f:
                    f.write(b"\x00" + blob[len(_snapshot.MAGIC) + 1:-4])
            rest.append(directory)
        atheris.Setup([sys.argv[0], f"-max_total_time={int(args.seconds) + 30}",
                       "-rss_limit_mb=4096", *rest], test_one_input)
        atheris.Fuzz()
        return 0

    if args.replay is not None:
        outcome = fuzzlib.snapshot_case(fuzzlib.RandomSource(args.replay), mods, seeds, stats,
                                        ops=args.ops, avoid=avoid, show=True)
        print(f"seed {args.replay}: {outcome}")
        return 0
    failures = {}
    seed = args.seed
    while time.monotonic() - started < args.seconds:
        try:
            fuzzlib.snapshot_case(fuzzlib.RandomSource(seed), mods, seeds, stats, ops=args.ops,
                                  avoid=avoid)
        except fuzzlib.Bug as bug:
            key = str(bug).split("\n")[0][:80]
            if key not in failures:
                failures[key] = seed
                print(f"=== FAILURE at seed {seed} (replay: python fuzz/fuzz_snapshot.py "
                      f"--replay {seed} --backend {args.backend}"
                      f"{' --no-avoid' if args.no_avoid else ''})\n{bug}\n", flush=True)
            if not args.keep_going:
                report(final=True)
                return 1
        seed += 1
        if time.monotonic() - last_report[0] > 15:
            last_report[0] = time.monotonic()
            report()
    report(final=True)
    print(f"[fuzz_snapshot] seeds {args.seed}..{seed - 1}; distinct failures: {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(1, os.path.dirname(HERE))    # the pasid of this checkout (built in place)
    sys.exit(main())
