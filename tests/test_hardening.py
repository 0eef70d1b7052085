"""Hostile input and re-entrant user code: no crash, no double release, nothing lost.

Each test is a promise of SPEC §3 that an adversarial review broke once: user
code (a clock, an owner's or device's ``__hash__``/``__eq__``) that calls back
into the allocator in the middle of an operation; a caller's array changed
while an operation runs; counters at their limits; times at the edge of the
finite range; inputs the two backends once treated differently.
"""

import copy
import pickle

import numpy as np
import pytest

from pasid import InvalidPasid, PasidExhausted, QuotaExceeded, State, StateError

from backends import NO_EXTENSION
from observe import observable

COUNT_MAX = 2**32 - 1


class Hook:
    """An owner or device whose ``__hash__`` runs ``action`` once, when armed, at
    the ``at``-th hash after arming (1: the first)."""

    def __init__(self, name, action=None, at=1):
        self.name = name
        self.action = action
        self.at = at
        self.armed = False
        self.hashes = 0

    def arm(self):
        self.armed = True
        self.hashes = 0

    def __hash__(self):
        if self.armed:
            self.hashes += 1
            if self.hashes == self.at:
                self.armed = False
                self.action()
        return hash(self.name)

    def __eq__(self, other):
        return isinstance(other, Hook) and other.name == self.name

    def __repr__(self):
        return f"Hook({self.name!r})"


# ---------------------------------------------------------------- re-entrant clocks

def test_a_clock_that_frees_the_pasid_being_freed(backend):
    armed = []

    def clock():
        if armed:
            armed.pop()
            a.free(p)          # the same PASID, from inside the outer free's clock read
        return 0.0

    a = backend.PasidAllocator(bits=4, clock=clock)
    p = a.alloc()
    armed.append(True)
    with pytest.raises(StateError):      # the outer free finds it FREE: no double release
        a.free(p)
    assert a.state(p) == State.FREE and a.stats()["releases"] == 1
    a._check()


def test_a_clock_that_allocates_during_an_allocation(backend):
    armed, inner = [], []

    def clock():
        if armed:
            armed.pop()
            inner.append(a.alloc())
        return 1.0

    a = backend.PasidAllocator(bits=4, clock=clock)
    armed.append(True)
    outer = a.alloc()
    assert inner and inner[0] != outer
    assert sorted(a) == sorted([outer, inner[0]])
    a._check()


def test_a_clock_that_exits_the_owner_being_exited(backend):
    armed = []

    def clock():
        if armed:
            armed.pop()
            assert a.exit_owner("vm") == [1, 2]
        return 0.0

    a = backend.PasidAllocator(bits=4, clock=clock, grace=5)
    a.alloc("vm"), a.alloc("vm")
    armed.append(True)
    assert a.exit_owner("vm") == []      # the inner exit released them first
    assert a.stats()["releases"] == 2 and a.stats()["quarantined"] == 2
    a._check()


def test_a_clock_that_unbinds_the_pair_being_unbound(backend):
    armed = []

    def clock():
        if armed:
            armed.pop()
            a.unbind(p, "gpu")
        return 0.0

    a = backend.PasidAllocator(bits=4, clock=clock)
    p = a.alloc()
    a.bind(p, "gpu")
    a.free(p)
    armed.append(True)
    with pytest.raises(StateError):
        a.unbind(p, "gpu")
    assert a.state(p) == State.FREE
    a._check()


def test_a_clock_that_changes_the_ids_of_free_many(backend):
    ids = np.zeros(2, dtype=np.uint32)

    def clock():
        ids[:] = 12345                   # out of range, after the call began
        return 0.0

    a = backend.PasidAllocator(bits=4, clock=clock)
    ids[:] = [a.alloc(), a.alloc()]
    kept = ids.tolist()
    a.free_many(ids)                     # the call works on the IDs it was given
    assert all(a.state(p) == State.FREE for p in kept)
    a._check()


def test_a_clock_that_raises_leaves_everything_as_it_was(backend):
    raising = []

    def clock():
        if raising:
            raise RuntimeError("clock broke")
        return 0.0

    a = backend.PasidAllocator(bits=4, clock=clock)
    p = a.alloc("o")
    a.bind(p, "gpu")
    before = observable(a)
    raising.append(True)
    for call in (lambda: a.free(p), lambda: a.alloc(), lambda: a.unbind(p, "gpu"),
                 lambda: a.exit_owner("o"), lambda: a.free_many([p]), lambda: a.get(p)):
        with pytest.raises(RuntimeError, match="clock broke"):
            call()
    assert p in a                        # never raises, even with a broken clock
    raising.clear()
    assert observable(a) == before
    a._check()


# ---------------------------------------------------------------- re-entrant hashes

def test_an_owner_whose_hash_frees_a_pasid(backend):
    a = backend.PasidAllocator(bits=4)
    victim = a.alloc()
    owner = Hook("proc", lambda: a.free(victim))
    owner.arm()
    p = a.alloc(owner)                   # the hash ran before anything was checked:
    assert p == victim and a.owner(p) == owner   # the lowest FREE ID is the one it freed
    a._check()


def test_an_owner_whose_hash_exits_that_owner(backend):
    a = backend.PasidAllocator(bits=4)
    owner = Hook("proc", lambda: a.exit_owner(Hook("proc")))
    first = a.alloc(Hook("proc"))
    owner.arm()
    second = a.alloc(owner)              # the inner exit dropped the owner's record
    assert second == first and a.owner(second) == owner and a.generation(first) == 2
    assert a.exit_owner(Hook("proc")) == [second]
    a._check()


def test_a_device_whose_hash_removes_that_device(backend):
    a = backend.PasidAllocator(bits=4)
    p = a.alloc()
    a.add_device(Hook("gpu"))
    device = Hook("gpu", lambda: a.remove_device(Hook("gpu")))
    device.arm()
    a.bind(p, device)                    # declared again, with the defaults
    assert a.devices(p) == [Hook("gpu")]
    a._check()


def test_a_hash_that_declares_a_device_while_one_is_declared(backend):
    a = backend.PasidAllocator(bits=4)
    p = a.alloc()
    # hash 1: the look-up (nothing held: a call back is fine); hash 2: the table
    # changes under the registry lock, and a call back that changes it is refused
    device = Hook("gpu", lambda: a.add_device("nic"), at=2)
    device.arm()
    before = observable(a)
    with pytest.raises(RuntimeError, match="re-entrant"):
        a.add_device(device)
    assert observable(a) == before
    a._check()
    a.add_device(device)                 # not armed any more
    a.bind(p, device)
    a._check()


def test_unhashable_owners_and_devices_change_nothing(backend):
    a = backend.PasidAllocator(bits=4)
    p = a.alloc()
    a.free(p)
    before = observable(a)
    for call in (lambda: a.alloc([1]), lambda: a.bind(p, {}), lambda: a.exit_owner([]),
                 lambda: a.set_quota({}, 1), lambda: a.add_device([])):
        with pytest.raises(TypeError):
            call()
    assert observable(a) == before       # bind of a FREE PASID to an unhashable device: TypeError
    a._check()


# ---------------------------------------------------------------- handles

def test_a_handle_never_touches_the_next_life(backend):
    a = backend.PasidAllocator(bits=2, reserved=())
    h = a.open("proc")
    assert a.exit_owner("proc") == [h.pasid]
    again = a.alloc_exact(h.pasid)      # the PASID's next life
    assert not h.valid
    with pytest.raises(StateError):
        h.dup()
    h.close()                            # a no-op: the new life keeps its reference
    assert a.refcount(again) == 1
    a._check()


# ---------------------------------------------------------------- limits

def limited(backend, field, value):
    """An allocator whose one ACTIVE PASID (1) has ``field`` at ``value``, via a snapshot."""
    from pasid import _snapshot

    a = backend.PasidAllocator(bits=4)
    p = a.alloc()
    a.get(p)
    a.bind(p, "gpu")
    a.bind(p, "gpu")
    state = a._export()
    if field == "refcount":
        state["refcounts"] = _snapshot.arrays([p], [value], "<u4")
    elif field == "bind":
        bound, devices, _ = state["bindings"]      # one row: (p, "gpu")
        state["bindings"] = (bound, devices, _snapshot.column([value]))
    else:
        state["generations"] = _snapshot.arrays([p], [value], "<u4")
    return type(a)._from_state(state), p


def test_refcounts_and_bind_counts_refuse_to_wrap(backend):
    a, p = limited(backend, "refcount", COUNT_MAX)
    before = observable(a)
    with pytest.raises(OverflowError, match="limit"):
        a.get(p)
    with pytest.raises(OverflowError, match="limit"):
        a._get_if(p, a.generation(p))    # a handle's dup
    assert observable(a) == before
    a, p = limited(backend, "bind", COUNT_MAX)
    before = observable(a)
    with pytest.raises(OverflowError, match="limit"):
        a.bind(p, "gpu")
    assert observable(a) == before
    a._check()


def test_generations_refuse_to_wrap(backend):
    a, p = limited(backend, "generation", COUNT_MAX)
    a.free_many([p, p])
    a.unbind(p, "gpu"), a.unbind(p, "gpu")
    assert a.state(p) == State.FREE
    before = observable(a)
    with pytest.raises(OverflowError, match="limit"):
        a.alloc_exact(p)
    with pytest.raises(OverflowError, match="limit"):
        a.alloc()                        # lowest: PASID 1 again
    assert observable(a) == before
    assert a.alloc(min=2) == 2
    a._check()


@pytest.mark.parametrize("call, what", [
    (lambda a: a.advance(by=1e300), None),
    (lambda a: a.advance(to=10**400), "to"),
    (lambda a: a.advance(to=float("inf")), "to"),
    (lambda a: a.add_device("gpu", drain=1e301), "drain"),
    (lambda a: a.add_device("gpu", drain=10**400), "drain"),
])
def test_times_stay_finite(backend, call, what):
    a = backend.PasidAllocator(bits=4, grace=1)
    a.advance(by=1e300)
    before = observable(a)
    with pytest.raises(ValueError, match="finite and within"):
        call(a)
    assert observable(a) == before
    with pytest.raises(ValueError, match="grace must be finite"):
        backend.PasidAllocator(bits=4, grace=1e301)


@pytest.mark.parametrize("n", [2**63, 2**64, 2**70, -1])
def test_huge_and_negative_quotas_are_refused(backend, n):
    a = backend.PasidAllocator(bits=4)
    with pytest.raises(ValueError, match="quota must be in 0..9223372036854775807"):
        a.set_quota("o", n)
    a.set_quota("o", 2**63 - 1)
    assert type(a).from_bytes(a.to_bytes()).to_bytes() == a.to_bytes()


# ---------------------------------------------------------------- inputs the backends once differed on

@pytest.mark.parametrize("n", [2**20, 2**63, 2**70])
def test_alloc_many_of_a_huge_n(backend, n):
    a = backend.PasidAllocator(bits=4)
    with pytest.raises(PasidExhausted, match=f"^{n} PASIDs asked, 15 FREE$"):
        a.alloc_many(n)
    assert a.stats()["failures"] == 1


@pytest.mark.parametrize("ids", [[2, True], [np.bool_(True)], np.array([1], dtype="m8[s]"),
                                 np.array([True]), [1.0]])
def test_id_arrays_are_integers_only(backend, ids):
    a = backend.PasidAllocator(bits=4)
    a.alloc_many(3)
    before = observable(a)
    for call in (a.free_many, a.states):
        with pytest.raises(TypeError):
            call(ids)
    assert observable(a) == before


@pytest.mark.parametrize("value", ["a", None, 1.5, 10**100, -(10**100), np.bool_(True), True,
                                   object(), [1]])
def test_membership_never_raises(backend, value):
    a = backend.PasidAllocator(bits=4)
    a.alloc_many(15)
    assert (value in a) is False
    ida = backend.IDA()
    ida.alloc()
    assert ida.exists(value) is False and (value in ida) is False


def test_a_str_subclass_names_a_strategy(backend):
    class Name(str):
        pass

    a = backend.PasidAllocator(bits=4, strategy=Name("fifo"))
    assert a.strategy == "fifo" and a.alloc() == 1


def test_alloc_many_of_zero_at_the_quota(backend):
    a = backend.PasidAllocator(bits=4)
    a.set_quota("o", 1)
    a.alloc("o")
    assert a.alloc_many(0, "o").tolist() == []
    with pytest.raises(QuotaExceeded):
        a.alloc_many(1, "o")
    assert a.stats()["failures"] == 1


def test_reserved_ranges_are_unambiguous(backend):
    with pytest.raises(ValueError, match=r"ambiguous: write reserved=\[0, 15\] for two IDs"):
        backend.PasidAllocator(bits=4, reserved=(0, 15))
    a = backend.PasidAllocator(bits=5, reserved=[0, 15, (20, 21), range(24, 27)])
    reserved = [p for p in range(32) if a.state(p) == State.RESERVED]
    assert reserved == [0, 15, 20, 21, 24, 25, 26]
    with pytest.raises(ValueError, match="step 1"):
        backend.PasidAllocator(bits=4, reserved=[range(0, 8, 2)])
    with pytest.raises(InvalidPasid):
        backend.PasidAllocator(bits=4, reserved=[range(10, 20)])


# ---------------------------------------------------------------- out of memory

@pytest.mark.skipif(NO_EXTENSION, reason="fault injection is in the compiled core")
@pytest.mark.parametrize("strategy", ["random", "fifo", "cyclic", "lowest"])
def test_a_failed_node_allocation_changes_nothing(strategy):
    import pasid._core as core

    def fresh():
        a = core.PasidAllocator(20, strategy=strategy, seed=7)
        a.alloc_exact(300_000)           # the cursor, for cyclic, far from the start
        return a

    a, twin = fresh(), fresh()
    before = a.to_bytes()
    core._fail_node_allocations(0)
    try:
        with pytest.raises(MemoryError):
            a.alloc(min=600_000) if strategy != "lowest" else a.alloc(min=700_000)
        with pytest.raises(MemoryError):
            a.alloc_many(5000)
    finally:
        core._fail_node_allocations(None)
    a._check()
    assert a.to_bytes() == before        # generator, cursor, fifo queue, tree: as they were
    assert a.alloc(min=600_000) == twin.alloc(min=600_000)
    assert a.alloc_many(5000).tolist() == twin.alloc_many(5000).tolist()


# ---------------------------------------------------------------- IDA

def test_ida_pickles_and_copies(backend):
    ida = backend.IDA()
    for _ in range(70):
        ida.alloc()
    ida.free(5)
    ida.alloc_min(2**31 - 3)
    for other in (pickle.loads(pickle.dumps(ida)), copy.copy(ida), copy.deepcopy(ida)):
        assert list(other) == list(ida)
        other.alloc()                    # independent of the original
        assert 5 not in ida and 5 in other
        other._check()


# ---------------------------------------------------------------- what users asked for

def test_add_device_keeps_the_settings_it_is_not_given(backend):
    calls = []
    a = backend.PasidAllocator(bits=4)
    a.add_device("gpu", bits=8, drain=3, on_teardown=calls.append)
    a.add_device("gpu", drain=5)                     # bits and the callback stay
    p = a.alloc()
    a.bind(p, "gpu")
    a.free(p)
    assert calls == [p]
    a.unbind(p, "gpu")
    assert a.next_release_time() == 5.0              # the new drain
    a.add_device("gpu", on_teardown=None)            # None removes the callback
    q = a.alloc()
    a.bind(q, "gpu")
    a.free(q)
    assert calls == [p]
    a._check()


def test_exhaustion_says_what_is_only_waiting(backend):
    a = backend.PasidAllocator(bits=2, grace=4)      # PASIDs 1..3
    p = a.alloc()
    a.bind(p, "gpu")
    a.free(p)                                        # DRAINING
    a.free(a.alloc())                                # QUARANTINED until 4
    a.alloc()
    with pytest.raises(PasidExhausted, match=r"^no FREE PASID in 0..3 \(1 DRAINING and 1 "
                                             r"QUARANTINED, not reusable yet; the next at 4.0\)$"):
        a.alloc()
    with pytest.raises(PasidExhausted, match=r"^2 PASIDs asked, 0 FREE \(1 DRAINING"):
        a.alloc_many(2)
    b = backend.PasidAllocator(bits=1)
    b.alloc()
    with pytest.raises(PasidExhausted, match=r"^no FREE PASID in 0..1$"):
        b.alloc()


# ---------------------------------------------------------------- found by the fuzzers (fuzz/)
#
# Each test below is the smallest reproduction of a failure that fuzz/fuzz_ops.py,
# fuzz/fuzz_snapshot.py or fuzz/stress.py found. fuzz/fuzzlib.py's KNOWN names them: the
# fuzzers steer around a known failure until it is fixed (then its entry goes).


class Boom(Exception):
    """Raised on purpose by user code."""


def boom():
    raise Boom("user code raised")


def reencoded(a, **changes):
    """``a``'s snapshot with some fields replaced: encoded and checksummed again."""
    import struct
    import zlib

    from pasid import _snapshot

    blob = a.to_bytes()
    values = _snapshot.decode(blob[len(_snapshot.MAGIC) + 1:-4])
    for field, value in changes.items():
        values[_snapshot.FIELDS.index(field)] = value
    body = bytearray(_snapshot.MAGIC)
    body.append(blob[len(_snapshot.MAGIC)])       # its own version (2: no VMs)
    body += _snapshot.encode(values)
    body += struct.pack("<I", zlib.crc32(body))
    return bytes(body)


@pytest.mark.parametrize("allocate", [
    lambda a: a.alloc("vm"),
    lambda a: a.try_alloc("vm"),
    lambda a: a.alloc_exact(2, "vm"),
    lambda a: a.open("vm").pasid,
    lambda a: int(a.alloc_many(1, "vm")[0]),
], ids=["alloc", "try_alloc", "alloc_exact", "open", "alloc_many"])
def test_a_reclaim_inside_an_allocation_keeps_the_owner(backend, allocate):
    # The owner's only PASID is QUARANTINED; the allocation for the same owner
    # reclaims it first (lazily, at the clock's new reading), which left the
    # owner's record idle: it was dropped while the new PASID was tagged with
    # it. exit_owner then missed the PASID; in the core the PASID kept a
    # pointer to a freed record (to_bytes crashed on it later).
    t = [0.0]
    a = backend.PasidAllocator(bits=2, grace=1, clock=lambda: t[0])
    p = a.alloc("vm")
    a.free(p)                            # QUARANTINED until 1.0, still counted for "vm"
    t[0] = 1.0
    q = allocate(a)                      # reclaims p, then allocates for "vm"
    # exit_owner first: it finds the owner by name, never through q's record (which,
    # in the core, _check() or owner(q) would read after it was freed)
    assert a.exit_owner("vm") == [q]
    a._check()
    assert a.owner(q) == "vm"


@pytest.mark.parametrize("action", [boom, "re-enter"], ids=["raises", "re-enters"])
@pytest.mark.parametrize("call, at", [
    (lambda a, owner, p: a.free(p), 1),
    (lambda a, owner, p: a.exit_owner(owner), 2),
], ids=["free", "exit_owner"])
def test_a_hash_raising_after_the_change_changes_nothing(backend, call, at, action):
    # The owner's record goes idle with its last PASID; phase 3 drops it from
    # the owner table, which hashes the owner. A hash that raised there (or
    # called back and was refused as a re-entry) made free/exit_owner raise
    # after the PASID was released: an error that changed the allocator.
    a = backend.PasidAllocator(bits=4)
    if action == "re-enter":
        action = lambda: a.set_quota("other", 1)     # needs the owner table: refused
    owner = Hook("vm", action, at=at)
    p = a.alloc(owner)
    before = observable(a)
    owner.arm()
    try:
        call(a, owner, p)
    except (Boom, RuntimeError):
        assert observable(a) == before   # an error: nothing changed
    else:
        assert a.state(p) == State.FREE
    a._check()


@pytest.mark.parametrize("at", [1, 2, 3])
def test_a_device_hash_raising_in_remove_device_changes_nothing(backend, at):
    # remove_device dropped the bindings and marked the device removed, then
    # updated the device table under the registry lock, hashing the device:
    # a hash that raised there left a removed record in the table (_check()
    # failed) and the call raised after it had taken effect.
    a = backend.PasidAllocator(bits=4)
    device = Hook("gpu", boom, at=at)
    a.add_device(device)
    p = a.alloc()
    a.bind(p, device)
    before = observable(a)
    device.arm()
    try:
        a.remove_device(device)
    except Boom:
        assert observable(a) == before
    else:
        assert a.devices(p) == []
    a._check()


def test_remove_device_refused_as_a_re_entry_changes_nothing(backend):
    # A new owner's hash runs while the owner table changes under the registry
    # lock; from there remove_device removed the device, then asked for the
    # registry lock to update the device table, was refused (RuntimeError,
    # "re-entrant") and raised, with the device half removed.
    a = backend.PasidAllocator(bits=4)
    p = a.alloc()
    a.bind(p, "gpu")
    owner = Hook("vm", lambda: a.remove_device("gpu"), at=2)
    before = observable(a)
    owner.arm()
    try:
        a.alloc(owner)
    except RuntimeError as exc:
        assert "re-entrant" in str(exc)
        assert observable(a) == before and a.devices(p) == ["gpu"]
    a._check()


@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_a_hash_raising_in_set_quota_changes_nothing(backend, at):
    # set_quota of a new owner adds its record to the owner table, then the
    # quota to the quota table (the 4th hash of the owner): a hash raising
    # there left an idle record without a quota (_check() failed).
    a = backend.PasidAllocator(bits=4)
    owner = Hook("vm", boom, at=at)
    owner.arm()
    try:
        a.set_quota(owner, 0)
        quota_set = True
    except Boom:
        quota_set = False
    a._check()
    owner.armed = False
    if quota_set:
        with pytest.raises(QuotaExceeded):
            a.alloc(owner)
    else:
        a.alloc(owner)                   # no quota came into force
    a._check()


def test_a_drain_hold_at_nanosecond_times(backend):
    # With times past 2**53 (a clock in nanoseconds since the epoch), the pure
    # backend compared the new hold with "hold - 1", which equals the hold:
    # an unbind's drain hold was dropped and the PASID was FREE at once on
    # release; the core kept it QUARANTINED until now + drain.
    a = backend.PasidAllocator(bits=2)
    a.add_device("gpu", drain=1000)
    a.advance(to=1.7e18)
    p = a.alloc()
    a.bind(p, "gpu")
    a.unbind(p, "gpu")                   # the drain hold runs from now
    a.free(p)
    assert a.state(p) == State.QUARANTINED
    assert a.next_release_time() == 1.7e18 + 1000


@pytest.mark.parametrize("field, value", [
    ("grace", 1e301), ("grace", 10**400), ("now", 1e301), ("now", -1e301),
    ("now", 10**400), ("devices", [("gpu", 20, 1e301)]), ("devices", [("gpu", 20, 10**400)]),
], ids=["grace", "grace-int", "now", "now-negative", "now-int", "drain", "drain-int"])
def test_snapshot_times_out_of_range(backend, field, value):
    # Times are finite and within +-1e300 (README); a snapshot holding one
    # beyond raised ValueError or OverflowError from from_bytes, or loaded an
    # allocator whose clock could not move (advance refused any time).
    from pasid import SnapshotError

    a = backend.PasidAllocator(bits=4)
    blob = reencoded(a, **{field: value})
    with pytest.raises(SnapshotError):
        backend.PasidAllocator.from_bytes(blob)


@pytest.mark.parametrize("value", [2**63 - 1, 2**63])
def test_snapshot_counters_out_of_range(backend, value):
    # from_bytes accepted counters up to 2**63: the core raised OverflowError
    # at 2**63 (its counters are int64), and at 2**63 - 1 the next count
    # wrapped to -2**63; the pure backend counted on past 2**63. Either way the
    # allocator's own snapshot no longer loaded.
    from pasid import SnapshotError

    a = backend.PasidAllocator(bits=1)
    a.alloc()
    blob = reencoded(a, counters=[1, 0, 0, value, 1])
    try:
        b = backend.PasidAllocator.from_bytes(blob)
    except SnapshotError:
        return
    assert b.try_alloc() is None         # a refusal: failures + 1
    assert b.stats()["failures"] >= value
    assert backend.PasidAllocator.from_bytes(b.to_bytes()).to_bytes() == b.to_bytes()


@pytest.mark.parametrize("value", [2**63 - 1, 2**63])
def test_snapshot_quotas_out_of_range(backend, value):
    # from_bytes accepted a quota of 2**63 (the check's bound was inclusive): the
    # core raised OverflowError filling its int64 quota (fuzz/fuzz_snapshot.py).
    from pasid import SnapshotError

    a = backend.PasidAllocator(bits=2)
    a.alloc("o")
    blob = reencoded(a, quotas=[("o", value)])
    if value > 2**63 - 1:
        with pytest.raises(SnapshotError, match="quota"):
            backend.PasidAllocator.from_bytes(blob)
    else:
        b = backend.PasidAllocator.from_bytes(blob)
        b._check()
        assert b.to_bytes() == blob


def test_another_thread_in_the_middle_of_exit_owner(backend):
    # The core's critical section is the GIL on the normal build, and making a
    # PASID FREE drops its data inside it: a finalizer that blocks (closing a
    # file, taking a lock, or the interpreter's switch interval) let another
    # thread run in the middle of exit_owner. That thread freed and allocated
    # again a PASID exit_owner had not reached yet, and exit_owner then
    # released the other thread's new PASID.
    import threading

    a = backend.PasidAllocator(bits=3)
    inside, resume = threading.Event(), threading.Event()

    class Context:
        def __del__(self):
            inside.set()
            resume.wait(timeout=0.5)     # blocks: another thread may run

    p1 = a.alloc("vm", data=Context())   # released first: its data is dropped
    p2 = a.alloc("vm")
    seen = {}

    def other():
        inside.wait(timeout=5)
        try:
            a.free(p2)
            seen["again"] = a.alloc_exact(p2)
        except StateError:
            seen["refused"] = True       # exit_owner released p2 first: a serial order
        resume.set()

    thread = threading.Thread(target=other)
    thread.start()
    released = a.exit_owner("vm")
    thread.join()
    a._check()
    if "again" in seen:                  # the other thread went first: p2 is its PASID
        assert released == [p1]
        assert a.state(p2) == State.ACTIVE and a.refcount(p2) == 1
    else:
        assert released == [p1, p2] and a.state(p2) == State.FREE


def test_to_bytes_with_another_thread_in_the_middle(backend):
    # A garbage collection inside to_bytes runs Python code (gc callbacks,
    # finalizers; numpy's Python-level functions in the core's _freeze do as
    # much): on the GIL build another thread ran there and freed owned PASIDs
    # between the core's copy of the state flags and its read of the owners:
    # a NULL pointer, a segfault. Run in a subprocess; every collection point
    # of the first few is tried.
    import os
    import subprocess
    import sys

    import pasid

    code = f"""
import gc, threading
import {backend.__name__} as backend
for n in range(1, 9):
    a = backend.PasidAllocator(bits=6)
    held = [a.alloc(("vm", i), data=i) for i in range(40)]
    main = threading.get_ident()
    inside, resume = threading.Event(), threading.Event()
    count = [0]
    def callback(phase, info):
        if phase == "start" and threading.get_ident() == main and count[0] < n:
            count[0] += 1
            if count[0] == n:
                inside.set()
                resume.wait(timeout=0.25)   # the pure backend's lock keeps the other thread out
    def other():
        if inside.wait(timeout=2):
            for p in held:
                a.free(p)
        resume.set()
    thread = threading.Thread(target=other)
    thread.start()
    gc.callbacks.append(callback)
    threshold = gc.get_threshold()
    gc.set_threshold(1)
    try:
        blob = a.to_bytes()
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(callback)
        inside.set()
        resume.set()
    thread.join()
    b = type(a).from_bytes(blob)
    b._check()
"""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(pasid.__file__))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_device_repr_that_calls_back_from_an_error_message(backend):
    # The pure backend built bind's "wider than the device" message (the
    # device's repr) while holding its lock: a repr that called back into the
    # allocator deadlocked (the core raised InvalidPasid). Run in a thread so a
    # deadlock fails the test instead of hanging the suite.
    import threading

    a = backend.PasidAllocator(bits=4)

    class Device:
        def __repr__(self):
            return f"Device(pending={a.pending(self)})"

    device = Device()
    a.add_device(device, bits=1)
    p = a.alloc(min=2)
    raised = []

    def bind():
        try:
            a.bind(p, device)
        except InvalidPasid as exc:
            raised.append(exc)

    thread = threading.Thread(target=bind, daemon=True)
    thread.start()
    thread.join(timeout=2)
    assert not thread.is_alive(), "bind deadlocked in the device's repr"
    assert raised and "Device(pending=[])" in str(raised[0])


def test_a_handle_close_that_raised_can_be_retried(backend):
    # close() marked the handle closed before its put; when the put raised (the
    # clock raised), the reference stayed and a second close() was a no-op: the
    # PASID leaked until its owner exited.
    broken = []

    def clock():
        if broken:
            raise RuntimeError("clock broke")
        return 0.0

    a = backend.PasidAllocator(bits=4, clock=clock)
    h = a.open()
    broken.append(True)
    with pytest.raises(RuntimeError, match="clock broke"):
        h.close()
    broken.clear()
    h.close()
    assert h.closed and h.pasid not in a


@pytest.mark.parametrize("release", ["free", "advance", "exit_owner", "unbind"])
def test_data_is_dropped_after_the_change_and_its_finalizer_may_call_back(backend, release):
    # A PASID's data (and a binding's) is dropped once the change is complete, in
    # the same call, so its finalizer sees a consistent allocator and may call
    # back into it (the pure backend used to drop it under its lock: a deadlock).
    import threading

    a = backend.PasidAllocator(bits=4, grace=1 if release == "advance" else 0)
    seen = []

    class Context:
        def __del__(self):
            seen.append((a.state(p), len(a), a.stats()["active"]))

    def run():
        if release == "free":
            a.free(p)
        elif release == "advance":
            a.free(p)
            assert not seen               # QUARANTINED: the data is kept
            a.advance(by=1)
        elif release == "exit_owner":
            a.exit_owner("vm")
        else:
            a.free(p)                     # DRAINING: the binding's data is kept
            assert not seen
            a.unbind(p, "gpu")

    p = a.alloc("vm", data=Context())
    if release == "unbind":
        a.bind(p, "gpu", data=Context())
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "a finalizer that called back deadlocked"
    assert seen and all(entry == (State.FREE, 0, 0) for entry in seen)
    a._check()
