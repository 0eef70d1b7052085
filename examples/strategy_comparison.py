"""The IOMMU model of simpy_iommu.py under each allocation strategy, same seed: a table.

Every strategy sees the same workload (arrivals, work, patience, devices,
kills: drawn from ``--seed`` before the run) and the same device latency
generators; only the choice of FREE PASID differs. ``random`` draws from the
allocator's seeded generator, so the whole table is reproducible, on either
backend.

    python examples/strategy_comparison.py                 # 3,000 processes a strategy
    python examples/strategy_comparison.py --seed 3 --quick

Columns: requests served; requests that waited, and the mean wait over all
served requests (simulation time); the same for the narrow NIC's requests
(PASIDs below 32); processes that gave up waiting; the most PASIDs ACTIVE and
DRAINING + QUARANTINED at once; the shortest and the median reuse distance
(release to the next allocation of the same PASID: never below the grace
period, which quarantine enforces; the strategy decides how far above).

Needs simpy: pip install 'pasid[simpy]'.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import simpy_iommu  # noqa: E402  (the model, next to this file)

STRATEGIES = ("lowest", "cyclic", "fifo", "random")

COLUMNS = [  # (title, key, format)
    ("strategy", "strategy", "{:<8}"),
    ("served", "served", "{:>7}"),
    ("waited", "waited", "{:>7}"),
    ("mean wait", "mean_wait", "{:>10.2f}"),
    ("nic waited", "narrow_waited", "{:>11}"),
    ("nic wait", "narrow_mean_wait", "{:>9.2f}"),
    ("gave up", "gave_up", "{:>8}"),
    ("active^", "peak_active", "{:>8}"),
    ("held^", "peak_held", "{:>6}"),
    ("reuse min", "min_reuse", "{:>10.2f}"),
    ("reuse p50", "median_reuse", "{:>10.2f}"),
]


def compare(seed: int = 0, params: simpy_iommu.Params = simpy_iommu.Params(),
            strategies=STRATEGIES, allocator_class=None) -> list[dict]:
    """One summary per strategy (see simpy_iommu.Model.summary)."""
    return [simpy_iommu.run(s, seed, params, allocator_class) for s in strategies]


def table(rows: list[dict]) -> list[str]:
    head = "".join(f"{title:>{len(fmt.format(rows[0][key]))}}" if i else f"{title:<8}"
                   for i, (title, key, fmt) in enumerate(COLUMNS))
    lines = [head]
    for row in rows:
        lines.append("".join(fmt.format(row[key]) for _, key, fmt in COLUMNS))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, help="how many processes arrive")
    parser.add_argument("--quick", action="store_true",
                        help=f"{simpy_iommu.QUICK.processes} processes")
    args = parser.parse_args(argv)
    params = simpy_iommu.QUICK if args.quick else simpy_iommu.Params()
    if args.processes is not None:
        if args.processes < 1:
            parser.error("--processes must be at least 1")
        params = dataclasses.replace(params, processes=args.processes)
    rows = compare(args.seed, params)
    print(f"{params.processes} processes, {2 ** params.bits - 1} PASIDs, grace {params.grace}, "
          f"seed {args.seed}")
    for line in table(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
