"""VM traces (pasid-trace 2, pasid.sim.vmtrace): round trips, the checks, and the promise
that ``simulate --workload vms`` == record + ``replay`` on both loops and both backends.

Version-1 traces are tests/test_traceio.py's and tests/test_tracecheck.py's, unchanged.
"""

import json
import math
import re

import numpy as np
import pytest

from backends import ALL_BACKENDS
from pasid.sim.trace import TraceError, read_trace
from pasid.sim.traceio import open_trace
from pasid.sim.vms import MODES, record_vms, replay_vm, replay_vms, simulate_vms, vm_preset
from pasid.sim.vmtrace import VMTrace, read_vm_trace, trace_version

SMALL = vm_preset(duration=200, hosts=3, vms_per_host=3, migration=0.02)
TIMINGS = {"seconds", "ops_per_s"}
COMPILED = "cython" in ALL_BACKENDS
# (loop, hosts): every pairing that exists here
ENGINES = [("python", "python")] + ([("python", "compiled"), ("compiled", "compiled")]
                                    if COMPILED else [])


def untimed(rows, drop=()):
    return [{k: v for k, v in row.items() if k not in TIMINGS | set(drop)} for row in rows]


def same(a: VMTrace, b: VMTrace) -> None:
    for column in ("time", "op", "process", "vm", "arg", "pool_ack", "pool_offset"):
        assert np.array_equal(getattr(a, column), getattr(b, column)), column
    assert np.array_equal(a.pool_access, b.pool_access, equal_nan=True)
    assert (a.bits, a.grace, a.strategy, a.quota, a.host_seeds, a.vms, a.processes) == (
        b.bits, b.grace, b.strategy, b.quota, b.host_seeds, b.vms, b.processes)


@pytest.fixture(scope="module")
def trace():
    return record_vms(SMALL, seed=2)


# ---------------------------------------------------------------- the format

def test_text_and_binary_round_trips(trace, tmp_path):
    assert trace.counts()["migrate"] > 0 and trace.counts()["access"] > 0
    assert not np.all(np.isnan(trace.pool_access))
    for name in ("t.trace", "t.npz"):
        path = tmp_path / name
        trace.write(path)
        assert trace_version(path) == 2
        back = read_trace(path)             # read_trace reads both versions
        assert isinstance(back, VMTrace)
        same(trace, back)
        assert untimed(replay_vms(back, allocator="python")) == untimed(
            replay_vms(trace, allocator="python"))
    text = trace.to_text()
    assert text.startswith("pasid-trace 2\n")
    same(trace, read_vm_trace(text.splitlines()))


def test_version_1_traces_keep_their_reader(tmp_path):
    path = tmp_path / "v1.trace"
    path.write_text("pasid-trace 1\n0 alloc h0\n1 put h0\n")
    assert trace_version(path) == 1
    assert len(read_trace(path)) == 2
    vm = tmp_path / "vm.trace"
    record_vms(vm_preset(duration=20, hosts=2, vms_per_host=1), seed=0).write(vm)
    with pytest.raises(TraceError, match="a VM trace"):
        open_trace(vm)


def test_same_work_for_every_mode(trace):
    # the trace holds no mode: one replays under all three, each its own row
    rows = replay_vms(trace, allocator="python")
    assert [row["mode"] for row in rows] == list(MODES)
    assert rows[0]["migrations_conflict"] > 0 and rows[1]["migrations_conflict"] == 0


# ---------------------------------------------------------------- bad traces

HEADER = """pasid-trace 2
bits 8
grace 1
host 0 seed=1
host 1 seed=2
vm vm0 host=0 split=1..100 drain=2 d0 d1
vm vm1 host=1 split=101..200 drain=2 e0
"""


@pytest.mark.parametrize("body, line, words", [
    ("0 arrive p0 vm9\n", 8, "unknown vm 'vm9'"),
    ("0 arrive p0 vm0\n1 end p1\n", 9, "unknown process 'p1'"),
    ("0 arrive p0 vm0\n1 end p0\n2 end p0\n", 10, "frees only what it holds"),
    ("0 arrive p0 vm0\n2 end p0\n1 unbind p0 d0\n", 10, "time goes backwards"),
    ("0 arrive p0 vm0\n1 end p0\n2 unbind p0 e0\n", 10, "a device of vm 'vm1'"),
    ("0 arrive p0 vm0\n1 unbind p0 d0\n", 9, "before the process ended"),
    ("0 arrive p0 vm0\n1 end p0\n2 unbind p0 d9\n", 10,
     "unknown device 'd9': vm 'vm0' declares d0, d1$"),
    ("0 arrive p0 vm0\n1 end p0\n2 access p0 d00\n", 10, "unknown device 'd00'"),
    # a device accesses what it tears down before its unbind (issue 20, item 8)
    ("0 arrive p0 vm0\n1 end p0\n2 access p0 d0\n3 unbind p0 d0\n4 access p0 d0\n", 12,
     "access of process 'p0' by 'd0' after its unbind, which says the device has drained"),
    ("0 arrive p0 vm0\n1 end p0\n2 unbind p0 d0\n3 unbind p0 d0\n", 11, "twice"),
    ("0 migrate vm0 +2\n", 8, "offset must be in 1..1"),
    ("0 arrive p0 vm0\n1 migrate vm0 +1 3\n", 9, "may need 2"),
    ("0 migrate vm0 +1 3/1.5\n", 8, r"fraction must be in \[0, 1\]"),
    ("0 arrive p0 vm0\n0 arrive p0 vm1\n", 9, "arrives twice"),
    ("0 leave p0\n", 8, "unknown operation 'leave'"),
])
def test_bad_vm_traces_name_the_line(body, line, words):
    with pytest.raises(TraceError, match=words) as info:
        read_vm_trace((HEADER + body).splitlines(), name="t")
    assert info.value.line == line
    assert str(info.value).startswith(f"t:{line}: ")


@pytest.mark.parametrize("header, words", [
    (HEADER.replace("host=1", "host=5"), "host 5 is not one of the 2 hosts"),
    (HEADER.replace(" e0", " d0"), "belongs to two VMs"),
    (HEADER.replace("bits 8", "bits 30"), "bits"),
    (HEADER.replace("split=1..100", "split=1..900"), "split 1..900"),
])
def test_bad_vm_headers(header, words):
    with pytest.raises(TraceError, match=words):
        read_vm_trace(header.splitlines(), name="t")


def test_a_changed_binary_trace_names_the_operation(trace, tmp_path):
    bad = VMTrace(**{**trace.__dict__, "time": trace.time[::-1].copy(), "lines": None})
    path = tmp_path / "bad.npz"
    bad.write(path)
    with pytest.raises(TraceError, match=rf"^{re.escape(str(path))}: operation 1: time goes "
                                         "backwards"):
        read_trace(path)


def test_a_vm_trace_that_is_not_utf8_names_its_file_and_line(tmp_path):
    path = tmp_path / "bad.trace"
    path.write_bytes((HEADER + "0 arrive p0 vm0\n").encode() + b"1 end p\xd0\xd0\n")
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert str(info.value) == (f"{path}:9: not UTF-8 text: invalid continuation byte at "
                               "byte 8 of the line")


# ---------------------------------------------------------------- simulate == record + replay

@pytest.mark.parametrize("loop, hosts", ENGINES)
def test_simulate_equals_record_then_replay(loop, hosts, tmp_path):
    simulated = simulate_vms(SMALL, seed=5, engine=hosts)
    path = tmp_path / "t.npz"
    record_vms(SMALL, seed=5).write(path)
    replayed = replay_vms(read_trace(path), engine=loop, allocator=hosts)
    assert untimed(replayed) == untimed(simulated)


@pytest.mark.skipif(not COMPILED, reason="the compiled loop is not built")
def test_compiled_loop_equals_the_python_twin(trace):
    for mode in MODES:
        for quarantine in (True, False):
            runs = [replay_vm(trace, mode, quarantine=quarantine, engine=loop, allocator="compiled")
                    for loop in ("compiled", "python")]
            assert runs[0].loop == "compiled" and runs[1].loop == "python"
            a, b = ({k: v for k, v in vars(r).items() if k not in ("seconds", "loop")}
                    for r in runs)
            assert a == b


def test_compiled_loop_refuses_the_pure_hosts(trace):
    with pytest.raises(ValueError, match="compiled"):
        replay_vm(trace, "identity", engine="compiled", allocator="python")


# ---------------------------------------------------------------- the command line

def test_cli_record_and_replay(tmp_path, capsys):
    from pasid.cli import main

    path = tmp_path / "vms.trace"
    args = ["--workload", "vms", "--param", "duration=100", "--param", "hosts=2", "--json"]
    assert main(["simulate", *args, "--record", str(path)]) == 0
    recorded = json.loads(capsys.readouterr().out)
    assert main(["simulate", *args]) == 0
    plain = json.loads(capsys.readouterr().out)
    for engine in ("auto", "python"):
        assert main(["replay", str(path), "--json", "--engine", engine]) == 0
        replayed = json.loads(capsys.readouterr().out)
        assert untimed(replayed["rows"], {"engine"}) == untimed(plain["rows"], {"engine"}) \
            == untimed(recorded["rows"], {"engine"})
    assert main(["replay", str(path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:3] == ["mode", "ops/s", "migr"]
    assert main(["replay", str(path), "--strategy", "fifo"]) == 2
    assert "does not apply to a VM trace" in capsys.readouterr().err
    path.write_text(path.read_text().replace(" end ", " nd ", 1))
    assert main(["replay", str(path)]) == 2
    assert "unknown operation 'nd'" in capsys.readouterr().err


def test_no_late_draw_is_nan():
    # a draw without a late access reads and writes as the bare ack time
    trace = record_vms(SMALL.with_(late=0.5), seed=2)
    assert trace.counts()["access"] < trace.counts()["unbind"]
    same(trace, read_vm_trace(trace.to_text().splitlines()))
    plain = next(j for j in range(len(trace.pool_access)) if math.isnan(trace.pool_access[j]))
    assert repr(float(trace.pool_ack[plain])) in trace.to_text()
