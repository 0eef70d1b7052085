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
    samples = bench.run(repeat=1, quick=True, workloads=["replay", "replay-random"], out=out)
    text = out.getvalue()
    for group, row in (("replay", "cy-PA:compiled"), ("replay", "cy-PA:python"),
                       ("replay", "py-PA:python"), ("replay-random", "cy-PA:compiled"),
                       ("replay-random", "py-PA:python")):
        for phase in ("round", "loop"):
            assert samples[(group, row, phase)][0] > 0
    # the loop is part of the call
    assert (samples[("replay", "cy-PA:compiled", "loop")][0]
            <= samples[("replay", "cy-PA:compiled", "round")][0])
    assert "ops/s" in text and "x cy python" in text
    verdict = [line for line in text.splitlines() if "replay: compiled loop" in line]
    assert len(verdict) == 1 and verdict[0].split()[0] in ("PASS", "FAIL"), verdict
    assert "Mops/s" in verdict[0] and "(target >= 5 Mops/s)" in verdict[0]
    verdict = [line for line in text.splitlines() if "replay-random: compiled loop" in line]
    assert len(verdict) == 1 and verdict[0].split()[0] in ("PASS", "FAIL"), verdict
    assert "(target >= 6 Mops/s)" in verdict[0]


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
    for test, row in (("w1_cold", "cy-PA:cold"), ("w1_cold", "cy-IDA:warm"),
                      ("w6_cold", "cy-PA:cold"), ("w6_owners", "cy-PA:plain"),
                      ("owner_pairs", "cy-PA:vm1"), ("owner_churn", "py-PA")):
        assert f"benchmarks/test_workloads.py::test_{test}[r0-{row}]" in ids


# ---------------------------------------------------------------- simulator paths (issue 19)

def test_llc_bytes_reads_the_highest_level_data_cache(tmp_path):
    def cache(index, level, kind, size):
        d = tmp_path / f"index{index}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")

    cache(0, 1, "Data", "32K")
    cache(1, 1, "Instruction", "32K")
    cache(2, 2, "Unified", "512K")
    assert bench.llc_bytes(str(tmp_path)) == 512 << 10
    cache(3, 3, "Unified", "32768K")
    (tmp_path / "uevent").write_text("")                 # not a cache: ignored
    assert bench.llc_bytes(str(tmp_path)) == 32 << 20
    cache(4, 4, "Instruction", "1G")                     # instructions only: not data
    assert bench.llc_bytes(str(tmp_path)) == 32 << 20
    assert bench.llc_bytes(str(tmp_path / "absent")) == 32 << 20   # the fallback
    assert bench.l2_bytes(str(tmp_path)) == 512 << 10
    assert bench.l2_bytes(str(tmp_path / "absent")) == 1 << 20


def test_block_total_is_robust_to_a_preempted_block():
    assert bench.block_total([1.0, 1.0, 1.0, 1.0]) == 4.0
    assert bench.block_total([1.0, 1.0, 900.0, 1.2, 0.9]) == 5.0    # the median, times 5


def test_evictor_reads_a_buffer_twice_the_cache():
    ev = bench.Evictor(1 << 16)
    assert ev.size == 1 << 16 and ev() == 1
    assert bench.Evictor().size == 2 * bench.llc_bytes()
    session = bench.Session()
    assert session.evictor("l2").size == 2 * bench.l2_bytes()
    assert session.evictor() is session.evictor("llc")
    assert bench.no_eviction() == 0


class CountingEvictor:
    """Counts its calls; each one sleeps, so a timed block that held one would show it."""

    def __init__(self, pause):
        self.calls, self.pause = 0, pause

    def __call__(self):
        import time
        self.calls += 1
        time.sleep(self.pause)
        return 0


@needs_core
def test_cold_rows_evict_between_blocks_and_time_only_the_blocks():
    """The eviction runs before every block of a cold row, never in a warm row, and
    never inside the timed first/rest phases (it sleeps: a timed one would show)."""
    session = bench.Session(quick=True)
    ev = CountingEvictor(0.002)
    session._evictors = {"llc": ev, "l2": ev}
    pairs = bench.W1_PAIRS                              # W1-cold keeps its size when quick
    cycles = bench.QUICK_SIZES["W6"]
    for key, row, per_round in (
            ("W1-cold", "cy-PA:cold", -(-pairs // bench.COLD_W1_BLOCK)),
            ("W1-cold", "cy-IDA:cold", -(-pairs // bench.COLD_W1_BLOCK)),
            ("W1-cold", "cy-IDA:l2", -(-pairs // bench.COLD_W1_BLOCK)),
            ("W6-cold", "cy-PA:cold", cycles // bench.COLD_W6_BLOCK)):
        ev.calls = 0
        case = session.case(key, row)
        round_times, phases = bench.time_case(case)     # checks every result against the plan
        assert ev.calls == per_round * (case.rounds + case.warmup), (row, ev.calls)
        assert case.ops["first"] == per_round
        assert case.ops["first"] + case.ops["rest"] == case.ops["round"]
        for whole, first, rest in zip(round_times, phases["first"], phases["rest"]):
            assert first + rest <= whole - per_round * ev.pause, (row, whole, first, rest)
    ev.calls = 0
    for key, row in (("W1-cold", "cy-PA:warm"), ("W1-cold", "cy-IDA:warm"),
                     ("W6-cold", "cy-PA:warm")):
        bench.time_case(session.case(key, row))
    assert ev.calls == 0                                # warm rows: the same blocks, no eviction
    for row in ("cy-IDA", "cy-PA"):
        assert session.stages[row].state == "half"


@needs_core
def test_owner_groups_print_their_targets():
    out = io.StringIO()
    keys = ["owner-pairs", "owner-churn", "W6-owners"]
    samples = bench.run(repeat=1, quick=True, workloads=keys, out=out)
    text = out.getvalue()
    for key in keys:
        assert bench.WORKLOADS[key].title in text
        for row in bench.ROWS[key]:
            assert samples[(key, row, "round")][0] > 0
    assert "/ untagged" in text and "/ plain" in text
    for desc in ("owner pair vm0 (the owner holds 1,000) / untagged pair (_core)",
                 "owner pair vm1 (the owner's only PASID) / untagged pair (_core)",
                 "W6 with owners / W6 without (_core, one group)"):
        verdict = [line for line in text.splitlines() if desc in line]
        assert len(verdict) == 1 and verdict[0].split()[0] in ("PASS", "FAIL"), verdict
        assert verdict[0].endswith("(target <= 1.3x)")
    assert "n/a   W1 cold (caches evicted): _core.PasidAllocator / _core.IDA" in text
    assert "Figures (no target)" in text and "owner churn: _core ns per process" in text


@needs_core
def test_owner_rounds_check_their_work():
    session = bench.Session(quick=True)
    for key, row in (("owner-pairs", "cy-PA:vm1"), ("owner-churn", "cy-PA"),
                     ("W6-owners", "cy-PA:owners")):
        bench.time_case(session.case(key, row))
        case = session.case(key, row)
        real = case.body
        # one operation fewer a round: the last argument is the count or the owners' list
        case.body = lambda *args, real=real: real(*args[:-1], (
            args[-1] - 1 if isinstance(args[-1], int) else args[-1][:-1]))
        with pytest.raises(AssertionError):
            bench.time_case(case)
    # the three owner-pairs rows share one object: the same state
    cases = [session.case("owner-pairs", row) for row in bench.ROWS["owner-pairs"]]
    assert len({id(c.setup()[0].__self__) for c in cases}) == 1


def test_new_targets_and_figures_from_samples():
    samples = {
        ("owner-pairs", "cy-PA:untagged", "round"): {0: 50.0, 1: 40.0},
        ("owner-pairs", "cy-PA:vm0", "round"): {0: 60.0, 1: 52.0},      # 1.2x, 1.3x
        ("owner-pairs", "cy-PA:vm1", "round"): {0: 400.0, 1: 360.0},    # 8x, 9x
        ("W6-owners", "cy-PA:plain", "round"): {0: 200.0},
        ("W6-owners", "cy-PA:owners", "round"): {0: 600.0},
        ("W6-owners", "py-PA:owners", "round"): {0: 30000.0},
        ("W1-cold", "cy-PA:cold", "round"): {0: 1e6},                   # holds evictions
        ("W1-cold", "cy-PA:cold", "first"): {0: 5000.0},
        ("W1-cold", "cy-PA:cold", "rest"): {0: 150.0},
        ("W1-cold", "cy-IDA:cold", "first"): {0: 4000.0},
        ("W1-cold", "cy-IDA:cold", "rest"): {0: 100.0},
        ("W1-cold", "cy-PA:l2", "rest"): {0: 240.0},
        ("W1-cold", "cy-IDA:l2", "rest"): {0: 80.0},
        ("W1-cold", "cy-PA:warm", "rest"): {0: 60.0},
        ("W1-cold", "cy-IDA:warm", "rest"): {0: 48.0},
        ("owner-churn", "cy-PA", "round"): {0: 500.0},
        ("owner-churn", "py-PA", "round"): {0: 40000.0},
    }
    out = io.StringIO()
    failed = bench.report(samples, out=out, mem=(100, 100))
    text = out.getvalue()
    lines = text.splitlines()

    def verdict(desc):
        found = [line for line in lines if desc in line]
        assert len(found) == 1, (desc, found)
        return found[0].split()[0], found[0].split()[-4]

    assert verdict("owner pair vm0") == ("PASS", "1.25x")
    assert verdict("owner pair vm1") == ("FAIL", "8.50x")
    assert verdict("W6 with owners / W6 without") == ("FAIL", "3.00x")
    assert verdict("W1 cold (caches evicted): _core.PasidAllocator") == ("PASS", "1.50x")
    assert verdict("W1 L2-cold (tables in L3): _core.PasidAllocator") == ("FAIL", "3.00x")
    assert failed == 3
    figure = {line.rsplit(None, 1)[0].strip(): line.split()[-1] for line in lines
              if line.startswith("        ")}
    assert figure["W1 warm (the same blocks, not evicted): _core.PasidAllocator / _core.IDA"] \
        == "1.25x"
    assert figure["W1 cold / warm (rest pairs): pasid._core.PasidAllocator"] == "2.50x"
    assert figure["W1 cold, a block's first pair: _core.PasidAllocator / _core.IDA"] == "1.25x"
    assert figure["owner churn: _core ns per process"] == "500.0"
    assert figure["owner churn: pure / _core"] == "80.0x"
    # the cold group shows its phases, never its rounds (they hold the evictions)
    cold = [line for line in lines if line.startswith("  cy-PA:cold ")]
    assert [line.split()[-4] for line in cold] == ["first", "rest"]
    assert cold[1].split()[-2:] == ["1.50x", "2.50x"]               # / cy-IDA, / warm
    row = next(line for line in lines if line.startswith("  cy-PA:vm1 "))
    assert row.split()[-1] == "8.50x"
