"""Snapshots of the pure PasidAllocator.

The whole state out as the dict of ``pasid._snapshot.FIELDS`` (export_state,
at one reading of the clock, under the lock; a host with VMs adds ``"vms"``:
``FIELDS_V3``), and a checked snapshot into a new allocator (load_state, the
VMs last: their owner records, devices and host PASIDs are loaded by then). The dict is the same on both backends, so their
bytes are the same. The twin of ``pasid/_export.pxi``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from pasid import _snapshot
from pasid._state import ACTIVE, QUARANTINED
from pasid.pure.bindings import _Device
from pasid.pure.fifo import FifoQueue
from pasid.pure.guest import MODES, GuestSpace, make_vm
from pasid.pure.owners import _Owner
from pasid.pure.release import ReleaseQueue

if TYPE_CHECKING:
    from pasid.pure.allocator import PasidAllocator

__all__ = ["export_state", "freeze", "load_state"]


def freeze(a: PasidAllocator, now: float) -> dict[str, Any]:
    """The whole state as the dict of ``pasid._snapshot.FIELDS`` (shared with the
    compiled core), taken under the lock: columns for what there is per PASID."""
    state = np.frombuffer(bytes(a._state), dtype=np.uint8)
    ids = np.flatnonzero(state)
    refcount = a._refcount
    multi = [p for p in ids.tolist() if refcount[p] >= 2]
    generation = np.array(a._generation, dtype=np.uint32)
    generated = np.flatnonzero(generation)
    holds = sorted(a._hold.items())
    # each owner once, in the order of its lowest PASID; per PASID 1 + its index
    owner_of = a._owner_of
    owned = sorted(owner_of)
    code_of: dict[int, int] = {}
    keys: list[Hashable] = []
    codes: list[int] = []
    for p in owned:
        record = owner_of[p]
        code = code_of.get(id(record))
        if code is None:
            keys.append(record.key)
            code = code_of[id(record)] = len(keys)
        codes.append(code)
    code_at = np.zeros(a._size, dtype=np.uint32)
    code_at[owned] = codes
    data = sorted(a._data.items())
    device_list = a._device_list
    index_of: dict[int, int] = {}
    devices: list[tuple[Hashable, int, float]] = []
    for info in device_list:
        if info is not None:
            index_of[info.handle] = len(devices)
            devices.append((info.key, info.bits, info.drain))
    bindings, binding_data = _snapshot.binding_columns(
        (p, index_of[handle], count, value)
        for p, pairs in sorted(a._bindings.items())
        for handle, (count, value) in pairs.items())
    frozen: dict[str, Any] = {
        "bits": a._bits,
        "strategy": a._strategy,
        "grace": a._grace,
        "now": now,
        "rng": a._rng.state,
        "cursor": a._cursor,
        "counters": [a._allocations, a._releases, a._reclaimed,
                     a._failures, a._high_water],
        "states": _snapshot.arrays(ids, state[ids], "u1"),
        "refcounts": _snapshot.arrays(multi, [refcount[p] for p in multi], "<u4"),
        "generations": _snapshot.arrays(generated, generation[generated], "<u4"),
        "holds": _snapshot.arrays([p for p, _ in holds], [t for _, t in holds], "<f8"),
        "owner_keys": keys,
        "owners": _snapshot.column(code_at[ids]),
        "data": (_snapshot.id_column([p for p, _ in data]), [value for _, value in data]),
        "devices": devices,
        "bindings": bindings,
        "binding_data": binding_data,
        "quotas": [(record.key, quota) for record, quota in a._quota.items()],
        "fifo": (_snapshot.column(np.fromiter(a._fifo, dtype=np.uint32,
                                              count=len(a._fifo)))
                 if a._fifo is not None else None),
    }
    if a._vms is not None and a._vms.vms:
        frozen["vms"] = [_vm_entry(vm, index_of) for vm in a._vms.vms]
    return frozen


def _vm_entry(vm: GuestSpace, index_of: dict[int, int]) -> list[Any]:
    """A VM as version 3 holds it (``pasid._snapshot.VM_FIELDS``); a device removed
    from the host since it was assigned is left out (it is no longer declared)."""
    guests = sorted(vm._host_of)
    tagged = sorted(vm._owner)
    return _snapshot.vm_entry(
        vm._name, MODES[vm._mode], vm._bits, vm._lo, vm._hi,
        [index_of[info.handle] for info in vm._devices if not info.gone],
        guests, [vm._host_of[g] for g in guests], tagged, [vm._owner[g] for g in tagged],
        vm._allocations, vm._failures)


def export_state(a: PasidAllocator) -> dict[str, Any]:
    """The whole state, at one reading of the clock."""
    reading = a._reading()
    with a._lock:
        now = a._time(reading)
        a._settle_time(now)
        return freeze(a, now)


def load_state(a: PasidAllocator, snap: dict[str, Any]) -> None:
    """Fill a new, empty allocator from a checked snapshot (``pasid._snapshot.check``)."""
    a._cursor = snap["cursor"]
    (a._allocations, a._releases, a._reclaimed, a._failures,
     a._high_water) = snap["counters"]
    ids, states = snap["states"]
    for p, state in zip(ids.tolist(), states.tolist()):
        a._take_state(p, state)
        if state == ACTIVE:
            a._refcount[p] = 1
    for p, count in zip(*(x.tolist() for x in snap["refcounts"])):
        a._refcount[p] = count
    for p, generation in zip(*(x.tolist() for x in snap["generations"])):
        a._generation[p] = generation
    a._hold = dict(zip(*(x.tolist() for x in snap["holds"])))
    for owner, quota in snap["quotas"]:
        record = a._owners[owner] = _Owner(owner)
        record.quota = quota
        a._quota[record] = quota
    records = []
    for owner in snap["owner_keys"]:
        found = a._owners.get(owner)
        records.append(found if found is not None
                       else a._owners.setdefault(owner, _Owner(owner)))
    state_of = a._state
    for p, code in zip(ids.tolist(), snap["owners"].tolist()):
        if code:
            record = records[code - 1]
            a._owner_of[p] = record
            record.use += 1
            if state_of[p] == ACTIVE:
                record.active.add(p)
    data_ids, values = snap["data"]
    a._data = dict(zip(data_ids.tolist(), values))
    for device, bits, drain in snap["devices"]:
        info = _Device(device, len(a._device_list))
        info.bits, info.drain = bits, float(drain)
        a._device_list.append(info)
        a._devices[device] = info
    bound, bound_to, counts = (column.tolist() for column in snap["bindings"])
    rows, values = snap["binding_data"]
    bind_data = dict(zip(rows.tolist(), values))
    device_list = a._device_list
    for row, p in enumerate(bound):
        info = device_list[bound_to[row]]
        assert info is not None
        a._bindings.setdefault(p, {})[info.handle] = [counts[row], bind_data.get(row)]
        info.bound.add(p)
    if a._fifo is not None:
        a._fifo = FifoQueue(a._size, snap["fifo"].tolist())
    a._queue = ReleaseQueue((a._hold[p], p) for p in ids.tolist()
                            if a._state[p] == QUARANTINED)
    for vm in snap["vms"]:
        _load_vm(a, vm)


def _load_vm(a: PasidAllocator, vm: dict[str, Any]) -> None:
    """A checked VM into the new allocator: its owner record (made if the name owns
    nothing and has no quota) pinned and pointing back, its devices assigned, its
    tables filled."""
    record = a._owners.get(vm["name"])
    if record is None:
        record = a._owners[vm["name"]] = _Owner(vm["name"])
    record.pins += 1                             # the VM's pin, as add_vm takes it
    devices = [a._device_list[i] for i in vm["devices"]]
    space = make_vm(a, vm["name"], vm["mode"], vm["bits"], vm["lo"], vm["hi"], -1,
                    cast("list[_Device]", devices), record)
    table = space._table
    for g, h in zip(vm["guests"].tolist(), vm["hosts"].tolist()):
        space._host_of[g] = h
        table.guest_of[h] = g
        if space._space is not None:
            space._space.take(g)
    tagged, tags = vm["tags"]
    space._owner = dict(zip(tagged.tolist(), tags))
    space._allocations, space._failures = vm["allocations"], vm["failures"]
