"""GuestSpace (SPEC §7) on both backends: the virtual command's golden tables, the two
modes, teardown, migration, and a state machine against a plain model with both
backends in lockstep."""

import copy
import pickle
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import model
from backends import ALL_BACKENDS, load_backend
from pasid import _snapshot
from pasid._errors import (InvalidPasid, MigrationConflict, PasidExhausted, QuotaExceeded,
                           SnapshotError, StateError)
from pasid._state import State

ALLOC, FREE = 1, 2


def host_with_vms(backend, **kwargs):
    host = backend.PasidAllocator(bits=kwargs.pop("bits", 8), grace=kwargs.pop("grace", 10))
    host.add_device("vf0", drain=2)
    host.add_device("vf1", drain=2)
    return host


# ---------------------------------------------------------------- the virtual command

# (layout, command word, response word), written from the driver's VCMD_* macros
# (pasid/_vcmd.py cites them): "3.1" operand/result << 8, SC = (rsp >> 1) & 3 with
# NO_PASID_AVAIL = INVALID_PASID = 2; "3.3" operand/result << 16, SC = (rsp & 0xff) >> 1
# with both = 16; an undefined command's status is 1 in both.
GOLDEN = [
    # a fresh translated VM of 2 guest bits: ALLOC gives 1, 2, 3, then none is left
    ("3.3", ALLOC, 0x1_0000), ("3.3", ALLOC, 0x2_0000), ("3.3", ALLOC, 0x3_0000),
    ("3.3", ALLOC, 0x20),                     # exhausted: NO_PASID_AVAIL 16 << 1
    ("3.3", FREE | 2 << 16, 0x0),             # success, no result
    ("3.3", FREE | 2 << 16, 0x20),            # freed already: INVALID_PASID
    ("3.3", FREE | 0 << 16, 0x20),            # PASID 0 is no guest's
    ("3.3", FREE | 9 << 16, 0x20),            # outside the guest's 2 bits
    ("3.3", 0, 0x2), ("3.3", 3, 0x2), ("3.3", 0xFF, 0x2),          # undefined: 1 << 1
    ("3.3", ALLOC | 1 << 16, 0x2),            # ALLOC with an operand: malformed
    ("3.3", FREE | 1 << 8, 0x2),              # 3.1's operand field under 3.3: malformed
    ("3.3", FREE | 1 << 40, 0x2),             # a reserved bit
    ("3.3", -1, 0x2), ("3.3", 2**64, 0x2),    # not a 64-bit word
    ("3.3", ALLOC, 0x2_0000),                 # 2 is FREE again: the lowest
    ("3.1", FREE | 1 << 8, 0x0),
    ("3.1", ALLOC, 0x100),                    # result << 8
    ("3.1", ALLOC, 0x4),                      # exhausted: code 2 << 1
    ("3.1", FREE | 7 << 8, 0x4),              # invalid: code 2 << 1
    ("3.1", 3, 0x2), ("3.1", FREE | 1 << 28, 0x2),   # past 3.1's operand field
    ("3.1", FREE | 1 << 8, 0x0),
]


def test_vcmd_golden_table(backend):
    host = host_with_vms(backend)
    vm = host.add_vm("vm0", bits=2)
    for step, (layout, word, expected) in enumerate(GOLDEN):
        assert vm.vcmd(word, encoding=layout) == expected, (step, layout, hex(word))
    host._check()


def test_vcmd_never_frees_another_vms_pasid(backend):
    host = host_with_vms(backend)
    vm0 = host.add_vm("vm0", mode="identity")
    vm1 = host.add_vm("vm1", mode="identity")
    p = vm0.alloc()
    assert vm1.vcmd(FREE | p << 16) == 0x20          # INVALID_PASID, nothing changed
    assert p in vm0 and host.state(p) == State.ACTIVE
    t0 = host.add_vm("t0", mode="translated")
    t1 = host.add_vm("t1", mode="translated")
    g = t0.alloc()
    assert t1.vcmd(FREE | g << 16) == 0x20 and g in t0
    with pytest.raises(ValueError):
        vm0.vcmd(ALLOC, encoding="3.2")
    host.remove_vm("t1")
    with pytest.raises(StateError):
        t1.vcmd(ALLOC)


# ---------------------------------------------------------------- the two modes


def test_translated_vms_share_numbers_not_host_pasids(backend):
    host = host_with_vms(backend, grace=10)
    a = host.add_vm("a", devices=["vf0"])
    b = host.add_vm("b", devices=["vf1"])
    ga, gb = a.alloc(), b.alloc()
    assert ga == gb == 1
    ha, hb = a.host_pasid(ga), b.host_pasid(gb)
    assert ha != hb and host.owner(ha) == "a" and host.owner(hb) == "b"
    assert a.guest_pasid(ha) == ga and b.guest_pasid(hb) == gb
    with pytest.raises(StateError):
        a.guest_pasid(hb)
    a.bind(ga, "vf0")
    with pytest.raises(StateError, match="not assigned"):
        a.bind(ga, "vf1")
    a.free(ga)
    # the guest number is FREE at once; the host PASID drains, then sits out the grace
    assert a.state(ga) == State.FREE and ga not in a
    assert host.state(ha) == State.DRAINING and a.stats()["host_held"] == 1
    again = a.alloc()
    assert again == ga and a.host_pasid(again) != ha
    host.unbind(ha, "vf0")
    assert host.state(ha) == State.QUARANTINED
    host.advance(by=10)
    assert host.state(ha) == State.FREE and a.stats()["host_held"] == 0
    host._check()


def test_identity_is_the_host_namespace(backend):
    host = host_with_vms(backend, grace=5)
    vm = host.add_vm("vm0", mode="identity", min=10, max=12)
    assert vm.host_range == (10, 12)
    got = [vm.alloc() for _ in range(3)]
    assert got == [10, 11, 12] and [vm.host_pasid(g) for g in got] == got
    with pytest.raises(PasidExhausted):
        vm.alloc()
    assert vm.try_alloc() is None
    vm.free(10)
    assert vm.state(10) == State.QUARANTINED       # its own, in the host's release
    assert vm.state(13) == State.RESERVED and vm.state(9) == State.RESERVED
    with pytest.raises(StateError, match="not FREE"):
        vm.alloc_exact(10)
    host.advance(by=5)
    assert vm.state(10) == State.FREE and vm.alloc_exact(10) == 10
    host._check()


def test_widths_devices_and_names(backend):
    host = backend.PasidAllocator(bits=12)
    host.add_device("narrow", bits=6)
    host.add_device("wide")
    vm = host.add_vm("vm0", devices=["narrow"])
    assert vm.bits == 6 and vm.host_range == (1, 63)   # the device binds host PASIDs
    with pytest.raises(InvalidPasid, match="wider"):
        host.add_vm("vm1", bits=13)
    with pytest.raises(InvalidPasid, match="wider"):
        host.add_vm("vm1", bits=7, devices=["narrow"])
    with pytest.raises(StateError, match="assigned to VM 'vm0'"):
        host.add_vm("vm1", devices=["narrow"])
    with pytest.raises(StateError, match="declare it"):
        host.add_vm("vm1", devices=["nope"])
    with pytest.raises(StateError, match="exists"):
        host.add_vm("vm0")
    with pytest.raises(ValueError, match="mode"):
        host.add_vm("vm1", mode="mirrored")
    with pytest.raises(ValueError):
        host.add_vm(None)
    host.alloc(owner="busy")
    with pytest.raises(StateError, match="already holds"):
        host.add_vm("busy")
    assert host.vms() == ["vm0"]                # the refusals changed nothing
    with pytest.raises(StateError, match="no VM"):
        host.vm("vm1")
    with pytest.raises(InvalidPasid):
        vm.free(64)
    with pytest.raises(StateError):
        vm.free(1)
    host._check()


def test_quota_counts_the_vms_host_pasids(backend):
    host = host_with_vms(backend, grace=10)
    vm = host.add_vm("vm0", quota=2)
    g = vm.alloc()
    vm.alloc()
    with pytest.raises(QuotaExceeded, match="'vm0'"):
        vm.alloc()
    vm.free(g)                                   # QUARANTINED on the host: still counted
    assert vm.try_alloc() is None and vm.stats()["failures"] == 2
    host.advance(by=10)
    assert vm.alloc() == g
    host.set_quota("vm0", None)
    vm.alloc()
    host._check()


def test_remove_vm_never_blocks_and_leaves_others(backend):
    seen = []
    host = backend.PasidAllocator(bits=8, grace=3)
    host.add_device("vf0", drain=2, on_teardown=seen.append)
    a = host.add_vm("a", devices=["vf0"], quota=5)
    b = host.add_vm("b")
    for _ in range(3):
        a.alloc()
    a.bind(2, "vf0")
    kept = b.alloc()
    h2 = a.host_pasid(2)
    released = host.remove_vm("a")
    assert released == sorted(released) and len(released) == 3
    assert seen == [h2] and host.state(h2) == State.DRAINING
    assert a.removed and host.vms() == ["b"] and kept in b
    with pytest.raises(StateError, match="removed"):
        a.alloc()
    with pytest.raises(StateError, match="no VM"):
        host.remove_vm("a")
    c = host.add_vm("c", devices=["vf0"])     # the device and the quota are free again
    assert c.devices == ("vf0",)
    host.unbind(h2, "vf0")
    host._check()


def test_host_exit_of_the_vm_unmaps_its_guest(backend):
    host = host_with_vms(backend)
    vm = host.add_vm("vm0")
    g = vm.alloc()
    h = vm.host_pasid(g)
    assert host.exit_owner("vm0") == [h]
    assert g not in vm and len(vm) == 0 and vm.state(g) == State.FREE
    host.put(vm.host_pasid(vm.alloc()))        # the host's own free unmaps as well
    assert len(vm) == 0
    host._check()


# ---------------------------------------------------------------- migration


def test_translated_migration_keeps_guest_numbers(backend):
    src = host_with_vms(backend)
    vm = src.add_vm("vm0", devices=["vf0"])
    got = [vm.alloc(owner=f"proc{i}", data={"i": i}) for i in range(4)]
    vm.free(got[1])
    vm.get(got[2])
    vm.bind(got[3], "vf0", data="ctx")
    blob = vm.export()
    dst = host_with_vms(backend)
    dst.alloc_many(20)
    moved = dst.import_vm(blob, "vm0")
    assert list(moved) == [1, 3, 4] and moved.mode == "translated"
    assert moved.owner(3) == "proc2" and dst.refcount(moved.host_pasid(3)) == 2
    assert dst.data(moved.host_pasid(4)) == {"i": 3}
    assert dst.binding(moved.host_pasid(4), "vf0") == "ctx"
    assert all(moved.host_pasid(g) > 20 for g in moved)
    assert moved.alloc() == 2                   # the lowest FREE guest number
    dst._check()
    src._check()


def test_identity_migration_conflict_is_atomic(backend):
    src = host_with_vms(backend)
    vm = src.add_vm("vm0", mode="identity")
    for _ in range(5):
        vm.alloc()
    blob = vm.export()
    dst = host_with_vms(backend)
    dst.alloc_exact(2)
    dst.alloc_exact(4)
    before = dst.stats()
    with pytest.raises(MigrationConflict) as caught:
        dst.import_vm(blob, "vm0")
    assert caught.value.pasids == (2, 4) and "2, 4" in str(caught.value)
    assert isinstance(caught.value, StateError)
    assert dst.stats() == before and dst.vms() == []
    dst.free(2)
    dst.free(4)
    dst.advance(by=10)                          # past the grace: FREE again
    moved = dst.import_vm(blob, "vm0")
    assert list(moved) == [1, 2, 3, 4, 5] and [moved.host_pasid(g) for g in moved] == list(moved)
    dst._check()


def test_import_refusals_change_nothing(backend):
    src = host_with_vms(backend)
    vm = src.add_vm("vm0", devices=["vf0"])
    for _ in range(3):
        vm.alloc()
    blob = vm.export()
    dst = backend.PasidAllocator(bits=8)
    with pytest.raises(StateError, match="declare it"):
        dst.import_vm(blob, "vm0")
    dst.add_device("vf0")
    with pytest.raises(QuotaExceeded):
        dst.import_vm(blob, "vm0", quota=2)
    with pytest.raises(PasidExhausted):
        dst.import_vm(blob, "vm0", min=10, max=11)
    with pytest.raises(InvalidPasid):
        dst.import_vm(blob, "vm0", bits=1)
    for bad in (blob[:-1], blob[:10], b"PASIDVM\0" + bytes(20), blob[:-4] + bytes(4)):
        with pytest.raises(SnapshotError):
            dst.import_vm(bad, "vm0")
    with pytest.raises(TypeError):
        dst.import_vm("not bytes", "vm0")
    assert dst.vms() == [] and len(dst) == 0 and dst.stats()["allocations"] == 0
    assert dst.import_vm(blob, "vm0").devices == ("vf0",)
    dst._check()


# ---------------------------------------------------------------- snapshots (format version 3)


def busy_host(backend):
    """A host whose VMs hold a bit of everything a snapshot carries."""
    host = backend.PasidAllocator(bits=8, grace=10, seed=3)
    host.add_device("vf0", drain=2)
    host.add_device("vf1", drain=2)
    host.add_device("narrow", bits=6)
    t = host.add_vm("t", devices=["vf0"], quota=5, min=20)
    i = host.add_vm(("id", 1), mode="identity", min=100, max=150, devices=["vf1"])
    host.add_vm("idle", devices=["narrow"])          # owns nothing, no quota
    got = [t.alloc(owner=f"proc{n}", data={"n": n}) for n in range(4)]
    t.free(got[1])                                    # guest FREE, host QUARANTINED
    t.bind(got[2], "vf0", data="ctx")
    t.get(got[3])
    t.bind(got[0], "vf0")
    t.free(got[0])                                    # host DRAINING
    i.alloc()
    i.alloc(owner="init")
    i.free(100)
    host.alloc(owner="t")                             # the host's own, tagged with the VM's name
    host.alloc(owner="other")
    assert t.try_alloc() is None                      # a failure counted (quota 5)
    return host


def reloaded(backend, blob):
    host = backend.PasidAllocator.from_bytes(blob)
    host._check()
    return host


def test_snapshot_of_a_host_with_vms_round_trips(backend):
    host = busy_host(backend)
    blob = host.to_bytes()
    assert blob[len(_snapshot.MAGIC)] == 3
    for name in ALL_BACKENDS:
        again = reloaded(load_backend(name), blob)
        assert again.to_bytes() == blob
        assert again.vms() == ["t", ("id", 1), "idle"]
        for vm_name in again.vms():
            old, new = host.vm(vm_name), again.vm(vm_name)
            assert (new.mode, new.bits, new.host_range, new.devices, new.stats(), list(new)) == \
                   (old.mode, old.bits, old.host_range, old.devices, old.stats(), list(old))
            for g in old:
                assert new.host_pasid(g) == old.host_pasid(g)
                assert new.guest_pasid(new.host_pasid(g)) == g
                assert new.owner(g) == old.owner(g)
        t = again.vm("t")
        assert again.binding(t.host_pasid(3), "vf0") == "ctx" and t.stats()["failures"] == 1
        assert t.stats()["quota"] == 5 and again.vm("idle").bits == 6
        with pytest.raises(StateError, match="assigned"):      # the devices stay assigned
            again.add_vm("new", devices=["vf1"])
        # the loaded host goes on as the original does
        for h in (host, again):
            h.set_quota("t", None)
        assert t.alloc() == host.vm("t").alloc() == 1        # the lowest FREE guest number
        assert t.host_pasid(1) == host.vm("t").host_pasid(1)
        assert again.vm(("id", 1)).state(100) == State.QUARANTINED
        assert again.remove_vm("t") == host.remove_vm("t")
        again._check()
        assert again.to_bytes() == host.to_bytes()
        host = busy_host(backend)


def test_the_backends_write_the_same_bytes_for_vms():
    blobs = [busy_host(load_backend(name)).to_bytes() for name in ALL_BACKENDS]
    assert all(blob == blobs[0] for blob in blobs)
    for name in ALL_BACKENDS:
        for other in ALL_BACKENDS:
            there = reloaded(load_backend(name), blobs[0])
            assert reloaded(load_backend(other), there.to_bytes()).to_bytes() == blobs[0]


def test_a_host_without_vms_writes_version_2(backend):
    host = host_with_vms(backend)
    host.add_vm("vm0").alloc()
    host.remove_vm("vm0")
    blob = host.to_bytes()
    assert blob[len(_snapshot.MAGIC)] == 2
    assert reloaded(backend, blob).vms() == []


def test_copy_deepcopy_and_pickle_keep_vms(backend):
    host = busy_host(backend)
    blob = host.to_bytes()
    for twin in (copy.copy(host), copy.deepcopy(host), pickle.loads(pickle.dumps(host))):
        twin._check()
        assert twin.to_bytes() == blob
        vm = twin.vm("t")
        assert vm is not host.vm("t") and list(vm) == list(host.vm("t"))
        assert vm.owner(3) == "proc2"
        twin.set_quota("t", None)
        vm.alloc()                                   # the copy's, not the original's
        assert len(vm) == len(host.vm("t")) + 1
    # pickle carries any picklable name, which bytes cannot
    host = host_with_vms(backend)
    host.add_vm(frozenset({"vm"})).alloc(owner=object)
    twin = copy.deepcopy(host)
    twin._check()
    assert twin.vm(frozenset({"vm"})).owner(1) is object
    with pytest.raises(TypeError):
        host.to_bytes()


def test_a_removed_device_is_left_out_of_its_vm(backend):
    host = host_with_vms(backend)
    host.add_vm("vm0", devices=["vf0", "vf1"]).alloc()
    host.remove_device("vf0")
    again = reloaded(backend, host.to_bytes())
    assert again.vm("vm0").devices == ("vf1",)
    assert again.to_bytes() == host.to_bytes()


def reencoded_vms(blob, change):
    """``blob`` (version 3) with its VMs changed by ``change(vms)``, resealed."""
    values = _snapshot.decode(blob[len(_snapshot.MAGIC) + 1:-4])
    change(values[-1])
    body = bytearray(_snapshot.MAGIC) + bytes([3]) + _snapshot.encode(values)
    return bytes(body + struct.pack("<I", zlib.crc32(body)))


def _field(vm, name, value):
    vm[_snapshot.VM_FIELDS.index(name)] = value


def _translations(vm, guests, hosts):
    _field(vm, "translations", (_snapshot.id_column(guests), _snapshot.column(hosts)))


# each a change the check must refuse, and words of its message. The VMs of busy_host:
# t (translated, range 20..255, guests 3, 4 on host PASIDs 22, 23; it also owns 1, 20
# DRAINING and 21 QUARANTINED), ("id", 1) (identity, 100..150, 101 mapped), idle
# (translated, 6 bits, range 1..63, the narrow device); host PASID 2 is "other"'s.
BAD_VMS = {
    "no VMs": (lambda vms: vms.clear(), "without VMs"),
    "a short entry": (lambda vms: vms[0].pop(), "fields of a VM"),
    "a name None": (lambda vms: _field(vms[2], "name", None), "named None"),
    "a name unhashable": (lambda vms: _field(vms[2], "name", ["x"]), "not hashable"),
    "two VMs of one name": (lambda vms: _field(vms[2], "name", "t"), "listed twice"),
    "a mode unknown": (lambda vms: _field(vms[0], "mode", "mirrored"), "VM mode"),
    "bits wider than a device": (lambda vms: _field(vms[2], "bits", 7), "wider than"),
    "bits wider than the host": (lambda vms: _field(vms[0], "bits", 9), "guest bits 9"),
    "a range from 0": (lambda vms: _field(vms[2], "lo", 0), "lowest host PASID"),
    "a range past the device": (lambda vms: _field(vms[2], "hi", 64), "highest host PASID"),
    "an empty range": (lambda vms: (_field(vms[2], "lo", 9), _field(vms[2], "hi", 8)),
                       "highest host PASID"),
    "a device undeclared": (lambda vms: _field(vms[2], "devices", [3]), "device index"),
    "a device shared": (lambda vms: _field(vms[2], "devices", [0]), "assigned twice"),
    "a device twice": (lambda vms: _field(vms[0], "devices", [0, 0]), "assigned twice"),
    "guest 0": (lambda vms: _translations(vms[0], [0, 3], [22, 23]), "guest PASID 0"),
    "a host PASID of another VM": (lambda vms: _translations(vms[0], [3, 4], [22, 101]),
                                   "not its VM's"),
    "a host PASID the host owns": (lambda vms: _translations(vms[2], [1], [2]),
                                   "not its VM's"),
    "a host PASID not ACTIVE": (lambda vms: _translations(vms[0], [3, 4], [20, 23]),
                                "not ACTIVE"),
    "a host PASID out of range": (lambda vms: _field(vms[0], "lo", 23), "outside its VM"),
    "a host PASID twice": (lambda vms: _translations(vms[0], [3, 4], [22, 22]),
                           "mapped twice"),
    "guests not ascending": (lambda vms: _field(vms[0], "translations", (
        _snapshot.column([3, 0]), _snapshot.column([22, 23]))), "not ascending"),
    "columns of two lengths": (lambda vms: _translations(vms[0], [3, 4], [22, 23, 1]),
                               "mismatched lengths"),
    "identity off its host PASID": (lambda vms: _translations(vms[1], [102], [101]),
                                    "identity guest PASID"),
    "a tag on a free guest PASID": (lambda vms: _field(vms[0], "tags", (
        _snapshot.id_column([2]), ["x"])), "guest tag"),
    "a tag None": (lambda vms: _field(vms[0], "tags", (_snapshot.id_column([3]), [None])),
                   "holds None"),
    "a counter negative": (lambda vms: _field(vms[0], "counters", [-1, 0]), "counter"),
    "counters not two": (lambda vms: _field(vms[0], "counters", [1]), "counters"),
}


@pytest.mark.parametrize("change", list(BAD_VMS), ids=list(BAD_VMS))
def test_inconsistent_vms_are_refused(backend, change):
    blob = busy_host(backend).to_bytes()
    how, words = BAD_VMS[change]
    with pytest.raises(SnapshotError, match=words):
        backend.PasidAllocator.from_bytes(reencoded_vms(blob, how))


def test_what_the_check_lets_through_loads_whole(backend):
    blob = busy_host(backend).to_bytes()
    # the VM's name may own host PASIDs it does not map (here: all of them)
    host = reloaded(backend, reencoded_vms(blob, lambda vms: (
        _translations(vms[0], [], []), _field(vms[0], "tags", (_snapshot.id_column([]), [])))))
    t = host.vm("t")
    assert len(t) == 0 and t.state(3) == State.FREE and host.owner(22) == "t"
    with pytest.raises(StateError):
        t.guest_pasid(22)
    assert host.free(22) is None and t.stats()["active"] == 0
    host._check()
    # a translated guest may map any of its numbers to any host PASID it owns
    host = reloaded(backend, reencoded_vms(blob, lambda vms: (
        _translations(vms[0], [1, 60], [22, 23]),
        _field(vms[0], "tags", (_snapshot.id_column([60]), ["moved"])))))
    t = host.vm("t")
    assert list(t) == [1, 60] and t.guest_pasid(23) == 60 and t.owner(60) == "moved"
    host.free(22)                                     # the host's free unmaps the guest's
    assert list(t) == [60] and t.state(1) == State.FREE
    host._check()


# ---------------------------------------------------------------- the state machine

MODES = ("identity", "translated")
DEVICES = ("d0", "d1")
BITS = 6


class GuestMachine(RuleBasedStateMachine):
    """The backends in lockstep against the reference model (tests/model.py, its VMs):
    every result and every error of the backends agree, and they agree with the model
    on the guests, their host PASIDs, every host PASID's state and the counters."""

    def __init__(self):
        super().__init__()
        self.model = model.Model(1 << BITS, 2, devices=[(d, (20, 1)) for d in DEVICES])
        # one seed: a snapshot carries the generator's state, so the bytes agree
        self.hosts = [load_backend(name).PasidAllocator(bits=BITS, grace=2, seed=0)
                      for name in ALL_BACKENDS]
        for host in self.hosts:
            for device in DEVICES:
                host.add_device(device, drain=1)
        self.serial = 0

    def both(self, call):
        outcomes = []
        for host in self.hosts:
            try:
                outcomes.append(("ok", call(host)))
            except Exception as exc:  # noqa: BLE001 - compared across backends
                outcomes.append((type(exc).__name__, str(exc)))
        assert all(outcome == outcomes[0] for outcome in outcomes), outcomes
        return outcomes[0]

    def name(self, data):
        return data.draw(st.sampled_from(sorted(self.model.vms)))

    def guest(self, data, name):
        held = sorted(self.model.vms[name].host_of)
        return data.draw(st.sampled_from(held) if held and data.draw(st.booleans())
                         else st.integers(0, (1 << BITS) - 1))

    @precondition(lambda self: len(self.model.vms) < 3)
    @rule(mode=st.sampled_from(MODES), quota=st.none() | st.integers(0, 6),
          devices=st.sampled_from([(), ("d0",), ("d1",), ("d0", "d1")]),
          lo=st.integers(0, 40), hi=st.integers(20, 63))
    def add(self, mode, quota, devices, lo, hi):
        name = f"vm{self.serial}"
        self.serial += 1
        kind, _ = self.both(lambda h: h.add_vm(name, mode=mode, quota=quota, devices=devices,
                                               min=lo, max=hi).name)
        taken = any(d in vm.devices for vm in self.model.vms.values() for d in devices)
        layout = model.vm_range(self.model, mode, None, lo, hi, [20] * len(devices))
        if lo > hi:
            assert kind == "InvalidPasid"
        elif taken:
            assert kind == "StateError"
        else:
            assert kind == "ok" and layout is not None
            self.model.vms[name] = model.VM(name, mode, *layout, devices)
            if quota is not None:
                self.model.quota[name] = quota

    @precondition(lambda self: self.model.vms)
    @rule(data=st.data(), tagged=st.booleans())
    def alloc(self, data, tagged):
        name = self.name(data)
        tag = ("proc", self.serial) if tagged else None
        kind, got = self.both(lambda h: h.vm(name).alloc(tag))
        expected = model.guest_alloc(self.model, self.model.vms[name])
        assert kind == {"quota": "QuotaExceeded", "exhausted": "PasidExhausted"}.get(
            expected, "ok")
        if kind == "ok":
            assert got == expected
            if tag is not None:
                self.model.vms[name].tags[got] = tag

    @precondition(lambda self: self.model.vms)
    @rule(data=st.data())
    def free(self, data):
        name = self.name(data)
        g = self.guest(data, name)
        kind, _ = self.both(lambda h: h.vm(name).free(g))
        vm = self.model.vms[name]
        assert (kind == "ok") == (g in vm.host_of)
        if kind == "ok":
            self.model.put(vm.host_of[g])

    @precondition(lambda self: self.model.vms)
    @rule(data=st.data())
    def get(self, data):
        name = self.name(data)
        g = self.guest(data, name)
        kind, _ = self.both(lambda h: h.vm(name).get(g))
        vm = self.model.vms[name]
        assert (kind == "ok") == (g in vm.host_of)
        if kind == "ok":
            self.model.refcount[vm.host_of[g]] += 1

    @precondition(lambda self: self.model.vms)
    @rule(data=st.data(), device=st.sampled_from(DEVICES), bind=st.booleans())
    def bind(self, data, device, bind):
        name = self.name(data)
        g = self.guest(data, name)
        kind, _ = self.both(lambda h: (h.vm(name).bind if bind else h.vm(name).unbind)(g, device))
        vm = self.model.vms[name]
        h = vm.host_of.get(g)
        ok = device in vm.devices and h is not None and (bind or device in self.model.bindings[h])
        assert (kind == "ok") == ok, (kind, ok)
        if ok and bind:
            self.model.bindings[h][device] = self.model.bindings[h].get(device, 0) + 1
        elif ok:
            self.model.unbind(h, device)

    @precondition(lambda self: any(self.model.state[p] == model.DRAINING
                                   for p in range(1 << BITS)))
    @rule(data=st.data())
    def drain(self, data):
        """A device unbinds a host PASID its guest freed (DRAINING)."""
        p = data.draw(st.sampled_from(self.model.ids(model.DRAINING)))
        device = data.draw(st.sampled_from(sorted(self.model.bindings[p])))
        assert self.both(lambda h: h.unbind(p, device))[0] == "ok"
        self.model.unbind(p, device)

    @precondition(lambda self: self.model.vms)
    @rule(data=st.data(), layout=st.sampled_from(["3.1", "3.3"]), alloc=st.booleans())
    def vcmd(self, data, layout, alloc):
        name = self.name(data)
        shift = 16 if layout == "3.3" else 8
        g = None if alloc else self.guest(data, name)
        word = ALLOC if alloc else FREE | g << shift
        kind, response = self.both(lambda h: h.vm(name).vcmd(word, encoding=layout))
        assert kind == "ok"
        vm = self.model.vms[name]
        if alloc:
            expected = model.guest_alloc(self.model, vm)
            assert response == (expected << shift if isinstance(expected, int)
                                else (0x20 if layout == "3.3" else 0x4))
        elif g in vm.host_of:
            assert response == 0
            self.model.put(vm.host_of[g])
        else:
            assert response == (0x20 if layout == "3.3" else 0x4)

    @precondition(lambda self: self.model.vms)
    @rule(data=st.data(), host_side=st.booleans())
    def remove(self, data, host_side):
        name = self.name(data)
        if host_side:       # the host's own exit of the VM's owner: the VM stays, emptied
            released = self.both(lambda h: h.exit_owner(name))
            expected = [p for p in self.model.ids(model.ACTIVE) if self.model.owner[p] == name]
            for p in expected:
                self.model.release(p)
        else:
            released = self.both(lambda h: h.remove_vm(name))
            expected = model.remove_vm(self.model, name)
        assert released == ("ok", expected)

    @precondition(lambda self: self.model.vms)
    @rule(data=st.data(), mode=st.sampled_from(MODES))
    def migrate(self, data, mode):
        """Export, remove, import back under another name (the same host)."""
        name = self.name(data)
        new = f"vm{self.serial}"
        self.serial += 1
        blobs = [host.vm(name).export() for host in self.hosts]
        assert all(blob == blobs[0] for blob in blobs)
        vm = self.model.vms[name]
        entries = model.export_vm(self.model, vm)
        self.both(lambda h: h.remove_vm(name))
        model.remove_vm(self.model, name)
        kind, _ = self.both(lambda h: h.import_vm(blobs[0], new, mode=mode).name)
        layout = model.vm_range(self.model, mode, vm.bits, 0, (1 << BITS) - 1,
                                [20] * len(vm.devices))
        guests = [entry[0] for entry in entries]
        if mode == "identity" and any(self.model.state[g] != model.FREE for g in guests):
            assert kind == "MigrationConflict"
        elif mode == "translated" and len(guests) > len(
                [p for p in range(layout[1], layout[2] + 1) if self.model.state[p] == model.FREE]):
            assert kind == "PasidExhausted"
        else:
            assert kind == "ok", kind
            model.import_vm(self.model, new, mode, *layout, vm.devices, entries)

    @rule(how=st.sampled_from(["bytes", "pickle", "deepcopy", "other backend"]))
    def reload(self, how):
        """Snapshot each host and go on with its reload: the same bytes from every
        backend (version 3 while there are VMs), and nothing the model sees changes."""
        blobs = [host.to_bytes() for host in self.hosts]
        assert all(blob == blobs[0] for blob in blobs)
        assert blobs[0][len(_snapshot.MAGIC)] == (3 if self.model.vms else 2)
        modules = [load_backend(name) for name in ALL_BACKENDS]
        reloaded = []
        for i, (host, blob) in enumerate(zip(self.hosts, blobs)):
            if how == "bytes":
                again = type(host).from_bytes(blob)
            elif how == "pickle":
                again = pickle.loads(pickle.dumps(host))
            elif how == "deepcopy":
                again = copy.deepcopy(host)
            else:       # through the next backend (itself with PASID_NO_EXTENSION=1)
                other = modules[(i + 1) % len(modules)].PasidAllocator
                again = type(host).from_bytes(other.from_bytes(blob).to_bytes())
            again._check()
            assert again.to_bytes() == blob and again.vms() == host.vms()
            reloaded.append(again)
        self.hosts = reloaded

    @rule(by=st.integers(0, 3))
    def advance(self, by):
        self.both(lambda h: h.advance(by=by))
        self.model.now += by
        self.model.reclaim()

    @invariant()
    def agree(self):
        for name, vm in self.model.vms.items():
            guests = sorted(vm.host_of)
            assert self.both(lambda h: list(h.vm(name))) == ("ok", guests)
            assert self.both(lambda h: [h.vm(name).host_pasid(g) for g in guests]) == (
                "ok", [vm.host_of[g] for g in guests])
            assert self.both(lambda h: [h.vm(name).owner(g) for g in guests]) == (
                "ok", [vm.tags.get(g) for g in guests])
            stats = self.both(lambda h: h.vm(name).stats())[1]
            assert (stats["active"], stats["allocations"], stats["failures"]) == (
                len(guests), vm.allocations, vm.failures)
        assert self.both(lambda h: h.vms()) == ("ok", list(self.model.vms))
        assert self.both(lambda h: h.stats()) == ("ok", self.model.stats())
        states = self.both(lambda h: [int(h.state(p)) for p in range(1 << BITS)])
        assert states == ("ok", self.model.state)
        for host in self.hosts:
            host._check()


TestGuestMachine = GuestMachine.TestCase


# ---------------------------------------------------------------- export fuzzing


def _seed_blobs():
    """Blobs of varied VMs: both modes, tags, data, refcounts, bindings."""
    import pasid.pure as pure

    blobs = []
    for mode in MODES:
        host = pure.PasidAllocator(bits=8)
        host.add_device("vf0")
        host.add_device(("vf", 1))
        vm = host.add_vm("vm", mode=mode, devices=["vf0", ("vf", 1)], min=3)
        got = []
        for i in range(9):
            g = vm.alloc(owner=("proc", i % 3) if i % 2 else None,
                         data={"i": i} if i % 3 == 0 else None)
            if i % 4 == 0:
                vm.get(g)
            if i % 3 == 1:
                vm.bind(g, "vf0", data="ctx" if i % 2 else None)
                vm.bind(g, ("vf", 1))
            got.append(g)
        vm.free(got[2])
        blobs.append(vm.export())
    return blobs


SEED_BLOBS = _seed_blobs()
PLAIN = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**33) | st.text(max_size=3)
                     | st.binary(max_size=6),
                     lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner),
                     max_leaves=8)


def _mutate(data, blob):
    import struct
    import zlib

    from pasid import _snapshot, _vmblob

    kind = data.draw(st.sampled_from(["bytes", "field", "column"]))
    if kind == "bytes":
        raw = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(raw) - 1))
            op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
            if op == "flip":
                raw[at] ^= 1 << data.draw(st.integers(0, 7))
            elif op == "cut":
                del raw[at:at + data.draw(st.integers(1, 8))]
            else:
                raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        if data.draw(st.booleans()) and len(raw) > 4:       # the checksum made right again
            raw[-4:] = struct.pack("<I", zlib.crc32(bytes(raw[:-4])))
        return bytes(raw)
    values = _snapshot.decode(blob[len(_vmblob.MAGIC) + 1:-4])
    at = data.draw(st.integers(0, len(values) - 1))
    if kind == "field":
        values[at] = data.draw(PLAIN)
    else:       # a column or an item inside the field rewritten
        value = values[at]
        if isinstance(value, bytes) and value:
            cut = bytearray(value)
            cut[data.draw(st.integers(0, len(cut) - 1))] = data.draw(st.integers(0, 255))
            values[at] = bytes(cut)
        elif isinstance(value, (list, tuple)) and value:
            items = list(value)
            items[data.draw(st.integers(0, len(items) - 1))] = data.draw(PLAIN)
            values[at] = type(value)(items)
    body = bytearray(_vmblob.MAGIC)
    body.append(_vmblob.VERSION)
    _snapshot._encode(values, body, 0)
    body += struct.pack("<I", zlib.crc32(body))
    return bytes(body)


@given(data=st.data())
def test_import_of_mutated_exports(data):
    """Every backend refuses a mutated export with SnapshotError (TypeError for a
    non-hashable device, as the snapshot codec answers) and changes nothing, or imports a
    VM whose host passes its check and whose export loads again; the backends agree."""
    blob = _mutate(data, data.draw(st.sampled_from(SEED_BLOBS)))
    outcomes = []
    for name in ALL_BACKENDS:
        host = load_backend(name).PasidAllocator(bits=8)
        host.add_device("vf0")
        host.add_device(("vf", 1))
        before = host.stats()
        try:
            vm = host.import_vm(blob, "moved")
        except (SnapshotError, TypeError, StateError, InvalidPasid, PasidExhausted,
                QuotaExceeded) as exc:
            assert host.stats() == before and host.vms() == []
            outcomes.append((type(exc).__name__, str(exc)))
        else:
            host._check()
            again = host.vm("moved").export()
            twin = load_backend(name).PasidAllocator(bits=8)
            twin.add_device("vf0")
            twin.add_device(("vf", 1))
            assert list(twin.import_vm(again, "moved", mode="translated")) == list(vm)
            twin._check()
            outcomes.append(("ok", vm.mode, list(vm), again))
    assert all(outcome == outcomes[0] for outcome in outcomes), outcomes


def test_a_vm_made_while_another_is_being_made(backend):
    """A VM name whose __hash__ adds another VM (user code in add_vm's phase 1, before
    the host has a VM table): both VMs stand, on one table."""
    host = backend.PasidAllocator(bits=8)

    class Name:
        fired = False

        def __hash__(self):
            if not Name.fired:
                Name.fired = True
                host.add_vm("inner").alloc()
            return 7

        def __eq__(self, other):
            return self is other

    outer = host.add_vm(Name())
    g = outer.alloc()
    inner = host.vm("inner")
    assert list(inner) == [1] and list(outer) == [g] and len(host.vms()) == 2
    assert inner.guest_pasid(inner.host_pasid(1)) == 1
    assert outer.guest_pasid(outer.host_pasid(g)) == g
    host._check()


def test_guest_spaces_come_only_from_add_vm(backend):
    with pytest.raises(TypeError):
        backend.GuestSpace()
    if backend.__name__ == "pasid._core":
        with pytest.raises(TypeError, match="add_vm"):
            backend.GuestSpace.__new__(backend.GuestSpace)
