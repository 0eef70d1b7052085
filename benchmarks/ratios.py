"""Ratios and targets from one pytest-benchmark run of benchmarks/.

    python benchmarks/ratios.py [RESULTS.json] [--strict]

With no file it runs ``python -m pytest benchmarks --benchmark-json=<tmp> -q``
from the repository root first. For every group it prints each row's median
ns per operation (median over repetitions of the per-repetition median; a
row's per-operation cost is its round, or phase, time divided by the
operations in it) and its speed-up against the pure baselines, computed
within each repetition and then the median taken. Then the targets, PASS/FAIL,
and the compiled IDA's memory (``IDA._memory()``, measured here).
``--strict``: exit 1 if a target fails.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GROUPS = [
    ("W1", "W1-churn: half full at random, free(random allocated) + alloc() pairs"),
    ("W2", "W2-fill: empty -> full by alloc(), then free all"),
    ("W3", "W3-nearly-full: 99.9% allocated, alloc the last 1000 then free them"),
    ("W4", "W4-batch: alloc_many(100_000) + free_many, vs 100_000 per-call alloc()/free()"),
    ("W5", "W5-range: alloc in [2**19, 2**20-1] on the half state, then free"),
    ("W6", "W6-lifecycle: alloc, bind x2, free, unbind x2, advance(by=1); grace 1, drain 0.5"),
]
ROW_ORDER = ["cy-IDA", "cy-IDA:call", "cy-PA", "cy-PA:call", "cy-PA:batch",
             "py-IDA", "py-IDA:call", "py-PA", "py-PA:call", "py-PA:batch"]
LABELS = {
    "cy-IDA": "pasid._core.IDA", "py-IDA": "pasid.pure.IDA",
    "cy-PA": "pasid._core.PasidAllocator", "py-PA": "pasid.pure.PasidAllocator",
}


def baselines(workload):
    """(column title, row giving the baseline) for a group."""
    if workload == "W6":
        return [("x py-PA", "py-PA")]
    if workload == "W4":
        return [("x py-IDA call", "py-IDA:call"), ("x py-PA call", "py-PA:call"),
                ("x py-PA batch", "py-PA:batch")]
    return [("x py-IDA", "py-IDA"), ("x py-PA", "py-PA")]


def run_pytest(path):
    cmd = [sys.executable, "-m", "pytest", "benchmarks", f"--benchmark-json={path}", "-q",
           "-p", "no:cacheprovider"]
    print("running:", " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    if proc.returncode:
        sys.exit(f"pytest failed with status {proc.returncode}")


def collect(data):
    """samples[(workload, row, phase)] = {rep: ns per op}; plus the unit per workload."""
    samples, units = {}, {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") or {}
        if "workload" not in info or not bench.get("stats"):
            continue
        wl, row, rep, ops = info["workload"], info["row"], info["rep"], info["ops"]
        units[wl] = info["unit"]
        samples.setdefault((wl, row, "round"), {})[rep] = (
            bench["stats"]["median"] * 1e9 / ops["round"])
        for phase, times in (info.get("phase_times") or {}).items():
            if times:
                samples.setdefault((wl, row, phase), {})[rep] = (
                    statistics.median(times) * 1e9 / ops[phase])
    return samples, units


def med(values):
    return statistics.median(values) if values else float("nan")


def ns(samples, key):
    return med(list(samples.get(key, {}).values()))


def ratio(samples, num_key, den_key):
    """median over repetitions of samples[num]/samples[den], same repetition."""
    a, b = samples.get(num_key, {}), samples.get(den_key, {})
    return med([a[r] / b[r] for r in a if r in b and b[r] > 0])


def memory():
    sys.path.insert(0, ROOT)
    from pasid._core import IDA

    full = IDA()
    alloc = full.alloc
    for _ in range(1 << 20):
        alloc()
    sparse = IDA()
    for _ in range(64):
        sparse.alloc_min(2**31 - 64)
    return full._memory(), sparse._memory()


def main(argv):
    strict = "--strict" in argv
    args = [a for a in argv if a != "--strict"]
    if args:
        path = args[0]
    else:
        fd, path = tempfile.mkstemp(suffix=".json", prefix="pasid-bench-")
        os.close(fd)
        run_pytest(path)
    with open(path) as f:
        data = json.load(f)
    samples, units = collect(data)
    if not samples:
        sys.exit("no timed benchmarks in the file (was it run with --benchmark-disable?)")
    reps = {r for d in samples.values() for r in d}
    machine = data.get("machine_info", {})
    print(f"pasid benchmarks: {len(reps)} repetition(s), medians; "
          f"{machine.get('python_implementation', '')} {machine.get('python_version', '')}, "
          f"{machine.get('cpu', {}).get('brand_raw', '')}")

    for wl, title in GROUPS:
        rows = sorted({k[1] for k in samples if k[0] == wl}, key=ROW_ORDER.index)
        if not rows:
            continue
        cols = baselines(wl)
        print(f"\n{title}   [ns per {units[wl]}]")
        head = f"  {'row':<14}{'class':<34}{'phase':<7}{'ns/op':>11}"
        head += "".join(f"{c:>15}" for c, _ in cols)
        print(head)
        for row in rows:
            name = row.split(":")[0]
            label = LABELS[name] + (f" {row.split(':')[1]}" if ":" in row else "")
            for phase in ("round", "alloc", "free"):
                key = (wl, row, phase)
                if key not in samples:
                    continue
                line = f"  {row:<14}{label:<34}{phase:<7}{ns(samples, key):>11.1f}"
                for _, base in cols:
                    r = ratio(samples, (wl, base, phase), key)
                    line += f"{r:>14.1f}x" if r == r else f"{'-':>15}"
                print(line)

    # ------------------------------------------------------------ targets
    checks = []

    def at_least(desc, value, target):
        checks.append((desc, f"{value:.1f}x", f">= {target}x", value >= target))

    def at_most(desc, value, target, unit):
        checks.append((desc, f"{value:.2f}{unit}", f"<= {target}{unit}", value <= target))

    at_least("W1 churn: _core.IDA vs pure IDA",
             ratio(samples, ("W1", "py-IDA", "round"), ("W1", "cy-IDA", "round")), 25)
    at_least("W1 churn: _core.PasidAllocator(lowest) vs pure IDA",
             ratio(samples, ("W1", "py-IDA", "round"), ("W1", "cy-PA", "round")), 15)
    for row in ("cy-IDA", "cy-PA"):
        at_least(f"W3 nearly full (alloc+free): {LABELS[row]} vs pure IDA",
                 ratio(samples, ("W3", "py-IDA", "round"), ("W3", row, "round")), 30)
    for row in ("cy-IDA", "cy-PA"):
        flat = med([samples[("W3", row, "alloc")][r] / samples[("W2", row, "alloc")][r]
                    for r in samples.get(("W3", row, "alloc"), {})
                    if r in samples.get(("W2", row, "alloc"), {})])
        checks.append((f"W3 flat: {LABELS[row]} W3 alloc / W2 alloc", f"{flat:.2f}x",
                       "<= 1.3x", flat <= 1.3))
    at_most("W4 alloc_many per ID (_core)", ns(samples, ("W4", "cy-PA:batch", "alloc")), 2.5,
            " ns")
    at_least("W4 alloc_many vs pure IDA per-call alloc",
             ratio(samples, ("W4", "py-IDA:call", "alloc"), ("W4", "cy-PA:batch", "alloc")), 500)
    at_most("W4 free_many per ID (_core)", ns(samples, ("W4", "cy-PA:batch", "free")), 4.0, " ns")
    at_least("W6 lifecycle: _core vs pure PasidAllocator",
             ratio(samples, ("W6", "py-PA", "round"), ("W6", "cy-PA", "round")), 15)
    full, sparse = memory()
    checks.append(("memory: full 20-bit _core.IDA (IDA._memory())", f"{full / 1024:.1f} KiB",
                   "<= 160 KiB", full <= 160 * 1024))
    checks.append(("memory: 64 IDs at 2**31-64.. (IDA._memory())", f"{sparse / 1024:.1f} KiB",
                   "<= 1024 KiB", sparse <= 1024 * 1024))

    print("\nTargets")
    for desc, value, target, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {desc:<66} {value:>13}  (target {target})")
    failed = sum(not ok for *_, ok in checks)
    print(f"\n{len(checks) - failed} passed, {failed} failed")
    return 1 if (strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
