"""pasid.bench: the one definition of the benchmark workloads, and its harness.

The timed runs here are tiny (``quick=True``, one repetition, a few
workloads); the full pytest-benchmark smoke run (``python -m pytest benchmarks
--benchmark-disable``) takes too long for the unit suite and is CI's own step.
Tests that time anything need the compiled core: they are skipped under
``PASID_NO_EXTENSION=1``, and fail (never skip) if the core is expected but
does not import.
"""

import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pasid import bench

ROOT = Path(__file__).resolve().parents[1]
NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"
needs_core = pytest.mark.skipif(
    NO_EXTENSION, reason="pasid.bench times the compiled core (PASID_NO_EXTENSION=1)")


def python(code, env=None):
    """Run ``python -c code`` from the repository root; the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def load_ratios():
    spec = importlib.util.spec_from_file_location("ratios", ROOT / "benchmarks" / "ratios.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFUSE = """
import sys
import pasid.bench as b
assert "pasid._core" not in sys.modules, "pasid.bench imported the compiled core"
try:
    b.run(repeat=1, quick=True, workloads=["W6"])
except RuntimeError as exc:
    print("RuntimeError:", exc)
else:
    print("ran")
"""


def test_import_is_lazy_and_run_refuses_with_no_extension():
    run = python(REFUSE, env={"PASID_NO_EXTENSION": "1"})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("RuntimeError: "), run.stdout
    assert "compiled core" in lines[0] and "PASID_NO_EXTENSION=1" in lines[0]


def test_run_refuses_when_the_core_does_not_import():
    # the extension made unimportable: pasid falls back (with its warning), bench refuses
    blocker = """
import importlib.abc, sys, warnings
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pasid._core":
            raise ImportError("no compiled core here")
sys.meta_path.insert(0, Block())
warnings.simplefilter("ignore", RuntimeWarning)
"""
    run = python(blocker + REFUSE, env={"PASID_NO_EXTENSION": "0"})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("RuntimeError: "), run.stdout
    assert "not available" in lines[0] and "no compiled core here" in lines[0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown workload 'W7'"):
        bench.run(repeat=1, workloads=["W7"])
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        bench.run(repeat=0)
    assert bench.select(["w6-lifecycle", "W1", "replay"]) == ["W1", "W6", "replay"]
    assert bench.select(None) == list(bench.ORDER)


def test_rows_rotate_and_alternate():
    for key, rows in bench.ROWS.items():
        orders = [bench.rotated(rows, rep) for rep in range(len(rows))]
        assert all(sorted(o) == sorted(rows) for o in orders)
        assert len({tuple(o) for o in orders}) == len(rows), key    # every order differs
        assert [o[0] for o in orders] == list(rows)                  # each row leads once
        for row in rows:
            assert row.split(":")[0] in bench.CANDIDATES
            assert row in bench.ROW_ORDER


@needs_core
def test_run_quick_prints_the_table():
    out, messages = io.StringIO(), []
    samples = bench.run(repeat=1, quick=True, workloads=["W6", "W4"], out=out,
                        progress=lambda *call: messages.append(call))
    text = out.getvalue()
    rows = bench.ROWS["W4"] + bench.ROWS["W6"]
    # one before each (repetition, workload, row), counting the steps, and one at the end
    assert [done for done, _, _ in messages] == list(range(len(rows) + 1))
    assert {total for _, total, _ in messages} == {len(rows)}
    assert messages[0][2] == f"rep 1/1 W4-batch {bench.ROWS['W4'][0]}"
    assert messages[-1][2] == "done"
    assert text.startswith("pasid bench: 1 repetition(s) (quick), medians; ")
    assert bench.QUICK_NOTE in text
    assert "W4-batch: alloc_many" in text and "W6-lifecycle:" in text
    assert "x py-IDA call" in text and "x py-PA" in text
    for key in ("W4", "W6"):
        for row in bench.ROWS[key]:
            assert f"  {row:<16}" in text
            assert set(samples[(key, row, "round")]) == {0}
    assert set(samples[("W4", "cy-PA:batch", "alloc")]) == {0}
    assert "PASS  W4 alloc_many vs pure IDA per-call alloc" in text \
        or "FAIL  W4 alloc_many vs pure IDA per-call alloc" in text
    assert "n/a   W1 churn: _core.IDA vs pure IDA" in text    # not measured, not failed
    assert "memory: full 20-bit _core.IDA" in text
    assert "not measured" in text.splitlines()[-1]


@needs_core
def test_replay_group():
    out = io.StringIO()
    samples = bench.run(repeat=1, quick=True, workloads=["replay"], out=out)
    text = out.getvalue()
    for row in ("cy-PA:compiled", "cy-PA:python", "py-PA:python"):
        for phase in ("round", "loop"):
            assert samples[("replay", row, phase)][0] > 0
    # the loop is part of the call
    assert (samples[("replay", "cy-PA:compiled", "loop")][0]
            <= samples[("replay", "cy-PA:compiled", "round")][0])
    assert "ops/s" in text and "x cy python" in text
    verdict = [line for line in text.splitlines() if "replay: compiled loop" in line]
    assert len(verdict) == 1 and verdict[0].split()[0] in ("PASS", "FAIL"), verdict
    assert "Mops/s" in verdict[0] and "(target >= 5 Mops/s)" in verdict[0]


@needs_core
def test_stage_workloads_on_the_compiled_rows():
    """W3, W1, W5 move a stage between the seeded states; each round is checked."""
    session = bench.Session(quick=True)
    samples = {}
    for key in ("W3", "W1", "W5"):
        for row in ("cy-IDA", "cy-PA"):
            case = session.case(key, row)
            round_times, phase_times = bench.time_case(case)
            assert len(round_times) == case.rounds
            assert all(len(t) == case.rounds for t in phase_times.values())
            bench.add_samples(samples, case, 0, round_times, phase_times)
    for row in ("cy-IDA", "cy-PA"):
        assert session.stages[row].state == "half"
        assert len(session.stages[row].obj) == bench.N - bench.N // 2
    assert set(samples) == {(k, r, p) for k in ("W1", "W3", "W5") for r in ("cy-IDA", "cy-PA")
                            for p in (("round",) if k == "W1" else ("round", "alloc", "free"))}


def test_a_round_that_does_less_work_fails():
    session = bench.Session(quick=True)
    case = session.case("W6", "py-PA")
    bench.time_case(case)
    case = session.case("W6", "py-PA")
    real = case.body
    case.body = lambda *args: real(*args[:-1], args[-1] - 1)   # one lifecycle fewer a round
    with pytest.raises(AssertionError):
        bench.time_case(case)


def test_ratios_reads_pytest_benchmark_json():
    """A result file as benchmarks/ writes it (extra_info), old groups only."""
    def entry(workload, row, rep, median, ops, phases=None, unit="op"):
        info = {"workload": workload, "row": row, "rep": rep, "ops": ops, "unit": unit}
        if phases:
            info["phase_times"] = phases
        return {"stats": {"median": median}, "extra_info": info}

    data = {"benchmarks": [
        entry("W1", "cy-IDA", 0, 20_000 * 50e-9, {"round": 20_000}, unit="pair"),
        entry("W1", "py-IDA", 0, 20_000 * 2000e-9, {"round": 20_000}, unit="pair"),
        entry("W1", "cy-IDA", 1, 20_000 * 60e-9, {"round": 20_000}, unit="pair"),
        entry("W1", "py-IDA", 1, 20_000 * 2000e-9, {"round": 20_000}, unit="pair"),
        entry("W4", "cy-PA:batch", 0, 1e-3, {"round": 200_000, "alloc": 100_000,
                                             "free": 100_000},
              {"alloc": [1.3e-4, 1.2e-4, 1.4e-4], "free": [3e-4]}, unit="id"),
        {"stats": None, "extra_info": {}},                      # a --benchmark-disable entry
    ]}
    samples, units = load_ratios().collect(data)
    assert samples[("W1", "cy-IDA", "round")] == pytest.approx({0: 50.0, 1: 60.0})
    assert samples[("W4", "cy-PA:batch", "alloc")] == pytest.approx({0: 1.3})
    out = io.StringIO()
    failed = bench.report(samples, units, out=out, header="from a file", mem=(100, 100))
    text = out.getvalue()
    assert failed == 0
    assert text.startswith("from a file\n")
    assert "[ns per pair]" in text and "[ns per id]" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("  cy-IDA "))
    assert line.split()[-3:] == ["55.0", "36.7x", "-"]        # median of 2000/50 and 2000/60
    assert "PASS  W1 churn: _core.IDA vs pure IDA" in text
    assert "PASS  W4 alloc_many per ID (_core)" in text
    assert "n/a   replay: compiled loop" in text


def test_benchmarks_collect(tmp_path):
    """The pytest-benchmark files still collect: every workload, every row, named as before.

    Run from elsewhere, so that ``pasid`` is the installed package, not the sources
    beside the benchmarks (an sdist's sources have no compiled core).
    """
    run = subprocess.run([sys.executable, "-m", "pytest", os.path.join(ROOT, "benchmarks"),
                          "--collect-only", "-q", "-p", "no:cacheprovider", "--benchmark-disable"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    ids = [line for line in run.stdout.splitlines() if "::" in line]
    workloads = [i for i in ids if i.startswith("benchmarks/test_workloads.py::")]
    assert len(workloads) == sum(len(rows) for rows in bench.ROWS.values())
    assert "benchmarks/test_embedding.py::test_embedding_w1_churn[r0-cy-PA:cython]" in ids
    assert "benchmarks/test_workloads.py::test_w1_churn[r0-cy-IDA]" in ids
    assert "benchmarks/test_workloads.py::test_w4_batch[r0-cy-PA:batch]" in ids
    assert "benchmarks/test_workloads.py::test_replay[r0-cy-PA:compiled]" in ids
