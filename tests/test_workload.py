"""The workload generator: deterministic, checked traces that follow the model.

Each preset is generated once at full size (one module-scoped fixture); every
other test uses a workload shrunk with ``with_`` so the file stays fast.
"""

import dataclasses
import hashlib
import io
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pasid.sim import workload as workload_module
from pasid.sim.replay import replay
from pasid.sim.chunk import concatenate
from pasid.sim.trace import (OP_ACCESS, OP_ADVANCE, OP_ALLOC, OP_BIND, OP_EXIT, OP_GET,
                             OP_PUT, OP_UNBIND, Device, check, read_trace)
from pasid.sim.workload import (GENERATOR_VERSION, PRESETS, DeviceSpec, Workload, generate,
                                parse_overrides, preset, stream)

# Operations per preset at seed 0: what each is sized for (see PRESETS).
PRESET_SIZES = {"default": (150_000, 400_000), "exhaustion": (100_000, 400_000),
                "vm-churn": (100_000, 400_000)}


def small(name="default", **overrides):
    """A preset shrunk to a few thousand operations, lifetimes well inside the duration."""
    return preset(name, **{"duration": 4000, "lifetime": 400, "vm_lifetime": 800, **overrides})


def ops_of(trace):
    """The operations as Python tuples ``(op, handle, owner, device)``, in order."""
    return list(zip(trace.op.tolist(), trace.handle.tolist(), trace.owner.tolist(),
                    trace.device.tolist()))


def assert_accesses_precede_unbinds(trace):
    """Every access is by a bound device, before that device unbinds the handle."""
    bound, unbound, accessed = set(), set(), set()
    for op, handle, _, device in ops_of(trace):
        pair = (handle, device)
        if op == OP_BIND:
            bound.add(pair)
        elif op == OP_UNBIND:
            unbound.add(pair)
        elif op == OP_ACCESS:
            assert pair in bound and pair not in unbound, f"access {pair} outside its binding"
            accessed.add(pair)
    assert accessed <= unbound, "a late access whose device never unbinds"


def assert_allocs_fit_their_devices(trace):
    """An alloc names the narrowest device its handle binds iff that one is narrower."""
    widths = [device.bits for device in trace.devices]
    narrowest = {}      # handle -> the narrowest width it binds
    fits = {}           # handle -> its alloc's FITS device, or -1
    for op, handle, _, device in ops_of(trace):
        if op == OP_ALLOC:
            fits[handle] = device
        elif op == OP_BIND:
            narrowest[handle] = min(narrowest.get(handle, widths[device]), widths[device])
    for handle, bits in narrowest.items():
        if bits < trace.bits:
            assert fits[handle] >= 0 and widths[fits[handle]] == bits, f"h{handle} lacks FITS"
        else:
            assert fits[handle] == -1, f"h{handle} has a FITS it does not need"


def puts_per_handle(trace):
    return np.bincount(trace.handle[trace.op == OP_PUT], minlength=len(trace.handles))


# ---------------------------------------------------------------- presets at full size

@pytest.fixture(scope="module")
def preset_traces():
    return {name: generate(PRESETS[name], 0) for name in PRESETS}


def test_presets_are_the_named_three():
    assert list(PRESETS) == ["default", "exhaustion", "vm-churn"]
    for name, workload in PRESETS.items():
        assert workload.name == name


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_trace(preset_traces, name):
    workload, trace = PRESETS[name], preset_traces[name]
    low, high = PRESET_SIZES[name]
    assert low <= len(trace) <= high
    assert trace.bits == workload.bits and trace.grace == workload.grace
    assert trace.devices == [Device(d.name, d.bits, d.drain) for d in workload.devices]
    counts = trace.counts()
    assert min(counts.values()) > 0, counts
    assert trace.op[-1] == OP_ADVANCE and trace.time[-1] == trace.duration
    assert_accesses_precede_unbinds(trace)
    assert_allocs_fit_their_devices(trace)


def test_default_has_a_narrow_and_a_slow_device():
    devices = PRESETS["default"].devices
    assert any(device.bits < PRESETS["default"].bits for device in devices)
    acks = sorted(device.ack for device in devices)
    assert acks[-1] >= 20 * acks[-2] and acks[-1] >= 20 * PRESETS["default"].grace


# ---------------------------------------------------------------- determinism and text

def test_same_seed_same_trace_and_another_seed_another():
    workload = small()
    text = generate(workload, 3).to_text()
    assert generate(workload, 3).to_text() == text
    assert generate(workload, 4).to_text() != text


# The start of the SHA-256 of generate(small(), 7).to_text(): the same bytes on every
# platform and Python version. A change here is a change of the generator (GENERATOR_VERSION).
PINNED_SHA256 = "b8ee2d4979d8cf8c"


def test_text_is_pinned():
    text = generate(small(), 7).to_text()
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == PINNED_SHA256


def test_trace_round_trips_through_text():
    trace = generate(small(), 1)
    again = read_trace(io.StringIO(trace.to_text()))
    for column in ("time", "op", "handle", "owner", "device"):
        np.testing.assert_array_equal(getattr(again, column), getattr(trace, column))
    assert (again.bits, again.grace, again.devices) == (trace.bits, trace.grace, trace.devices)
    assert (again.owners, again.handles) == (trace.owners, trace.handles)


def test_times_are_rounded():
    trace = generate(small(), 2)
    assert np.array_equal(trace.time, np.round(trace.time, workload_module.TIME_DIGITS))


# ---------------------------------------------------------------- the model

def test_arrivals_and_ends_stay_within_duration():
    workload = small()
    trace = generate(workload, 5)
    allocs = trace.time[trace.op == OP_ALLOC]
    assert len(allocs) and allocs.max() < workload.duration
    assert trace.time[trace.op == OP_EXIT].max() < workload.duration
    assert trace.duration > workload.duration      # the slow device's teardowns run on


def test_killed_processes_exit_and_never_put():
    trace = generate(small(kill=1.0, vm_arrival=0.0), 1)
    counts = trace.counts()
    assert counts["exit"] > 100 and counts["put"] == 0
    exited = set(trace.owner[trace.op == OP_EXIT].tolist())
    assert len(exited) == counts["exit"]           # each owner exits once
    assert generate(small(kill=0.0), 1).counts()["exit"] == 0


def test_dup_takes_a_reference_and_puts_twice():
    trace = generate(small(dup=1.0, kill=0.0, vm_arrival=0.0), 1)
    counts = trace.counts()
    assert counts["get"] == counts["alloc"]
    puts = puts_per_handle(trace)
    assert set(puts.tolist()) == {0, 2}            # 0: still alive at the end
    plain = generate(small(dup=0.0, kill=0.0, vm_arrival=0.0), 1)
    assert plain.counts()["get"] == 0 and set(puts_per_handle(plain).tolist()) == {0, 1}


@pytest.mark.parametrize("unbind_first", [0.0, 1.0])
def test_unbind_first_decides_whether_devices_unbind_before_the_release(unbind_first):
    trace = generate(small(unbind_first=unbind_first, kill=0.0, dup=0.0, vm_arrival=0.0), 1)
    released_at, last_unbind = {}, {}
    for i, (op, handle, _, _) in enumerate(ops_of(trace)):
        if op == OP_PUT:
            released_at[handle] = i
        elif op == OP_UNBIND:
            last_unbind[handle] = i
    assert len(released_at) > 100
    before = [last_unbind[h] < released_at[h] for h in released_at]
    assert all(before) if unbind_first else not any(before)


def test_vm_contexts_are_ownerless_and_bind_one_full_width_device():
    workload = small(arrival=0.0, vm_arrival=0.05)
    trace = generate(workload, 1)
    assert (trace.owner[trace.op == OP_ALLOC] == -1).all()
    binds = trace.op == OP_BIND
    assert np.bincount(trace.handle[binds]).tolist() == [1] * len(trace.handles)
    widths = {trace.devices[device].bits for device in trace.device[binds].tolist()}
    assert widths == {workload.bits}
    assert trace.counts()["exit"] == 0 and trace.counts()["put"] > 0


def test_processes_bind_within_binds_and_owners_are_numbered():
    trace = generate(small(binds=(2, 2), vm_arrival=0.0), 1)
    binds = np.bincount(trace.handle[trace.op == OP_BIND])
    assert set(binds.tolist()) == {2}
    assert trace.owners[:3] == ["p0", "p1", "p2"]


def test_devices_without_late_accesses_make_none():
    workload = small()
    quiet = tuple(dataclasses.replace(d, late=False) if d.name == "slow0" else d
                  for d in workload.devices)
    trace = generate(workload.with_(devices=quiet), 1)
    slow = [d.name for d in trace.devices].index("slow0")
    accessing = set(trace.device[trace.op == OP_ACCESS].tolist())
    assert accessing and slow not in accessing


def test_drain_overrides_every_device_and_grace_goes_in_the_header():
    trace = generate(small(drain=7, grace=3), 1)
    assert {device.drain for device in trace.devices} == {7.0}
    assert trace.grace == 3.0


def test_late_accesses_are_stale_only_without_quarantine():
    trace = generate(small(), 1)
    assert replay(trace, "lowest", samples=0).stale == 0
    assert replay(trace, "lowest", quarantine=False, samples=0).stale > 0


def test_empty_workloads_give_a_trace_of_one_advance():
    trace = generate(small(arrival=0.0, vm_arrival=0.0), 1)
    assert trace.op.tolist() == [OP_ADVANCE] and trace.duration == 0.0
    assert len(generate(small(duration=0.0), 1)) == 1


def test_get_comes_after_the_binds_and_before_the_end():
    # Lifetime 0: each process's whole life at one instant, in the order scheduled.
    trace = generate(small(dup=1.0, kill=0.0, unbind_first=0.0, lifetime=0.0, vm_arrival=0.0), 1)
    lives = {}
    for op, handle, _, _ in ops_of(trace):
        if handle >= 0:
            lives.setdefault(handle, []).append(op)
    assert len(lives) > 100
    for ops in lives.values():
        get = ops.index(OP_GET)
        assert ops[0] == OP_ALLOC and set(ops[1:get]) == {OP_BIND}
        assert ops[get + 1:get + 3] == [OP_PUT, OP_PUT]


# ---------------------------------------------------------------- the stream and its windows

COLUMNS = ("time", "op", "handle", "owner", "device")


def streamed(workload, seed, window=None):
    """The stream's header, its chunks as a list, and the chunks concatenated."""
    header, chunks = stream(workload, seed, window=window)
    chunks = list(chunks)
    return header, chunks, concatenate(chunks)


def test_the_trace_does_not_depend_on_the_window():
    # lifetimes past the duration: entities alive across many windows, and at the end
    workload = small(lifetime=3000, vm_lifetime=5000)
    _, chunks, whole = streamed(workload, 5)
    for window in (1, 997, 250_000, 10**15):
        _, pieces, again = streamed(workload, 5, window)
        for column in COLUMNS:
            np.testing.assert_array_equal(getattr(again, column), getattr(whole, column))
        assert (again.handles, again.owners) == (whole.handles, whole.owners)
    assert len(streamed(workload, 5, 997)[1]) > 3 * len(chunks)  # it was cut finer
    trace = generate(workload, 5)
    for column in COLUMNS:
        np.testing.assert_array_equal(getattr(trace, column), getattr(whole, column))


def test_same_seed_same_columns():
    workload = small()
    first, again = streamed(workload, 11)[2], streamed(workload, 11)[2]
    for column in COLUMNS:
        np.testing.assert_array_equal(getattr(first, column), getattr(again, column))
    assert not np.array_equal(streamed(workload, 12)[2].time[:50], first.time[:50])


@pytest.mark.parametrize("window", [None, 1, 50_000])
def test_chunk_invariants(window):
    workload = small(drain=3)
    header, chunks, whole = streamed(workload, 2, window)
    assert (header.bits, header.grace) == (workload.bits, workload.grace)
    assert header.comment == f"pasid generator {GENERATOR_VERSION}: workload default, seed 2"
    assert (header.handle_name(4), header.owner_name(4)) == ("h4", "p4")
    devices = tuple(Device(d.name, d.bits, 3.0) for d in workload.devices)
    start, handles, owners, last = 0, 0, 0, 0.0
    for chunk in chunks:
        assert len(chunk) and chunk.start == start and chunk.devices == devices
        assert chunk.lines is None
        assert chunk.time[0] >= last and (np.diff(chunk.time) >= 0).all()
        allocs = chunk.op == OP_ALLOC
        handles += int(allocs.sum())
        owners += int((chunk.owner[allocs] >= 0).sum())
        assert (chunk.handles, chunk.owners) == (handles, owners)
        assert chunk.handle.max() < handles and chunk.owner.max() < owners
        for column in COLUMNS:
            assert getattr(chunk, column).flags.c_contiguous
        start, last = start + len(chunk), chunk.time[-1]
    assert chunks[-1].op[-1] == OP_ADVANCE and (chunks[-1].op[:-1] != OP_ADVANCE).all()
    assert whole.time[-1] == whole.time[-2]


def test_handles_and_owners_are_numbered_in_order_of_first_appearance():
    trace = generate(small(vm_arrival=0.3), 4)
    allocs = np.flatnonzero(trace.op == OP_ALLOC)
    assert trace.handle[allocs].tolist() == list(range(len(trace.handles)))
    owned = trace.owner[allocs]
    assert owned[owned >= 0].tolist() == list(range(len(trace.owners)))
    assert (owned == -1).sum() > 100           # the VMs are interleaved with the processes
    assert trace.handles[:2] == ["h0", "h1"] and trace.comment.startswith("pasid generator 2")


def test_stream_checks_its_arguments():
    with pytest.raises(ValueError, match="window"):
        stream(small(), 1, window=0)
    with pytest.raises(TypeError):
        stream(small(), 1, window=1.5)
    with pytest.raises(ValueError, match="seed"):
        stream(small(), -1)
    with pytest.raises(TypeError, match="Workload"):
        stream("default", 1)


# ---------------------------------------------------------------- statistics

def within(observed, expected, sigma, what):
    """``observed`` is within 5 standard deviations of ``expected``."""
    assert abs(observed - expected) <= 5 * sigma, (what, observed, expected, sigma)


def test_statistics_follow_the_parameters():
    devices = (DeviceSpec("gpu0", drain=1, ack=40), DeviceSpec("gpu1", drain=1, ack=40),
               DeviceSpec("nic0", bits=12, drain=1, ack=10), DeviceSpec("slow0", drain=1, ack=400))
    workload = Workload("stats", duration=20_000, arrival=1.0, lifetime=200, kill=0.3, dup=0.4,
                        unbind_first=0.5, vm_arrival=0.2, vm_lifetime=300, binds=(1, 3),
                        devices=devices)
    trace = streamed(workload, 9)[2]
    check(trace_of(trace, workload))
    op, handle, owner, device, time = (trace.op, trace.handle, trace.owner, trace.device,
                                       trace.time)
    allocs = op == OP_ALLOC
    is_process = np.zeros(trace.handles, dtype=bool)
    is_process[handle[allocs]] = owner[allocs] >= 0
    processes, vms = int(is_process.sum()), int((~is_process).sum())
    for count, rate in ((processes, workload.arrival), (vms, workload.vm_arrival)):
        expected = rate * workload.duration
        within(count, expected, math.sqrt(expected), "arrivals")
    alloc_time = np.empty(trace.handles)
    alloc_time[handle[allocs]] = time[allocs]
    # lifetimes: the killed processes' exit - alloc, of those arriving long before the end
    exits = op == OP_EXIT
    exit_handle = np.flatnonzero(is_process)[owner[exits]]      # p<N>'s handle
    early = alloc_time[exit_handle] < workload.duration - 20 * workload.lifetime
    lives = (time[exits] - alloc_time[exit_handle])[early]
    within(lives.mean(), workload.lifetime, workload.lifetime / math.sqrt(len(lives)), "life")
    # the kill fraction among the processes that ended; dup among all
    puts = np.bincount(handle[op == OP_PUT], minlength=trace.handles)
    ended = int(exits.sum()) + int(((puts > 0) & is_process).sum())
    p = workload.kill
    within(exits.sum(), p * ended, math.sqrt(ended * p * (1 - p)), "kill")
    gets = int((op == OP_GET).sum())
    p = workload.dup
    within(gets, p * processes, math.sqrt(processes * p * (1 - p)), "dup")
    # binds per process: uniform in lo..hi
    binds = np.bincount(handle[op == OP_BIND], minlength=trace.handles)[is_process]
    lo, hi = workload.binds
    assert binds.min() == lo and binds.max() == hi
    variance = ((hi - lo + 1) ** 2 - 1) / 12
    within(binds.mean(), (lo + hi) / 2, math.sqrt(variance / processes), "binds")
    # VMs bind one full-width device
    vm_binds = (op == OP_BIND) & ~is_process[np.maximum(handle, 0)]
    assert {devices[d].bits for d in device[vm_binds].tolist()} == {workload.bits}
    # acks of killed processes: told at the exit, unbind in [0.5, 1.5) x ack, access inside
    told = np.full(trace.handles, np.nan)
    told[exit_handle] = time[exits]
    for op_code in (OP_UNBIND, OP_ACCESS):
        rows = (op == op_code) & ~np.isnan(told[np.maximum(handle, 0)]) & (handle >= 0)
        for index, spec in enumerate(devices):
            mine = rows & (device == index)
            delay = time[mine] - told[handle[mine]]
            low = 0.0 if op_code == OP_ACCESS else 0.5 * spec.ack
            assert delay.min() >= low - 1e-3 and delay.max() <= 1.5 * spec.ack + 1e-3
            assert delay.max() > 1.4 * spec.ack             # the whole interval is used
            if op_code == OP_UNBIND:
                assert delay.min() < 0.6 * spec.ack
                within(delay.mean(), spec.ack, spec.ack / math.sqrt(12 * len(delay)), "ack")


def trace_of(chunk, workload):
    """A concatenated stream as a Trace, for :func:`check`."""
    return dataclasses.replace(
        generate(workload.with_(duration=0), 0), time=chunk.time, op=chunk.op,
        handle=chunk.handle, owner=chunk.owner, device=chunk.device,
        handles=[f"h{i}" for i in range(chunk.handles)],
        owners=[f"p{i}" for i in range(chunk.owners)])


# ---------------------------------------------------------------- every trace checks

@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("seed", [1, 2])
def test_shrunk_presets_check(name, seed):
    trace = generate(small(name), seed)     # checked as it is built
    assert_accesses_precede_unbinds(trace)
    assert_allocs_fit_their_devices(trace)


device_specs = st.builds(
    lambda bits, drain, ack, late: (bits, drain, ack, late),
    st.integers(1, 20), st.sampled_from([0.0, 0.5, 3.0]),
    st.sampled_from([0.0, 0.001, 0.0004, 1.0, 25.0]), st.booleans())


@given(
    bits=st.integers(1, 20),
    devices=st.lists(device_specs, min_size=1, max_size=4),
    duration=st.sampled_from([0.0, 0.01, 5.0, 60.0, 300.0]),
    arrival=st.sampled_from([0.0, 0.3, 2.0, 50.0]),
    lifetime=st.sampled_from([0.0, 0.001, 0.5, 20.0]),
    vm_arrival=st.sampled_from([0.0, 0.1, 5.0]),
    vm_lifetime=st.sampled_from([0.0, 0.002, 10.0]),
    fractions=st.tuples(*[st.sampled_from([0.0, 0.5, 1.0])] * 3),
    binds=st.data(),
    seed=st.integers(0, 2**64),
    window=st.sampled_from([None, 1, 3, 10_000]),
)
def test_random_small_workloads_check(bits, devices, duration, arrival, lifetime, vm_arrival,
                                      vm_lifetime, fractions, binds, seed, window):
    specs = tuple(DeviceSpec(f"d{i}", bits=b, drain=drain, ack=ack, late=late)
                  for i, (b, drain, ack, late) in enumerate(devices))
    lo = binds.draw(st.integers(1, len(specs)))
    hi = binds.draw(st.integers(lo, len(specs)))
    kill, dup, unbind_first = fractions
    workload = Workload("random", bits=bits, duration=duration, arrival=arrival,
                        lifetime=lifetime, kill=kill, dup=dup, unbind_first=unbind_first,
                        vm_arrival=vm_arrival, vm_lifetime=vm_lifetime, devices=specs,
                        binds=(lo, hi))
    if (arrival * (2 + 3 * hi) + 5 * vm_arrival) * duration > 20_000:
        duration = 60.0
        workload = workload.with_(duration=duration)
    trace = generate(workload, seed)        # checked as it is built
    assert_accesses_precede_unbinds(trace)
    assert_allocs_fit_their_devices(trace)
    whole = streamed(workload, seed, window)[2]
    for column in COLUMNS:
        np.testing.assert_array_equal(getattr(whole, column), getattr(trace, column))


# ---------------------------------------------------------------- arguments

@pytest.mark.parametrize("field, value", [
    ("bits", 0), ("bits", 21), ("bits", 2.5), ("duration", -1.0), ("arrival", math.inf),
    ("lifetime", math.nan), ("grace", -0.5), ("vm_lifetime", "x"), ("kill", 1.5),
    ("dup", -0.1), ("unbind_first", 2), ("drain", -1.0), ("devices", ()),
    ("binds", (0, 1)), ("binds", (2, 1)), ("binds", (1, 5)), ("binds", (1,)),
])
def test_invalid_workloads_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        PRESETS["default"].with_(**{field: value})


def test_invalid_devices():
    with pytest.raises(ValueError, match="bits"):
        DeviceSpec("nic", bits=0, drain=1, ack=1)
    with pytest.raises(ValueError, match="ack"):
        DeviceSpec("nic", drain=1, ack=-1)
    with pytest.raises(ValueError, match="name"):
        DeviceSpec("two words", drain=1, ack=1)
    twin = DeviceSpec("gpu0", drain=1, ack=1)
    with pytest.raises(ValueError, match="distinct"):
        small(devices=(twin, twin), binds=(1, 1))


def test_with_replaces_and_parses_strings():
    base = PRESETS["default"]
    changed = base.with_(arrival="0.5", kill=0.25, drain="none", binds="2..3", name="mine")
    assert (changed.arrival, changed.kill, changed.drain, changed.binds, changed.name) == (
        0.5, 0.25, None, (2, 3), "mine")
    assert base.arrival == 0.15 and base.with_() == base
    with pytest.raises(ValueError, match="known: name, bits, duration"):
        base.with_(arivval=1)


def test_parse_overrides():
    assert parse_overrides(["arrival=5", " kill = 0.2", "bits=12", "drain=3", "binds=2"]) == {
        "arrival": 5.0, "kill": 0.2, "bits": 12, "drain": 3.0, "binds": (2, 2)}
    assert parse_overrides([]) == {}
    with pytest.raises(ValueError, match="unknown workload parameter 'speed'.*known: name"):
        parse_overrides(["speed=3"])
    with pytest.raises(ValueError, match="'arrival' must be a number, got 'fast'"):
        parse_overrides(["arrival=fast"])
    with pytest.raises(ValueError, match="'bits' must be an integer"):
        parse_overrides(["bits=12.5"])
    with pytest.raises(ValueError, match="'binds' must be 'LO..HI'"):
        parse_overrides(["binds=1-3"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_overrides(["arrival"])
    with pytest.raises(ValueError, match="'devices' cannot be given as text"):
        parse_overrides(["devices=gpu0"])


def test_preset_applies_overrides_and_refuses_unknown_names():
    assert preset("exhaustion", duration="10").duration == 10.0
    assert preset("default") is PRESETS["default"]
    with pytest.raises(ValueError, match="default, exhaustion, vm-churn"):
        preset("busy")


def test_generate_checks_its_arguments():
    with pytest.raises(ValueError, match="seed"):
        generate(small(), -1)
    with pytest.raises(TypeError):
        generate(small(), 1.5)
    with pytest.raises(TypeError, match="Workload"):
        generate("default", 1)
