"""Ratios and targets from one pytest-benchmark run of benchmarks/.

    python benchmarks/ratios.py [RESULTS.json] [--strict]

With no file it runs ``python -m pytest benchmarks --benchmark-json=<tmp> -q``
from the repository root first. For every group it prints each row's median
ns per operation (median over repetitions of the per-repetition median; a
row's per-operation cost is its round, or phase, time divided by the
operations in it) and its speed-up against the pure baselines, computed
within each repetition and then the median taken. Then the targets, PASS/FAIL,
and the compiled IDA's memory (``IDA._memory()``, measured here). The table and
the targets are :func:`pasid.bench.report`, the same that ``pasid bench``
prints; this file only runs pytest and reads its JSON.
``--strict``: exit 1 if a target fails.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from pasid import bench  # the installed package (pip install -e . in a checkout)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_pytest(path):
    cmd = [sys.executable, "-m", "pytest", "benchmarks", f"--benchmark-json={path}", "-q",
           "-p", "no:cacheprovider"]
    print("running:", " ".join(cmd), file=sys.stderr, flush=True)
    # numpy's OpenBLAS starts worker threads that spin for a while after numpy
    # loads: on 2 cores they take CPU from every row alike. Nothing here uses BLAS.
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
    if proc.returncode:
        sys.exit(f"pytest failed with status {proc.returncode}")


def collect(data):
    """samples[(workload, row, phase)] = {rep: ns per op}; plus the unit per workload."""
    samples, units = {}, {}
    for entry in data["benchmarks"]:
        info = entry.get("extra_info") or {}
        if "workload" not in info or not entry.get("stats"):
            continue
        wl, row, rep, ops = info["workload"], info["row"], info["rep"], info["ops"]
        units[wl] = info["unit"]
        samples.setdefault((wl, row, "round"), {})[rep] = (
            entry["stats"]["median"] * 1e9 / ops["round"])
        for phase, times in (info.get("phase_times") or {}).items():
            if times:
                samples.setdefault((wl, row, phase), {})[rep] = (
                    statistics.median(times) * 1e9 / ops[phase])
    return samples, units


def main(argv):
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
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
    header = (f"pasid benchmarks: {len(reps)} repetition(s), medians; "
              f"{machine.get('python_implementation', '')} {machine.get('python_version', '')}, "
              f"{machine.get('cpu', {}).get('brand_raw', '')}")
    failed = bench.report(samples, units, out=sys.stdout, header=header)
    return 1 if (strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
