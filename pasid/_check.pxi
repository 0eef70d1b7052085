# The invariant check of PasidAllocator (its _check()): every table against the
# others, read in one critical section. The twin of pasid/pure/check.py.
#
# Checked: the ID space's own invariants; per PASID, its state against the space
# and its flags (refcount, tags, data, bindings, release time); the counts; per
# owner, its use, quota and ACTIVE list (pins: an idle record is kept only while
# an operation holds it, or as the last one named); the release queue (one entry per QUARANTINED PASID, a
# heap, times as release_at); the bindings both ways (per PASID in bind order, per
# device), each record once; the device tables; the fifo queue. O(N + bindings),
# with sets and dicts of Python objects: for tests and stress, not for hot paths.


cdef int check_allocator(PasidAllocator a) except -1:
    """Verify every invariant of ``a``; raise AssertionError on the first that fails."""
    cdef int64_t p, i
    cdef int32_t record, at
    cdef _Owner owner
    cdef _Device info
    with cython.critical_section(a):
        wait_batch(a)
        _check_node(a.space.root, a.space.height)
        _check_hint(&a.space)
        # the tables are read by identity: the check runs no __hash__/__eq__
        # (a dict keeps the key object it was first given: keys are not compared)
        records = list(a._owners.values())
        if a._last is not None and a._last.pending:    # the last named, out of the table
            records.append(a._last)
        current = {id(found) for found in records if not (<_Owner>found).gone}
        declared = {id(found) for found in a._devices.values()
                    if not (<_Device>found).gone}
        counts = [0] * 5
        use = {}
        active = {}
        for p in range(a._size):
            s = (a._slots[p].meta & STATE_MASK)
            counts[s] += 1
            if space_is_free(&a.space, p) != (s == FREE):
                raise AssertionError(f"PASID {p}: space and state {s} disagree")
            if a._slots[p].meta & MULTI and (s != ACTIVE or a._refcount[p] < 2):
                raise AssertionError(f"PASID {p}: refcount {a._refcount[p]} in state {s}")
            if s in (FREE, RESERVED) and (a._slots[p].meta & FLAG_MASK):
                raise AssertionError(f"PASID {p}: tags kept in state {s}")
            if s == DRAINING and not (a._slots[p].meta & HAS_BINDINGS):
                raise AssertionError(f"PASID {p} DRAINING with no device bound")
            if bool(a._slots[p].meta & HAS_DATA) != (a._data is not None
                                                  and a._data[p] is not None):
                raise AssertionError(f"PASID {p}: data flag disagrees")
            if a._slots[p].meta & HAS_OWNER:
                owner = <_Owner>a._owned.owner_of[p]
                if owner.gone or id(owner) not in current:
                    raise AssertionError(f"PASID {p}: its owner's record is not current")
                use[id(owner)] = use.get(id(owner), 0) + 1
                if s == ACTIVE:
                    (<set>active.setdefault(id(owner), set())).add(p)
            elif a._owned.owner_of[p] != NULL:
                raise AssertionError(f"PASID {p}: an owner without the flag")
        if counts != [a._counts[i] for i in range(5)]:
            raise AssertionError(f"counts disagree: {counts}")
        for found in records:
            owner = <_Owner>found
            if owner.gone:
                continue
            if owner.pending and owner is not a._last:
                raise AssertionError(f"owner {owner.key!r}: out of the table, not the last named")
            if owner.use != use.get(id(owner), 0) or owner.quota != a._quota.get(owner, -1):
                raise AssertionError(f"owner {owner.key!r}: use or quota disagrees")
            if owner.pins < 0:
                raise AssertionError(f"owner {owner.key!r}: unpinned more than pinned")
            if owner.use == 0 and owner.quota < 0 and owner.pins == 0 and owner is not a._last:
                # (a pinned one is held by an operation in flight, made in its phase 1;
                # the last one named is kept idle on purpose: _owners.pxi)
                raise AssertionError(f"owner {owner.key!r}: an idle record kept")
            listed = set()
            at = owner.first
            while at >= 0:
                if at in listed or (a._slots[at].meta & STATE_MASK) != ACTIVE:
                    raise AssertionError(f"owner {owner.key!r}: a bad ACTIVE list")
                listed.add(at)
                if a._owned.next[at] >= 0 and a._owned.prev[a._owned.next[at]] != at:
                    raise AssertionError(f"owner {owner.key!r}: back links disagree")
                at = a._owned.next[at]
            if listed != active.get(id(owner), set()) or owner.active != len(listed):
                raise AssertionError(f"owner {owner.key!r}: ACTIVE list disagrees")
        for found in a._quota:
            if (<_Owner>found).gone or id(found) not in current:
                raise AssertionError(f"owner {(<_Owner>found).key!r}: a quota without "
                                     "a current record")
        queued = sorted(a._queue.pasid[i] for i in range(a._queue.len))
        if queued != [p for p in range(a._size) if (a._slots[p].meta & STATE_MASK) == QUARANTINED]:
            raise AssertionError("every QUARANTINED PASID needs exactly one queue entry")
        problem = release_check(&a._queue)
        if problem is not None:
            raise AssertionError(problem)
        for i in range(a._queue.len):
            if (not ((a._slots[a._queue.pasid[i]].meta & FLAG_MASK) & HAS_HOLD)
                    or a._queue.time[i] != a._hold[a._queue.pasid[i]]):
                raise AssertionError("queue time disagrees with release_at")
        # bindings: per PASID in bind order, per device both ways, each record once
        seen = set()
        for p in range(a._size):
            if not (a._slots[p].meta & HAS_BINDINGS):
                continue
            if (a._slots[p].meta & STATE_MASK) not in (ACTIVE, DRAINING):
                raise AssertionError(f"PASID {p}: bindings in state {a._slots[p].meta & STATE_MASK}")
            record = a._bindings.first[p]
            handles = set()
            if record < 0:
                raise AssertionError(f"PASID {p}: the bindings flag without bindings")
            while record >= 0:
                if record in seen or a._bindings.recs[record].pasid != p or a._bindings.recs[record].count == 0:
                    raise AssertionError(f"PASID {p}: a bad binding record {record}")
                if a._bindings.recs[record].device in handles:
                    raise AssertionError(f"PASID {p}: a device bound twice")
                handles.add(a._bindings.recs[record].device)
                info = a._device_list[a._bindings.recs[record].device]
                if info is None or info.gone or p >> info.bits:
                    raise AssertionError(f"PASID {p}: bound to a removed or narrower device")
                seen.add(record)
                record = a._bindings.recs[record].next
        bound = 0
        for handle, found in enumerate(a._device_list):
            if found is None:
                continue
            info = <_Device>found
            if info.gone or info.handle != handle or id(info) not in declared:
                raise AssertionError(f"device {info.key!r}: its table entries disagree")
            record, i, at = info.first, 0, -1
            while record >= 0:
                if record not in seen or a._bindings.recs[record].device != handle \
                        or a._bindings.recs[record].dprev != at:
                    raise AssertionError(f"device {info.key!r}: a bad binding list")
                i += 1
                at = record
                record = a._bindings.recs[record].dnext
            if i != info.nbound:
                raise AssertionError(f"device {info.key!r}: {info.nbound} bindings counted, {i} listed")
            bound += i
        if bound != len(seen):
            raise AssertionError("binding records on no device")
        if a._callbacks != sum(1 for found in a._device_list if found is not None
                                  and (<_Device>found).on_teardown is not None):
            raise AssertionError("the count of devices with a callback disagrees")
        for found in a._devices.values():
            if (<_Device>found).gone:   # left by a __hash__/__eq__ that raised in remove_device
                continue
            if a._device_list[(<_Device>found).handle] is not found:
                raise AssertionError(f"device {(<_Device>found).key!r} not in the handle table")
        for record in range(a._bindings.used):
            if record not in seen and a._bind_data[record] is not None:
                raise AssertionError(f"free binding record {record} keeps data")
        if a._fifo.prev != NULL:
            problem = fifo_check(&a._fifo, {p for p in range(a._size)
                                               if (a._slots[p].meta & STATE_MASK) == FREE})
            if problem is not None:
                raise AssertionError(problem)
        if a._vms is not None:
            check_vms(a)
    return 0


cdef int check_vms(PasidAllocator a) except -1:
    """The VMs (critical section held): the twin of pure/check.py's _check_vms."""
    cdef int64_t g, h, mapped = 0, active, top
    cdef GuestSpace vm
    for item in a._vms.vms:
        vm = <GuestSpace>item
        if vm._record.guest is not vm or vm._removed:
            raise AssertionError(f"VM {vm._name!r} unlinked")
        active = 0
        top = <int64_t>1 << vm._bits
        for g in range(top if vm._translated else vm._hi + 1):
            h = vm._host_of(g)
            if h < 0:
                if vm._tags is not None and vm._tags[g] is not None:
                    raise AssertionError(f"a tag on guest PASID {g}, not ACTIVE")
                continue
            active += 1
            if (a._slots[h].meta & STATE_MASK) != ACTIVE:
                raise AssertionError(f"guest PASID {g} on a host PASID not ACTIVE")
            if not (a._slots[h].meta & HAS_OWNER) or a._owned.owner_of[h] != <void*>vm._record:
                raise AssertionError(f"host PASID {h} not its VM's")
            if a._vms.guest_of[h] != g:
                raise AssertionError(f"host PASID {h} does not map back")
            if not vm._lo <= h <= vm._hi:
                raise AssertionError(f"host PASID {h} outside its VM's range")
            if vm._translated and space_is_free(&vm._space, g):
                raise AssertionError(f"guest PASID {g} mapped and free in the guest space")
        if active != vm._active:
            raise AssertionError("guest count")
        if vm._translated and space_rank(&vm._space, top) != top - 1 - active:
            raise AssertionError("guest space count")
        mapped += active
    for h in range(a._size):
        if a._vms.guest_of[h] >= 0:
            mapped -= 1
    if mapped:
        raise AssertionError("host -> guest entries without a guest")
    return 0
