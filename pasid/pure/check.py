"""The invariant check of the pure PasidAllocator (its ``_check()``).

Every table against the others, read under the lock: the ID space's own
invariants; per PASID, its state against the space and its tags; the counts;
per owner, its use, quota and ACTIVE set (pins: an idle record is kept only
while an operation holds it, or as the last one named); the release queue; the bindings both ways; the
device tables; the fifo queue. O(N + bindings). The twin of
``pasid/_check.pxi``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pasid.pure.allocator import PasidAllocator

from pasid._state import ACTIVE, DRAINING, FREE, QUARANTINED, RESERVED

__all__ = ["check_allocator"]


def check_allocator(a: PasidAllocator) -> None:
    """Verify every invariant; raise AssertionError on the first that fails."""
    with a._lock:
        a._space._check()
        counts = [0] * 5
        for p in range(a._size):
            s = a._state[p]
            counts[s] += 1
            if a._space.is_free(p) != (s == FREE):
                raise AssertionError(f"PASID {p}: space and state {s} disagree")
            if (a._refcount[p] > 0) != (s == ACTIVE):
                raise AssertionError(f"PASID {p}: refcount {a._refcount[p]} in state {s}")
            if s in (FREE, RESERVED) and (p in a._owner_of or p in a._data
                                          or p in a._hold or p in a._bindings):
                raise AssertionError(f"PASID {p}: tags kept in state {s}")
            if s == DRAINING and p not in a._bindings:
                raise AssertionError(f"PASID {p} DRAINING with no device bound")
        if counts != a._counts:
            raise AssertionError(f"counts {a._counts} != {counts}")
        problem = a._queue.check()
        if problem is not None:
            raise AssertionError(problem)
        queued = [p for _, p in a._queue.entries()]
        if sorted(queued) != [p for p in range(a._size) if a._state[p] == QUARANTINED]:
            raise AssertionError("every QUARANTINED PASID needs exactly one queue entry")
        for release_at, p in a._queue.entries():
            if a._hold.get(p) != release_at:
                raise AssertionError(f"PASID {p}: queue time {release_at} != {a._hold.get(p)}")
        # the tables are read by identity: the check runs no __hash__/__eq__
        # (a dict keeps the key object it was first given: keys are not compared)
        current = {id(record) for record in a._owners.values() if not record.gone}
        use: dict[int, int] = {}
        active: dict[int, set[int]] = {}
        for p, record in a._owner_of.items():
            if record.gone or id(record) not in current:
                raise AssertionError(f"PASID {p}: its owner's record is not current")
            use[id(record)] = use.get(id(record), 0) + 1
            if a._state[p] == ACTIVE:
                active.setdefault(id(record), set()).add(p)
        for record in a._owners.values():
            if record.gone:
                continue
            if record.use != use.get(id(record), 0) or \
                    record.quota != a._quota.get(record, -1):
                raise AssertionError(f"owner {record.key!r}: use or quota disagrees")
            if record.pins < 0:
                raise AssertionError(f"owner {record.key!r}: unpinned more than pinned")
            if record.use == 0 and record.quota < 0 and record.pins == 0 \
                    and record is not a._last:
                # (a pinned one is held by an operation in flight, made in its phase 1;
                # the last one named is kept idle on purpose: pure/owners.py)
                raise AssertionError(f"owner {record.key!r}: an idle record kept")
            if record.active != active.get(id(record), set()):
                raise AssertionError(f"owner {record.key!r}: ACTIVE set disagrees")
        for record in a._quota:
            if record.gone or id(record) not in current:
                raise AssertionError(f"owner {record.key!r}: a quota without a current record")
        for p, bindings in a._bindings.items():
            if not bindings or a._state[p] not in (ACTIVE, DRAINING):
                raise AssertionError(f"PASID {p}: bindings in state {a._state[p]}")
            for handle, (count, _) in bindings.items():
                info = a._device_list[handle]
                if count <= 0 or info is None or info.gone or p not in info.bound \
                        or p >> info.bits:
                    raise AssertionError(f"PASID {p}: a bad binding to device {handle}")
        declared = {id(info) for info in a._devices.values() if not info.gone}
        for handle, info in enumerate(a._device_list):
            if info is None:
                continue
            if info.gone or info.handle != handle or id(info) not in declared:
                raise AssertionError(f"device {info.key!r}: its table entries disagree")
            for p in info.bound:
                if handle not in a._bindings.get(p, {}):
                    raise AssertionError(f"device {info.key!r}: stale PASID {p}")
        for info in a._devices.values():
            if info.gone:          # left by a __hash__/__eq__ that raised in remove_device
                continue
            if a._device_list[info.handle] is not info:
                raise AssertionError(f"device {info.key!r} not in the handle table")
        if a._fifo is not None:
            a._fifo._check({p for p in range(a._size) if a._state[p] == FREE})
        if a._vms is not None:
            _check_vms(a)


def _check_vms(a: PasidAllocator) -> None:
    """The VMs (lock held): each guest PASID maps to an ACTIVE host PASID its VM owns,
    and back; a translated guest's space holds exactly 0 and its mapped numbers."""
    table = a._vms
    assert table is not None
    mapped = 0
    for vm in table.vms:
        assert vm._record.guest is vm and not vm._removed, f"VM {vm._name!r} unlinked"
        for g, h in vm._host_of.items():
            assert a._state[h] == ACTIVE, f"guest PASID {g} on a host PASID not ACTIVE"
            assert a._owner_of.get(h) is vm._record, f"host PASID {h} not its VM's"
            assert table.guest_of.get(h) == g, f"host PASID {h} does not map back"
            assert vm._mode == 1 or g == h, f"identity guest PASID {g} on host PASID {h}"
            assert vm._lo <= h <= vm._hi, f"host PASID {h} outside its VM's range"
        mapped += len(vm._host_of)
        if vm._space is not None:
            vm._space._check()
            free = vm._space.count_free(0, (1 << vm._bits) - 1)
            assert free == (1 << vm._bits) - 1 - len(vm._host_of), "guest space count"
        for g in vm._owner:
            assert g in vm._host_of, f"a tag on guest PASID {g}, not ACTIVE"
    assert mapped == len(table.guest_of), "host -> guest entries without a guest"
