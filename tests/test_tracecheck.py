"""The chunk-fed Checker and Detacher (``pasid.sim.tracecheck``), both twins, against the
old whole-trace ``check`` and ``_detach_at_release`` (``tests/trace_reference.py``).

Every test takes ``twin``: the compiled classes (``pasid.sim._tracecheck``) and the
Python ones; with ``PASID_NO_EXTENSION=1`` only the Python ones. A compiled module that
fails to import is an error, never a skip.
"""

import importlib.machinery
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pasid.sim import trace as trace_module
from pasid.sim import tracecheck
from pasid.sim.chunk import Chunk, concatenate
from pasid.sim.trace import (
    OP_ACCESS, OP_ADVANCE, OP_ALLOC, OP_BIND, OP_EXIT, OP_GET, OP_PUT, OP_UNBIND, Device, Trace,
    TraceBuilder, TraceError, read_trace,
)
from pasid.sim.workload import PRESETS, generate, preset

from backends import NO_EXTENSION
from trace_reference import error_of, first_error, old_check, old_detach

TWINS = ["python"] if NO_EXTENSION else ["compiled", "python"]
COLUMNS = ("time", "op", "handle", "owner", "device")


@pytest.fixture(params=TWINS, scope="module")
def twin(request):
    """``(Checker, Detacher)`` of one twin."""
    return tracecheck.implementation(request.param)


# ---------------------------------------------------------------- helpers

def split(trace, cuts):
    """The trace as chunks cut before each index in ``cuts`` (repeats: empty chunks),
    numbered as :meth:`Trace.chunks` numbers them."""
    n = len(trace.op)
    bounds = [0] + sorted(c for c in cuts if 0 <= c <= n) + [n]
    chunks = []
    handles = owners = 0
    for start, stop in zip(bounds, bounds[1:]):
        if stop < n:
            if stop > start:
                handles = min(len(trace.handles),
                              max(handles, int(trace.handle[start:stop].max()) + 1))
                owners = min(len(trace.owners), max(owners, int(trace.owner[start:stop].max()) + 1))
        else:
            handles, owners = len(trace.handles), len(trace.owners)
        chunks.append(Chunk(
            time=trace.time[start:stop], op=trace.op[start:stop],
            handle=trace.handle[start:stop], owner=trace.owner[start:stop],
            device=trace.device[start:stop],
            lines=None if trace.lines is None else trace.lines[start:stop], start=start,
            handles=handles, owners=owners, devices=tuple(trace.devices)))
    return chunks


def checked(twin, trace, chunks=None):
    """``(message, line)`` of the twin's Checker fed ``chunks`` (default: the whole trace
    in one), or None."""
    checker_class = twin[0]
    try:
        checker = checker_class(trace.header())
        for chunk in chunks if chunks is not None else trace.chunks():
            checker.feed(chunk)
    except TraceError as error:
        return str(error), error.line
    return None


def detached(twin, trace, chunks=None):
    """The twin's rewrite of ``chunks`` (default: the whole trace), as one chunk."""
    detacher = twin[1](trace.header())
    out = []
    start = 0
    for chunk in chunks if chunks is not None else trace.chunks():
        piece = detacher.feed(chunk)
        assert piece.start == start
        start += len(piece.op)
        out.append(piece)
    return concatenate(out)


def assert_same_rewrite(chunk, expected):
    for name in COLUMNS:
        got, want = getattr(chunk, name), getattr(expected, name)
        assert got.dtype == want.dtype and got.tolist() == want.tolist(), name
    if expected.lines is None:
        assert chunk.lines is None
    else:
        assert chunk.lines.tolist() == expected.lines.tolist()
    assert list(chunk.devices) == expected.devices
    assert all(d.drain == 0.0 for d in chunk.devices)


def times_are_good(trace):
    t = trace.time
    return bool(np.all((t >= 0) & (t <= 1e300)) and np.all(np.diff(t) >= 0))


def without_lines(trace):
    return Trace(bits=trace.bits, grace=trace.grace, devices=trace.devices, owners=trace.owners,
                 handles=trace.handles, time=trace.time, op=trace.op, handle=trace.handle,
                 owner=trace.owner, device=trace.device, lines=None, source=trace.source)


# ---------------------------------------------------------------- the twins in use

@pytest.mark.skipif(NO_EXTENSION, reason="PASID_NO_EXTENSION=1 selects the Python twins")
def test_the_compiled_twin_is_in_use():
    from pasid.sim import _tracecheck

    assert _tracecheck.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert (tracecheck.Checker, tracecheck.Detacher) == (_tracecheck.Checker, _tracecheck.Detacher)
    assert tracecheck.ENGINE == "compiled"
    assert tracecheck.implementation("compiled") == (_tracecheck.Checker, _tracecheck.Detacher)


@pytest.mark.skipif(not NO_EXTENSION, reason="only under PASID_NO_EXTENSION=1")
def test_no_extension_selects_the_python_twins():
    assert (tracecheck.Checker, tracecheck.Detacher) == (tracecheck.PyChecker,
                                                         tracecheck.PyDetacher)
    assert tracecheck.ENGINE == "python"


def test_implementation_names_an_engine():
    assert tracecheck.implementation("python") == (tracecheck.PyChecker, tracecheck.PyDetacher)
    with pytest.raises(ValueError, match="engine must be"):
        tracecheck.implementation("fast")


# ---------------------------------------------------------------- generated traces

@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_traces_check_and_rewrite_like_the_old_functions(twin, name, seed):
    trace = generate(preset(name).with_(duration=3000.0), seed)
    expected = old_detach(trace)
    for t in (trace, without_lines(trace)):
        want = old_detach(t)
        assert checked(twin, t) is None
        assert_same_rewrite(detached(twin, t), want)
        for size in (1, 7, 100, 1000):
            assert checked(twin, t, t.chunks(size)) is None
            assert_same_rewrite(detached(twin, t, t.chunks(size)), want)
    # and the wrappers in trace.py
    assert trace_module.check(trace) is trace
    rewritten = trace.without_quarantine()
    assert rewritten is trace.without_quarantine()        # kept
    if trace.lines is None:         # a generated trace names its operations by index
        assert rewritten.lines is None and expected.lines is None
    for name in COLUMNS + (("lines",) if trace.lines is not None else ()):
        assert getattr(rewritten, name).tolist() == getattr(expected, name).tolist()
    assert rewritten.devices == expected.devices


def test_hand_trace_rewrite_and_bindings(twin):
    from sim_support import HAND_TRACE

    trace = read_trace(HAND_TRACE)
    assert_same_rewrite(detached(twin, trace), old_detach(trace))
    checker = twin[0](trace.header())
    checker.feed(next(trace.chunks()))
    assert checker.bindings == 0           # every bind of the hand trace is unbound


# ---------------------------------------------------------------- Hypothesis traces

BAD_TIMES = [-1.0, -1e301, 1e301, float("nan"), float("inf")]


@st.composite
def traces(draw, valid):
    """A random trace over few handles, owners and devices. ``valid``: every operation
    follows the history rules; else any operation may break any rule (or none)."""
    bits = draw(st.sampled_from([4, 8, 20]))
    ndev = draw(st.integers(1, 3))
    devices = [Device(f"d{i}", draw(st.sampled_from([2, 4, 8, 20])),
                      draw(st.sampled_from([0.0, 1.5]))) for i in range(ndev)]
    nowners = draw(st.integers(1, 3))
    steps = draw(st.integers(0, 40))
    numbers = draw(st.permutations(range(max(steps, 1))))   # handles not in alloc order
    refs, limit, owner_of, bound = {}, {}, {}, {}
    allocated = []
    rows = []
    t = 0.0
    for _ in range(steps):
        wild = not valid and draw(st.integers(0, 5)) == 0
        t += draw(st.sampled_from([0.0, 0.0, 0.5, 1.0]))
        time = t
        if wild and draw(st.booleans()):
            time = draw(st.sampled_from(BAD_TIMES + [t - 0.75]))
        kind = draw(st.sampled_from([OP_ALLOC, OP_ALLOC, OP_GET, OP_PUT, OP_PUT, OP_BIND,
                                     OP_BIND, OP_UNBIND, OP_UNBIND, OP_ACCESS, OP_EXIT,
                                     OP_ADVANCE]))
        if wild:
            op = draw(st.sampled_from([kind, kind, 8, 200]))
            rows.append((time, op, draw(st.integers(-2, steps + 1)),
                         draw(st.integers(-2, nowners + 1)), draw(st.integers(-2, ndev + 1))))
            continue
        live = [h for h in allocated if refs[h] > 0]
        if kind == OP_ALLOC or (kind in (OP_GET, OP_PUT, OP_BIND) and not live):
            if len(allocated) == len(numbers):
                continue
            h = numbers[len(allocated)]
            o = draw(st.integers(-1, nowners - 1))
            d = draw(st.integers(-1, ndev - 1))
            allocated.append(h)
            refs[h] = 1
            limit[h] = min(bits, devices[d].bits) if d >= 0 else bits
            owner_of[h] = o
            rows.append((time, OP_ALLOC, h, o, d))
        elif kind in (OP_GET, OP_PUT):
            h = draw(st.sampled_from(live))
            refs[h] += 1 if kind == OP_GET else -1
            rows.append((time, kind, h, -1, -1))
        elif kind == OP_BIND:
            h = draw(st.sampled_from(live))
            wide = [d for d in range(ndev) if devices[d].bits >= limit[h]]
            if not wide:
                continue
            d = draw(st.sampled_from(wide))
            bound[(h, d)] = bound.get((h, d), 0) + 1
            rows.append((time, OP_BIND, h, -1, d))
        elif kind == OP_UNBIND:
            pairs = sorted(p for p, count in bound.items() if count)
            if not pairs:
                continue
            h, d = draw(st.sampled_from(pairs))
            bound[(h, d)] -= 1
            rows.append((time, OP_UNBIND, h, -1, d))
        elif kind == OP_ACCESS:          # by a bound device: before or after the release
            pairs = sorted(p for p, count in bound.items() if count)
            if not pairs:
                continue
            h, d = draw(st.sampled_from(pairs))
            rows.append((time, OP_ACCESS, h, -1, d))
        elif kind == OP_EXIT:
            o = draw(st.integers(0, nowners - 1))
            for h in allocated:
                if owner_of[h] == o:
                    refs[h] = 0
            rows.append((time, OP_EXIT, -1, o, -1))
        else:
            rows.append((time, OP_ADVANCE, -1, -1, -1))
    n = len(rows)
    columns = list(zip(*rows)) if rows else [()] * 5
    lines = (np.arange(n, dtype=np.int64) * 2 + 3) if draw(st.booleans()) else None
    return Trace(bits=bits, grace=0.5, devices=devices,
                 owners=[f"p{i}" for i in range(nowners)],
                 handles=[f"h{i}" for i in range(max(steps, 1))],
                 time=np.array(columns[0], dtype=np.float64).reshape(n),
                 op=np.array(columns[1], dtype=np.uint8).reshape(n),
                 handle=np.array(columns[2], dtype=np.int32).reshape(n),
                 owner=np.array(columns[3], dtype=np.int32).reshape(n),
                 device=np.array(columns[4], dtype=np.int32).reshape(n),
                 lines=lines, source="hyp")


def cut_points(n):
    return st.lists(st.integers(0, n), max_size=6)


@given(data=st.data())
@settings(max_examples=60)
def test_valid_random_traces_agree_with_the_old_functions(twin, data):
    trace = data.draw(traces(valid=True))
    assert error_of(old_check, trace) is None
    want = old_detach(trace)
    assert checked(twin, trace) is None
    assert_same_rewrite(detached(twin, trace), want)
    chunks = split(trace, data.draw(cut_points(len(trace.op))))
    assert checked(twin, trace, chunks) is None
    assert_same_rewrite(detached(twin, trace, chunks), want)


@given(data=st.data())
@settings(max_examples=150)
def test_any_random_trace_gives_the_first_error_of_the_old_check(twin, data):
    trace = data.draw(traces(valid=False))
    want = first_error(trace)
    assert checked(twin, trace) == want
    assert checked(twin, trace, split(trace, data.draw(cut_points(len(trace.op))))) == want
    old = error_of(old_check, trace)
    assert (old is None) == (want is None)
    if times_are_good(trace):
        assert old == want       # the old check's own error, word for word
    if want is None:
        assert_same_rewrite(detached(twin, trace), old_detach(trace))


# ---------------------------------------------------------------- the suite's bad traces

def replay_cases():
    """The texts of tests/test_replay.py's bad-trace cases."""
    import test_replay

    texts = []
    for test, prefix in [(test_replay.test_bad_lines_are_named, ""),
                         (test_replay.test_a_bad_trace_line_stops_pasid_replay_before_any_operation,
                          test_replay.MAGIC + "\n")]:
        for mark in test.pytestmark:
            if mark.name == "parametrize":
                for case in mark.args[1]:
                    values = case.values if hasattr(case, "values") else case
                    texts.append(prefix + values[0])
    return texts


@pytest.mark.parametrize("text", replay_cases())
def test_the_suites_bad_traces_give_the_old_checks_errors(twin, text, monkeypatch):
    captured = []
    monkeypatch.setattr(trace_module, "check", captured.append)   # what _parse would check
    try:
        read_trace(io.StringIO(text), name="t")
    except TraceError:
        pass                                 # the parser's own error: not a check case
    monkeypatch.undo()
    if not captured:
        return
    trace = captured[0]
    want = error_of(old_check, trace)
    assert want is not None and want == first_error(trace)
    assert checked(twin, trace) == want
    for size in (1, 2):
        assert checked(twin, trace, trace.chunks(size)) == want
    assert checked(twin, without_lines(trace)) == error_of(old_check, without_lines(trace))


def changed(column, op, value, seed=1):
    """tests/test_races.py's traces changed after they were checked."""
    trace = generate(preset("default").with_(duration=3000.0), seed)
    at = np.flatnonzero(trace.op == op)[2]
    if value == "unbound":          # a device its handle has not bound
        bound = trace.device[:at][(trace.op[:at] == OP_BIND)
                                  & (trace.handle[:at] == trace.handle[at])]
        value = min(set(range(len(trace.devices))) - set(bound.tolist()))
    getattr(trace, column)[at] = value
    return trace


@pytest.mark.parametrize("column, op, value", [
    ("handle", OP_ALLOC, 10**7), ("handle", OP_ALLOC, -5), ("owner", OP_EXIT, 10**6),
    ("device", OP_BIND, 99), ("op", OP_ALLOC, 200), ("op", OP_ALLOC, OP_GET),
    ("time", OP_BIND, -2.0), ("time", OP_PUT, float("nan")),
    ("device", OP_UNBIND, "unbound"),
])
def test_changed_traces_give_the_old_checks_errors(twin, column, op, value):
    trace = changed(column, op, value)
    want = first_error(trace)
    assert want is not None
    assert checked(twin, trace) == want
    for size in (1, 50, 333):
        assert checked(twin, trace, trace.chunks(size)) == want
    if times_are_good(trace):
        assert want == error_of(old_check, trace)
    assert checked(twin, without_lines(trace)) == first_error(without_lines(trace))


@pytest.mark.parametrize("settings, build", [
    ({"grace": 1e301}, None), ({"grace": -1.0}, None), ({"bits": 0}, None),
    ({"bits": 21}, None), ({}, "drain"), ({}, "bits"),
])
def test_bad_headers_give_the_old_checks_errors(twin, settings, build):
    trace = TraceBuilder().build()
    trace.bits = settings.get("bits", trace.bits)
    trace.grace = settings.get("grace", trace.grace)
    if build == "drain":
        trace.devices = [Device("gpu", 20, 1e301)]
    elif build == "bits":
        trace.devices = [Device("gpu", 21, 0.0)]
    want = error_of(old_check, trace)
    assert want is not None and want[1] is None
    assert checked(twin, trace) == want


def test_the_first_bad_operation_comes_first_even_before_a_bad_time(twin):
    # By design: the old check ran the time rules over the whole trace first; a
    # stream cannot look ahead, so the twins report the first bad operation.
    trace = Trace(bits=20, grace=0.0, devices=[], owners=[], handles=["h0"],
                  time=np.array([0.0, 1.0, 2.0, 1e301]),
                  op=np.array([OP_ALLOC, OP_PUT, OP_PUT, OP_ADVANCE], dtype=np.uint8),
                  handle=np.array([0, 0, 0, -1], dtype=np.int32),
                  owner=np.full(4, -1, dtype=np.int32), device=np.full(4, -1, dtype=np.int32),
                  lines=np.arange(1, 5, dtype=np.int64), source="t")
    assert error_of(old_check, trace) == (
        "t:4: time must be finite and within +-1e300, got 1e+301", 4)
    want = ("t:3: put of handle 'h0', which has been released", 3)
    assert first_error(trace) == want
    assert checked(twin, trace) == want


# ---------------------------------------------------------------- the objects' contract

def test_a_checker_that_raised_is_done(twin):
    b = TraceBuilder()
    h = b.alloc(0.0)
    b.put(1.0, h)
    good = b.build()
    bad = changed("op", OP_ALLOC, 200)
    checker = twin[0](bad.header())
    with pytest.raises(TraceError):
        for chunk in bad.chunks(100):
            checker.feed(chunk)
    assert checker.failed
    with pytest.raises(RuntimeError, match="Checker raised at an earlier operation"):
        checker.feed(next(good.chunks()))
    detacher = twin[1]()
    with pytest.raises(TraceError, match="unbind needs a device"):
        detacher.feed(next(changed("device", OP_UNBIND, 99).chunks()))
    with pytest.raises(RuntimeError, match="Detacher raised"):
        detacher.feed(next(good.chunks()))


def test_chunks_come_in_order_and_typed(twin):
    trace = generate(preset("default").with_(duration=500.0), 0)
    first, second = list(trace.chunks(len(trace) // 2 + 1))
    for cls in twin:
        with pytest.raises(ValueError, match="chunk starts at operation"):
            cls(trace.header()).feed(second)
    wrong = Chunk(time=first.time, op=first.op, handle=first.handle.astype(np.int64),
                  owner=first.owner, device=first.device, lines=None, start=0,
                  handles=first.handles, owners=first.owners, devices=first.devices)
    for cls in twin:
        with pytest.raises(TypeError, match="handle must be C-contiguous int32"):
            cls(trace.header()).feed(wrong)
    short = Chunk(time=first.time[:-1], op=first.op, handle=first.handle, owner=first.owner,
                  device=first.device, lines=None, start=0, handles=first.handles,
                  owners=first.owners, devices=first.devices)
    for cls in twin:
        with pytest.raises(TraceError, match="trace columns differ in length"):
            cls(trace.header()).feed(short)


def test_bindings_follow_the_live_pairs(twin):
    # many pairs bound at once, then all unbound: the table empties (and shrinks)
    b = TraceBuilder()
    handles = [b.alloc(0.0) for _ in range(3000)]
    for h in handles:
        b.bind(1.0, h, "gpu")
        b.bind(1.0, h, "nic")
    for h in handles:
        b.unbind(2.0, h, "gpu")
        b.unbind(2.0, h, "nic")
    trace = b.build()
    checker, detacher = twin[0](trace.header()), twin[1](trace.header())
    seen = []
    for chunk in trace.chunks(3000):
        checker.feed(chunk)
        detacher.feed(chunk)
        seen.append((checker.bindings, detacher.bindings))
    assert seen == [(0, 0), (3000, 3000), (6000, 6000), (3000, 3000), (0, 0)]


def test_an_exit_detaches_in_handle_order(twin):
    # handles numbered out of allocation order: the inserted unbinds follow the numbers
    b = TraceBuilder()
    b.device("gpu", drain=1)
    late = b.alloc(5.0, owner="p")       # h0, allocated after h1 and h2
    early = [b.alloc(1.0, owner="p"), b.alloc(2.0, owner="p")]
    for h in [late] + early:
        b.bind(6.0, h, "gpu")
    b.exit(7.0, "p")
    trace = b.build()
    out = detached(twin, trace)
    assert_same_rewrite(out, old_detach(trace))
    unbinds = out.handle[out.op == OP_UNBIND].tolist()
    assert unbinds == [0, 1, 2]


# ---------------------------------------------------------------- the dead given back

DEAD = 3000     # handles that die at once: groups of them given back (the compiled twin)


def mostly_dead(last):
    """DEAD handles allocated, bound and released (their devices unbound): all dead;
    then one more live handle, and ``last(b, h)`` adds the operations on handle 7
    (dead by then) the test is about."""
    b = TraceBuilder(bits=20)
    b.device("gpu", drain=1)
    handles = []
    for i in range(DEAD):
        h = b.alloc(float(i), owner=f"p{i}")
        b.bind(float(i), h, "gpu")
        b.put(float(i), h)
        b.unbind(float(i), h, "gpu")
        handles.append(h)
    b.alloc(float(DEAD), owner="alive")
    last(b, handles[7])
    b.advance(float(DEAD + 1))
    return unchecked(b)


def unchecked(b):
    """The builder's operations as a Trace, in the order added, not checked (build()
    would refuse the bad ones)."""
    rows = b._ops
    n = len(rows)
    return Trace(bits=b.bits, grace=float(b.grace), devices=[d for _, d in b._devices.values()],
                 owners=list(b._owners), handles=[f"h{i}" for i in range(b._handles)],
                 time=np.array([r[0] for r in rows], dtype=np.float64).reshape(n),
                 op=np.array([r[1] for r in rows], dtype=np.uint8).reshape(n),
                 handle=np.array([r[2] for r in rows], dtype=np.int32).reshape(n),
                 owner=np.array([r[3] for r in rows], dtype=np.int32).reshape(n),
                 device=np.array([r[4] for r in rows], dtype=np.int32).reshape(n),
                 lines=np.arange(1, n + 1, dtype=np.int64), source="built")


@pytest.mark.parametrize("last, message", [
    (lambda b, h: b.put(DEAD + 0.5, h), "put of handle 'h7', which has been released"),
    (lambda b, h: b.get(DEAD + 0.5, h), "get of handle 'h7', which has been released"),
    (lambda b, h: b.bind(DEAD + 0.5, h, "gpu"), "bind of handle 'h7', which has been released"),
    (lambda b, h: b.unbind(DEAD + 0.5, h, "gpu"), "unbind of handle 'h7' from device 'gpu', "
                                                  "which is not bound"),
    (lambda b, h: b.access(DEAD + 0.5, h, "gpu"), "access of handle 'h7' by device 'gpu', "
     "which is not bound to it (a device accesses a PASID from its bind to its unbind, "
     "which says it has drained)"),
    (lambda b, h: b.advance(DEAD + 0.5), None),
])
def test_a_dead_handle_long_gone_is_checked_as_one(twin, last, message):
    # The compiled twin gives back the memory of groups of dead handles (512 at a time)
    # and takes a handle of such a group by the rule for a dead one: the same errors,
    # at the same line, as the Python twin that keeps every state.
    trace = mostly_dead(last)
    got = checked(twin, trace, trace.chunks(1000))
    if message is None:
        assert got is None
    else:
        assert got is not None and got[0].endswith(message) and got[1] == 4 * DEAD + 2
    if message is None or "unbind" in message:          # the access case too
        # the rewrite keeps the access and drops the unbind of a handle detached long ago
        rewritten = detached(twin, trace, trace.chunks(1000))
        late = rewritten.handle == 7
        assert (rewritten.op[late] == OP_UNBIND).sum() == 1        # the one at its release
    checker = twin[0](trace.header())
    if hasattr(checker, "kept") and message is None:
        for chunk in trace.chunks(1000):
            checker.feed(chunk)
        assert checker.kept < DEAD // 2         # most groups given back
