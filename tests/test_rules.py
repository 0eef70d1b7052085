"""One home per rule: what ``pasid._args`` and ``pasid._state`` define is what every
part checks (the API, the snapshot format, traces, workloads, the simulator, the
sweep, the command line), with one message."""

import io

import pytest

from pasid import SnapshotError, State, _args, _snapshot, _state
from pasid.cli import main
from pasid.sim.replay import replay, simulate
from pasid.sim.sweep import sweep
from pasid.sim.trace import TraceBuilder, TraceError, read_trace
from pasid.sim.workload import DeviceSpec, Workload, preset

from sim_support import HAND_TRACE

STRATEGY_MESSAGE = "strategy must be one of lowest, cyclic, fifo, random, got 'best'"
WIDTH_MESSAGE = f"bits must be in 1..{_args.MAX_BITS}, got {_args.MAX_BITS + 1}"


def message_of(call):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return str(info.value)


def test_the_strategy_rule_has_one_message():
    assert message_of(lambda: _args.as_strategy("best")) == STRATEGY_MESSAGE


def test_the_api_refuses_a_strategy_in_those_words(backend):
    assert message_of(lambda: backend.PasidAllocator(strategy="best")) == STRATEGY_MESSAGE


def test_the_simulator_refuses_a_strategy_in_those_words():
    trace = read_trace(HAND_TRACE)
    assert message_of(lambda: replay(trace, "best")) == STRATEGY_MESSAGE
    steps = []
    assert message_of(lambda: simulate(trace, ["lowest", "best"], progress=lambda *step:
                                       steps.append(step))) == STRATEGY_MESSAGE
    assert steps == []                  # every name checked before the first replay


def test_the_sweep_refuses_a_strategy_in_those_words(tmp_path):
    out = tmp_path / "rows.jsonl"
    assert message_of(lambda: sweep("default", {}, ["best"], 1, out=out, workers=1)
                      ) == STRATEGY_MESSAGE
    assert not out.exists()


def test_the_command_line_refuses_a_strategy_in_those_words(capsys):
    assert main(["replay", str(HAND_TRACE), "--strategy", "best"], io.StringIO()) == 2
    assert capsys.readouterr().err == f"pasid: error: {STRATEGY_MESSAGE}\n"


def test_a_snapshot_refuses_a_strategy_in_those_words(backend):
    state = backend.PasidAllocator(bits=4)._export()
    state["strategy"] = "best"
    with pytest.raises(SnapshotError) as info:
        backend.PasidAllocator.from_bytes(_snapshot.dumps(state))
    assert str(info.value) == f"inconsistent snapshot: {STRATEGY_MESSAGE}"


def test_the_width_rule_has_one_message(backend):
    wide = _args.MAX_BITS + 1
    assert message_of(lambda: _args.as_bits(wide)) == WIDTH_MESSAGE
    assert message_of(lambda: backend.PasidAllocator(bits=wide)) == WIDTH_MESSAGE
    assert message_of(lambda: TraceBuilder(bits=wide).build()) == WIDTH_MESSAGE
    assert message_of(lambda: read_trace(io.StringIO(f"pasid-trace 1\nbits {wide}\n"))
                      ) == f"trace:2: {WIDTH_MESSAGE}"
    assert message_of(lambda: preset("default", bits=wide)
                      ) == f"workload 'default': {WIDTH_MESSAGE}"
    assert message_of(lambda: DeviceSpec("nic", bits=wide, drain=1, ack=1)
                      ) == f"device 'nic': {WIDTH_MESSAGE}"


def test_the_widest_space_is_the_same_everywhere(backend):
    widest = _args.MAX_BITS
    assert backend.PasidAllocator(bits=widest, reserved=()).bits == widest
    assert TraceBuilder().build().bits == widest
    assert read_trace(io.StringIO("pasid-trace 1\n")).bits == widest
    assert DeviceSpec("nic", drain=1, ack=1).bits == widest
    state = backend.PasidAllocator(bits=4)._export()
    state["devices"] = [("gpu", widest, 0.0)]
    assert backend.PasidAllocator.from_bytes(_snapshot.dumps(state)).bits == 4
    state["devices"] = [("gpu", widest + 1, 0.0)]
    with pytest.raises(SnapshotError, match="device bits"):
        backend.PasidAllocator.from_bytes(_snapshot.dumps(state))


@pytest.mark.parametrize("value, message", [
    (1e301, "arrival must be finite and within +-1e300, got 1e+301"),
    (float("inf"), "arrival must be finite and within +-1e300, got inf"),
    (-1, "arrival must be >= 0, got -1.0"),
    ([1], "arrival must be a number, not list"),
])
def test_a_workloads_times_follow_the_allocators_rules(value, message):
    # the same words as the allocator's grace and drain, and the trace's times
    assert message_of(lambda: preset("default", arrival=value)
                      ) == f"workload 'default': {message}"
    assert message_of(lambda: _args.as_duration(value, "arrival")) == message


def test_a_workload_at_the_time_limit_is_accepted():
    base = preset("default")
    assert Workload("far", duration=_args.MAX_TIME, arrival=0, lifetime=_args.MAX_TIME,
                    devices=base.devices).duration == 1e300


def test_a_trace_at_the_workloads_limit_is_refused_by_the_trace_in_the_same_words():
    builder = TraceBuilder()
    builder.alloc(1e301)
    with pytest.raises(TraceError, match=r"time must be finite and within \+-1e300"):
        builder.build()


def test_the_state_codes_are_the_enums():
    codes = (_state.FREE, _state.RESERVED, _state.ACTIVE, _state.DRAINING, _state.QUARANTINED)
    assert codes == tuple(State) and all(type(code) is int for code in codes)
    assert _args.STATE_NAMES == tuple(state.name for state in State)
