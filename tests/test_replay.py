"""Trace replay: metrics on a hand-built trace, the two loops against each other, bad traces."""

import importlib
import io
import json

import numpy as np
import pytest

import pasid
from pasid import InvalidPasid, StateError
from pasid.cli import main
from pasid.sim import _replay_py
from pasid.sim._replaystate import COUNTERS, ReplayState
from pasid.sim.replay import replay, reuse_summary, simulate
from pasid.sim.trace import OP_BIND, OP_GET, TraceBuilder, TraceError, read_trace

from backends import load_backend
from sim_support import ENGINES, HAND_TRACE, TESTED_ENGINES

MAGIC = "pasid-trace 1"


def hand_trace():
    """tests/data/hand.trace: 8 bits, PASID 0 reserved, grace 1, worked by hand below."""
    return read_trace(HAND_TRACE)


@pytest.mark.parametrize("engine, allocator", TESTED_ENGINES)
def test_metrics_on_a_trace_worked_by_hand(engine, allocator):
    # With quarantine:
    #   t0 h0 -> 1 (bound to gpu); t1 h1 -> 2 (limited to nic's 4 bits);
    #   t2 put h0: DRAINING (gpu bound); t3 h2 -> 3; t3.5 gpu touches 1: same life;
    #   t4 gpu unbinds 1: held to max(2 + grace 1, 4 + drain 2) = 6, QUARANTINED;
    #   t5 exit p1 releases 3 (QUARANTINED to 6); put h1: 2 DRAINING (nic bound);
    #   held peaks at 3 (1, 2, 3); t6 1 and 3 FREE, h3 -> 1: reuse 6 - 2 = 4;
    #   t7 nic unbinds 2: release_at max(5 + 1, 7 + 0) = 7 -> FREE at once;
    #   t10 h4 -> 2: reuse 10 - 5 = 5. One 64-PASID block; highest 3.
    run = replay(hand_trace(), "lowest", engine=engine, allocator=allocator)
    assert (run.allocations, run.failures, run.skipped) == (5, 0, 0)
    assert (run.peak_active, run.peak_held) == (2, 3)
    assert run.distances.tolist() == [4.0, 5.0]
    assert (run.stale, run.blocks_peak, run.highest) == (0, 1, 3)
    # Without quarantine (devices detached at release, drain 0, grace kept):
    #   t2 h0 released, QUARANTINED to 3; t3 h2 -> 1 (reuse 1);
    #   t3.5 gpu's late access to h0 hits PASID 1's new life: stale;
    #   t5 h2 (1) and h1 (2) released to 6; t6 h3 -> 1 (reuse 1); t10 h4 -> 2 (reuse 5).
    run = replay(hand_trace(), "lowest", engine=engine, allocator=allocator, quarantine=False)
    assert run.distances.tolist() == [1.0, 1.0, 5.0]
    assert (run.stale, run.peak_held, run.highest) == (1, 2, 2)


def test_without_quarantine_moves_unbinds_to_the_release():
    text = hand_trace().without_quarantine().to_text().splitlines()
    ops = [line for line in text if line[0].isdigit()]
    assert ops[4:6] == ["2 unbind h0 gpu", "2 put h0"]
    assert "5 unbind h1 nic" in ops and "7 unbind h1 nic" not in ops
    assert "device gpu bits=20 drain=0" in text


def test_reuse_summary_definitions():
    distances = np.arange(1, 201, dtype=float)[::-1]      # 200 .. 1
    summary = reuse_summary(distances)
    assert summary["count"] == 200 and summary["min"] == 1.0
    assert summary["p1"] == 2.0                            # rank floor(0.01 * 199) = 1
    assert summary["median"] == 100.5
    hist = summary["hist"]
    assert sum(hist["counts"]) == 200 and hist["edges"][0] == 1.0 and hist["counts"][0] == 1
    assert reuse_summary([])["count"] == 0
    tiny = reuse_summary([0.0, 0.5])
    assert tiny["hist"]["edges"][0] == 0.0 and tiny["hist"]["counts"][0] == 1


@pytest.mark.parametrize("engine, allocator", TESTED_ENGINES)
def test_refused_allocations_skip_their_handle(engine, allocator):
    b = TraceBuilder(bits=2)               # PASIDs 1..3 (0 is reserved)
    handles = [b.alloc(float(i), owner="p") for i in range(5)]
    for h in handles:
        b.bind(5.0, h, "gpu")
        b.put(6.0, h)
    run = replay(b.build(), "lowest", engine=engine, allocator=allocator)
    assert (run.allocations, run.failures, run.skipped) == (3, 2, 4)


def test_engines_agree_on_every_strategy():
    trace = hand_trace()
    for strategy in ("lowest", "cyclic", "fifo", "random"):
        runs = [replay(trace, strategy, engine=e, allocator=a, seed=7) for e, a in ENGINES]
        first = runs[0]
        for other in runs[1:]:
            for name in ("allocations", "failures", "stale", "peak_active", "peak_held",
                         "blocks_peak", "highest"):
                assert getattr(other, name) == getattr(first, name), (strategy, name)
            assert other.distances.tolist() == first.distances.tolist()
            assert other.sample_active.tolist() == first.sample_active.tolist()
            assert other.sample_held.tolist() == first.sample_held.tolist()
            assert other.sample_blocks.tolist() == first.sample_blocks.tolist()


def test_simulate_rows_have_every_metric():
    rows, runs = simulate(hand_trace(), ("lowest", "fifo"))
    assert [r["strategy"] for r in rows] == ["lowest", "fifo"]
    assert rows[0]["stale"] == 0 and rows[0]["stale_no_quarantine"] == 1
    for key in ("ops", "ops_per_s", "failures", "peak_active", "peak_held", "reuse",
                "blocks_peak", "highest"):
        assert key in rows[0]
    assert len(runs) == 2 and runs[0].quarantine


def test_a_runs_repr_is_one_line_with_its_series_as_lengths():
    # repr(Run) printed every reuse distance and sample (thousands of numbers)
    from pasid.sim import generate, preset

    run = replay(generate(preset("default", duration=3_000, lifetime=300), seed=1), "lowest")
    text = repr(run)
    assert len(run.distances) > 100 and len(run.sample_time) > 10
    assert "\n" not in text and len(text) < 600, text
    assert text.startswith("Run(strategy='lowest', quarantine=True, engine=")
    assert f", ops={run.ops}, " in text and f", highest={run.highest}, " in text
    assert f"distances=<float64[{len(run.distances)}]>" in text
    assert f"sample_time=<float64[{len(run.sample_time)}]>" in text
    assert text.endswith(f"sample_blocks=<int64[{len(run.sample_blocks)}]>)")


# bad lines, each named (also read by both text parsers in tests/test_traceio.py)
BAD_LINES = [
    ("nonsense\n", 1, "not a trace"),
    ("pasid-trace 2\n", 1, "unknown trace version"),
    ("pasid-trace 1\n0 alloc h0\n1 fly h0\n", 3, "unknown operation"),
    ("pasid-trace 1\n0 alloc h0\n1 put h1\n", 3, "unknown handle"),
    ("pasid-trace 1\n0 alloc h0\n1 put h0\n2 put h0\n", 4, "released"),
    ("pasid-trace 1\ndevice gpu\n0 alloc h0\n1 unbind h0 gpu\n", 4, "not bound"),
    # every device an operation names is declared (issue 20: a typo is not a new device)
    ("pasid-trace 1\n0 alloc h0\n1 unbind h0 gpu\n", 3,
     r"unknown device 'gpu': the header declares no device \(device NAME"),
    ("pasid-trace 1\ndevice gpu1\n0 alloc h0\n1 bind h0 gpu11\n", 4,
     "unknown device 'gpu11': the header declares gpu1$"),
    ("pasid-trace 1\ndevice gpu1\ndevice nic\n0 alloc h0 p gpu2\n", 4,
     "unknown device 'gpu2': the header declares gpu1, nic$"),
    ("pasid-trace 1\ndevice gpu1\n0 alloc h0\n1 access h0 gpu2\n", 4,
     "unknown device 'gpu2'"),
    # a device accesses a PASID from its bind to its unbind (issue 20, item 8)
    ("pasid-trace 1\ndevice gpu\n0 alloc h0\n1 access h0 gpu\n", 4,
     "access of handle 'h0' by device 'gpu', which is not bound to it"),
    ("pasid-trace 1\ndevice gpu\n0 alloc h0\n0 bind h0 gpu\n1 put h0\n2 access h0 gpu\n"
     "3 unbind h0 gpu\n4 access h0 gpu\n", 8, "access of handle 'h0' by device 'gpu'"),
    ("pasid-trace 1\n5 alloc h0\n1 put h0\n", 3, "backwards"),
    ("pasid-trace 1\n0 alloc h0\n0 alloc h0\n", 3, "allocated twice"),
    ("pasid-trace 1\n0 alloc h0\nbits 8\n", 3, "header"),
    ("pasid-trace 1\ndevice nic bits=4\n0 alloc h0\n0 bind h0 nic\n", 4, "bits"),
    ("pasid-trace 1\n-1 alloc h0\n", 2, "time must be >= 0"),
    ("pasid-trace 1\n0 alloc h0 p1\n1 exit p1\n2 put h0\n", 4, "released"),
    # the allocator's limits: times, graces and drains within +-1e300
    ("pasid-trace 1\n0 alloc h0\n1e301 put h0\n", 3, r"time must be finite and within \+-1e300"),
    ("pasid-trace 1\n1e308 alloc h0\n", 2, r"time must be finite and within \+-1e300"),
    ("pasid-trace 1\n-1e301 alloc h0\n", 2, r"time must be finite and within \+-1e300"),
    ("pasid-trace 1\ngrace 1e301\n", 2, r"grace must be finite and within \+-1e300"),
    ("pasid-trace 1\ngrace -0.5\n", 2, "grace must be >= 0"),
    ("pasid-trace 1\ndevice gpu drain=1e301\n", 2, r"drain must be finite and within \+-1e300"),
    ("pasid-trace 1\nbits 21\n", 2, r"bits must be in 1\.\.20, got 21"),
    ("pasid-trace 1\ndevice gpu bits=0\n", 2, r"device bits must be in 1\.\.20, got 0"),
    # numbers are ASCII decimal: not everything float() and int() take
    ("pasid-trace 1\nnan alloc h0\n", 2, "time must be a decimal number, got 'nan'"),
    ("pasid-trace 1\ninf alloc h0\n", 2, "time must be a decimal number, got 'inf'"),
    ("pasid-trace 1\n0x1p3 alloc h0\n", 2, "time must be a decimal number"),
    ("pasid-trace 1\n1_0 alloc h0\n", 2, "time must be a decimal number, got '1_0'"),
    ("pasid-trace 1\n\u0661 alloc h0\n", 2, "time must be a decimal number"),
    ("pasid-trace 1\ngrace 1_0\n", 2, "grace must be a decimal number"),
    ("pasid-trace 1\nbits 1_6\n", 2, "bits must be an integer, got '1_6'"),
    ("pasid-trace 1\ndevice gpu bits=\u0668\n", 2, "device bits must be an integer"),
    pytest.param("pasid-trace 1\nbits " + "1" * 5000 + "\n", 2, "bits must be an integer",
                 id="bits-of-5000-digits"),     # past int()'s limit
    # a header line is given once, and so is a device's setting
    ("pasid-trace 1\nbits 8\nbits 9\n", 3, "bits declared twice"),
    ("pasid-trace 1\ndevice gpu bits=8 bits=9\n", 2, "device 'gpu': bits given twice"),
    ("pasid-trace 1\ngrace 1\ndevice gpu\ngrace 1\n", 4, "grace declared twice"),
    # a byte-order mark anywhere but at the start is text like any other
    ("pasid-trace 1\n\ufeff0 alloc h0\n", 2, "time must be a decimal number"),
    ("# a comment first\n\ufeffpasid-trace 1\n", 2, "not a trace"),
    ("pasid-trace\ufeff 1\n", 1, "not a trace"),
]


@pytest.mark.parametrize("text, line, message", BAD_LINES)
def test_bad_lines_are_named(text, line, message):
    with pytest.raises(TraceError, match=message) as caught:
        read_trace(io.StringIO(text), name="t")
    assert caught.value.line == line
    assert str(caught.value).startswith(f"t:{line}: ")


@pytest.mark.parametrize("text, value", [
    ("0", 0.0), ("-0", 0.0), ("+1", 1.0), ("1.", 1.0), (".5", 0.5), ("2.5e-3", 0.0025),
    ("1E+2", 100.0), ("1e300", 1e300), ("1e+300", 1e300),
])
def test_decimal_times_read(text, value):
    assert read_trace([MAGIC, f"{text} alloc h0"]).time.tolist() == [value]


@pytest.mark.parametrize("engine, allocator", TESTED_ENGINES)
def test_times_graces_and_drains_at_the_limit_replay(engine, allocator):
    # 1e300 is within the allocator's limit, and a release at 1e300 plus a grace or a
    # drain of 1e300 each is still finite
    trace = read_trace([MAGIC, "grace 1e300", "device gpu drain=1e300", "0 alloc h0",
                        "0 bind h0 gpu", "1e300 put h0", "1e300 unbind h0 gpu",
                        "1e300 alloc h1", "1e300 advance"])
    run = replay(trace, "lowest", engine=engine, allocator=allocator)
    assert (run.ops, run.allocations, run.highest) == (6, 2, 2)


BOM_TRACE = "\ufeffpasid-trace 1\n0 alloc h0\n1 put h0\n"


@pytest.mark.parametrize("form", ["path", "stream", "lines"])
def test_a_byte_order_mark_at_the_start_is_skipped(form, tmp_path):
    path = tmp_path / "bom.trace"
    path.write_text(BOM_TRACE, encoding="utf-8")
    source = {"path": path, "stream": io.StringIO(BOM_TRACE),
              "lines": BOM_TRACE.splitlines()}[form]
    assert read_trace(source).to_text() == read_trace(io.StringIO(BOM_TRACE[1:])).to_text()


def test_a_byte_order_mark_before_a_comment_is_skipped():
    assert len(read_trace(["\ufeff# recorded by hand", MAGIC, "0 alloc h0"])) == 1


def beyond_the_limit(b):
    b.put(1e301, b.alloc(0.0))


def before_zero(b):
    b.alloc(-1e301)


def late_drain(b):
    b.device("gpu", drain=1e301)


def wide_device(b):
    b.device("gpu", bits=21)


@pytest.mark.parametrize("settings, build, message", [
    ({}, beyond_the_limit, r"^built trace:2: time must be finite and within \+-1e300"),
    ({}, before_zero, r"^built trace:1: time must be finite and within \+-1e300"),
    ({"grace": 1e301}, lambda b: None, r"^grace must be finite and within \+-1e300"),
    ({}, late_drain, r"^device 'gpu': drain must be finite and within \+-1e300"),
    ({}, wide_device, r"^device 'gpu': bits must be in 1\.\.20, got 21"),
    ({"bits": 0}, lambda b: None, r"^bits must be in 1\.\.20, got 0"),
])
def test_builder_applies_the_allocators_limits(settings, build, message):
    b = TraceBuilder(**settings)
    build(b)
    with pytest.raises(TraceError, match=message):
        b.build()


# Traces whose first operations are good and whose bad line comes later: the
# whole trace is checked before the replay makes an allocator.
@pytest.mark.parametrize("text, line, message", [
    ("device gpu\n0 alloc h0 p1\n0 bind h0 gpu\n1e301 put h0\n", 5, "time must be finite"),
    ("0 alloc h0 p1\n1e308 advance\n", 3, "time must be finite"),
    ("0 alloc h0 p1\n1 put h0\n-1e301 advance\n", 4, "time must be finite"),
    ("grace 1e301\n0 alloc h0 p1\n", 2, "grace must be finite"),
    ("device gpu drain=1e301\n0 alloc h0 p1\n0 bind h0 gpu\n", 2, "drain must be finite"),
    ("grace 1\nbits 8\ngrace 2\n0 alloc h0 p1\n", 4, "grace declared twice"),
    ("bits 8\nbits 8\n0 alloc h0 p1\n", 3, "bits declared twice"),
])
def test_a_bad_trace_line_stops_pasid_replay_before_any_operation(
        text, line, message, tmp_path, monkeypatch, capsys):
    made = spy_on_allocators(monkeypatch)
    path = tmp_path / "bad.trace"
    path.write_text(f"{MAGIC}\n{text}", encoding="utf-8")
    assert main(["replay", str(path), "--strategy", "lowest"], io.StringIO()) == 2
    assert made == []
    error = capsys.readouterr().err.splitlines()
    assert len(error) == 1 and error[0].startswith(f"pasid: error: {path}:{line}: {message}")


def test_a_trace_with_a_byte_order_mark_replays_from_pasid_replay(tmp_path, monkeypatch):
    made = spy_on_allocators(monkeypatch)
    path = tmp_path / "bom.trace"
    path.write_text(BOM_TRACE, encoding="utf-8")
    out = io.StringIO()
    assert main(["replay", str(path), "--strategy", "lowest", "--json"], out) == 0
    assert len(made) == 2 and json.loads(out.getvalue())["ops"] == 2


def spy_on_allocators(monkeypatch):
    """Record every allocator a replay makes (the default class, ``pasid.PasidAllocator``)."""
    made = []
    real = pasid.PasidAllocator

    def allocator(*args, **kwargs):
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(pasid, "PasidAllocator", allocator)
    return made


def test_text_round_trip():
    trace = hand_trace()
    again = read_trace(io.StringIO(trace.to_text()))
    assert again.to_text() == trace.to_text()
    for column in ("time", "op", "handle", "owner", "device"):
        assert np.array_equal(getattr(again, column), getattr(trace, column))


@pytest.mark.parametrize("owner", ["-", "two words", "has#hash", 7, ""])
def test_builder_refuses_names_that_would_not_read_back(owner):
    with pytest.raises(TraceError, match="owner name"):
        TraceBuilder().alloc(0.0, owner=owner)


def test_builder_fits_needs_a_declared_device():
    with pytest.raises(TraceError, match="FITS device 'nic'"):
        TraceBuilder().alloc(0.0, fits="nic")


def test_builder_errors_name_the_call_in_the_order_added():
    b = TraceBuilder()
    h = b.alloc(5.0)
    b.put(1.0, h)                        # added second, sorts first: used before its alloc
    with pytest.raises(TraceError, match=r"^built trace:2: handle 'h0' used before its alloc"):
        b.build()


# ---------------------------------------------------------------- an error mid-trace

def trace_that_raises_midway(edit):
    """A trace the allocator refuses at its operation 13, after a reuse, releases and
    samples: checked when built, then ``edit`` changes the operation at index 13
    (a get of a handle whose PASID was released, or a bind to a 2-bit device of a
    PASID wider than that). Returns the trace and the index of that operation."""
    b = TraceBuilder(bits=8, grace=1)
    b.device("gpu", bits=8, drain=2)
    b.device("nic", bits=2)
    h = [b.alloc(float(t), owner=f"p{t}") for t in range(6)]    # 0-5: PASIDs 1..6
    b.bind(6.0, h[0], "gpu")                                    # 6
    b.put(7.0, h[0])                                            # 7: DRAINING
    b.put(7.0, h[1])                                            # 8: QUARANTINED to 8
    b.access(7.5, h[0], "gpu")                                  # 9: a late access
    b.unbind(8.0, h[0], "gpu")                                  # 10: QUARANTINED to 10
    b.alloc(9.0, owner="p6")                                    # 11: PASID 2, reuse 2
    b.get(10.0, h[2])                                           # 12
    b.get(11.0, h[3])                                           # 13: the edited one
    b.put(12.0, h[2])
    b.put(12.0, h[3])
    b.exit(13.0, "p5")
    trace = b.build()
    at = 13
    assert trace.op[at] == OP_GET and trace.handle[at] == h[3]
    edit(trace, at, h)
    return trace, at


def get_of_a_released_handle(trace, at, h):
    trace.handle[at] = h[0]             # PASID 1, released at 7, FREE from 10: StateError


def bind_to_a_narrower_device(trace, at, h):
    trace.op[at] = OP_BIND
    trace.device[at] = 1                # nic, 2 bits; h[5] holds PASID 6: InvalidPasid
    trace.handle[at] = h[5]


@pytest.mark.parametrize("edit, error", [(get_of_a_released_handle, StateError),
                                         (bind_to_a_narrower_device, InvalidPasid)])
def test_both_loops_write_back_what_they_did_before_an_error(edit, error):
    # The compiled loop writes its counters into the ReplayState in a finally; the
    # Python loop used to write its tables and counters only when the chunk ended
    # well. Both leave the same state now: what the operations before the error did.
    results = []
    for engine, name in ENGINES:
        trace, at = trace_that_raises_midway(edit)
        a = load_backend(name).PasidAllocator(trace.bits, grace=trace.grace, seed=0)
        st = ReplayState(a, samples=8, end=trace.duration)
        (chunk,) = trace.chunks()
        st.take(chunk)
        loop = (importlib.import_module("pasid.sim._replay") if engine == "compiled"
                else _replay_py).run
        with pytest.raises(error):
            loop(a, chunk, st, 0, len(chunk))
        assert st.counter("done") == at
        stats = a.stats()
        assert (st.counter("active"), st.counter("held")) == (
            stats["active"], stats["draining"] + stats["quarantined"])
        ndistances, nsamples = st.counter("distances"), st.counter("samples")
        results.append({
            "counters": dict(zip(COUNTERS, st.counters.tolist())),
            "pasid": st.pasid.tolist(), "generation": st.generation.tolist(),
            "last_release": st.last_release.tolist(), "block_live": st.block_live.tolist(),
            "distances": st.distances[:ndistances].tolist(),
            "samples": [column[:nsamples].tolist() for column in
                        (st.sample_active, st.sample_held, st.sample_blocks)],
        })
    first = results[0]
    assert first["counters"]["allocations"] == 7 and first["distances"] == [2.0]
    assert first["pasid"] == [1, 2, 3, 4, 5, 6, 2] and first["counters"]["samples"] > 0
    for other in results[1:]:
        assert other == first


# ---------------------------------------------------------------- a chunk at a time

def run_fields(run):
    """Every field of a Run but the wall time, arrays as lists."""
    fields = dict(vars(run))
    del fields["seconds"]
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in fields.items()}


@pytest.mark.parametrize("engine, allocator", TESTED_ENGINES)
@pytest.mark.parametrize("quarantine", [True, False])
def test_a_replay_fed_in_chunks_is_the_replay_of_the_whole(engine, allocator, quarantine):
    # Issue 17: the replay takes a trace a chunk at a time (its tables grow with the
    # handles named so far); whatever the split, the Run is the same, samples included.
    from pasid.sim.replay import Replayer
    from pasid.sim.workload import generate, preset

    trace = generate(preset("exhaustion", duration=4000), 3)
    if not quarantine:
        trace = trace.without_quarantine()
    runs = []
    for size in (None, 1, 97, 1000):
        replayer = Replayer(trace, "fifo", quarantine=quarantine, engine=engine,
                            allocator=allocator, samples=40, end=trace.duration)
        for chunk in trace.chunks(size):
            replayer.feed(chunk)
        runs.append(run_fields(replayer.finish()))
    assert runs[0]["ops"] == len(trace) and runs[0]["allocations"] > 0
    for other in runs[1:]:
        assert other == runs[0]


def test_simulate_of_a_workload_streams_what_the_whole_trace_gives():
    # simulate(workload) generates, checks and rewrites a chunk at a time and feeds
    # every replay each chunk in turn; the rows are those of the whole generated trace
    from pasid.sim.workload import generate, preset

    workload = preset("default", duration=6000)
    streamed, _ = simulate(workload, seed=4)
    whole, _ = simulate(generate(workload, 4), seed=4)

    def untimed(rows):
        return [{k: v for k, v in r.items() if k not in ("seconds", "ops_per_s")} for r in rows]

    assert untimed(streamed) == untimed(whole)
    assert streamed[0]["ops"] == len(generate(workload, 4)) > 1000


def test_a_stream_without_an_end_is_sampled_evenly_at_most_samples_times():
    # With no end known, the grid starts over the first chunk and doubles its spacing
    # (every other point kept) whenever the trace runs past it.
    from pasid.sim.replay import Replayer
    from pasid.sim.workload import generate, preset

    trace = generate(preset("default", duration=5000), 1)
    known = Replayer(trace, "lowest", samples=50, end=trace.duration)
    unknown = Replayer(trace, "lowest", samples=50)
    for chunk in trace.chunks(64):
        known.feed(chunk)
        unknown.feed(chunk)
    a, b = known.finish(), unknown.finish()
    assert len(a.sample_time) == 50
    assert 25 <= len(b.sample_time) <= 50
    steps = np.diff(b.sample_time)
    assert np.allclose(steps, steps[0]) and b.sample_time[0] == 0
    assert b.sample_time[-1] <= trace.duration < b.sample_time[-1] + 2 * steps[0]
    # a sample at a time both grids have is the same
    common = np.isin(b.sample_time, a.sample_time)
    for column in ("sample_active", "sample_held", "sample_blocks"):
        assert np.array_equal(getattr(b, column)[common],
                              getattr(a, column)[np.isin(a.sample_time, b.sample_time)])


# ---------------------------------------------------------------- what the metrics mean
# Each test pins a sentence of the README's Metrics section (issue 20, item 8).

def text_trace(*lines):
    return read_trace([MAGIC, *lines], name="t")


@pytest.mark.parametrize("engine, allocator", TESTED_ENGINES)
def test_fifo_queues_pasids_freed_together_in_ascending_order(engine, allocator):
    # grace 10: PASID 2 released at 1 (FREE at 11), PASID 1 at 2 (FREE at 12)
    head = ["bits 2", "grace 10", "0 alloc a", "0 alloc b", "0 alloc c", "1 put b", "2 put a"]
    together = replay(text_trace(*head, "20 alloc d"), "fifo", engine=engine,
                      allocator=allocator)
    assert together.distances.tolist() == [18.0]            # PASID 1: reclaimed with 2 at 20
    apart = replay(text_trace(*head, "11.5 advance", "20 alloc d"), "fifo", engine=engine,
                   allocator=allocator)
    assert apart.distances.tolist() == [19.0]               # PASID 2: FREE first, at 11.5


@pytest.mark.parametrize("engine, allocator", TESTED_ENGINES)
def test_peaks_count_after_every_operation_and_samples_after_the_first_at_their_time(
        engine, allocator):
    first = ["0 alloc a", "0 alloc b", "1 alloc c", "1 put a", "2 advance"]
    then = ["0 alloc a", "0 alloc b", "1 put a", "1 alloc c", "2 advance"]
    run = replay(text_trace(*first), engine=engine, allocator=allocator, samples=3)
    assert run.peak_active == 3                 # between two operations at time 1
    assert run.sample_time.tolist() == [0.0, 1.0, 2.0]
    assert run.sample_active.tolist() == [1, 3, 2]    # each after the first op at its time
    assert replay(text_trace(*then), engine=engine, allocator=allocator).peak_active == 2


@pytest.mark.parametrize("engine, allocator", TESTED_ENGINES)
def test_fits_asks_for_the_devices_width_and_pasid_0_is_reserved(engine, allocator):
    # max = 2**min(bits of the device, the trace's bits) - 1, from 1: nic's 2 bits hold 3
    fits = [f"{i} alloc h{i} - nic" for i in range(5)]
    run = replay(text_trace("bits 8", "device nic bits=2", *fits), engine=engine,
                 allocator=allocator)
    assert (run.allocations, run.failures, run.highest) == (3, 2, 3)
    run = replay(text_trace("bits 3", "device gpu bits=20", *[f.replace("nic", "gpu")
                                                               for f in fits]),
                 engine=engine, allocator=allocator)
    assert (run.allocations, run.failures, run.highest) == (5, 0, 5)


def test_nothing_reused_gives_null_percentiles_and_an_empty_histogram():
    assert reuse_summary([]) == {"count": 0, "min": None, "p1": None, "median": None,
                                 "hist": {"edges": [], "counts": []}}
    zero = reuse_summary([0.0, 0.0, 1.0])       # zero distances: the first bin [0, 2**-10)
    assert zero["hist"]["edges"][:2] == [0.0, 2.0 ** -10] and zero["hist"]["counts"][0] == 2
    rows, _ = simulate(text_trace("0 alloc a", "1 put a"), ("lowest",))
    assert json.loads(json.dumps(rows))[0]["reuse"]["median"] is None


def test_stale_with_quarantine_is_zero_by_rule():
    # an access after the unbind cannot be written; before it, the PASID is not reused
    with pytest.raises(TraceError, match="t:6: access of handle 'a' by device 'gpu', which "
                                         "is not bound to it"):
        text_trace("device gpu", "0 alloc a", "0 bind a gpu", "1 unbind a gpu", "2 access a gpu")
    rows, _ = simulate(text_trace("device gpu drain=5", "0 alloc a", "0 bind a gpu", "1 put a",
                                  "2 alloc b", "3 access a gpu", "4 unbind a gpu"), ("lowest",))
    assert (rows[0]["stale"], rows[0]["stale_no_quarantine"]) == (0, 1)


def test_fifo_queues_an_exits_pasids_in_ascending_order(backend):
    # owner p holds 2, then 1 (allocated later): its exit frees both in one call, and
    # they join the fifo queue ascending, not in the order the owner got them
    a = backend.PasidAllocator(2, strategy="fifo")
    x, y, z = a.alloc("q"), a.alloc("p"), a.alloc("q")
    a.put(x)
    w = a.alloc("p")
    assert (x, y, z, w) == (1, 2, 3, 1)
    assert sorted(a.exit_owner("p")) == [1, 2]
    assert (a.alloc(), a.alloc()) == (1, 2)
