"""One home per rule: what ``pasid._args`` and ``pasid._state`` define is what every
part checks (the API, the snapshot format, traces, workloads, the simulator, the
sweep, the command line), with one message."""

import io

import pytest

from pasid import SnapshotError, _args, _snapshot
from pasid.cli import main
from pasid.sim.replay import replay, simulate
from pasid.sim.sweep import sweep
from pasid.sim.trace import read_trace

from sim_support import HAND_TRACE

STRATEGY_MESSAGE = "strategy must be one of lowest, cyclic, fifo, random, got 'best'"


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

