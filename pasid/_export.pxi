# Snapshots of PasidAllocator: the whole state out as the dict of
# pasid._snapshot.FIELDS (export_state, read in one critical section; a host with
# VMs adds "vms": FIELDS_V3), and a checked snapshot into a new allocator
# (load_state, restore; the VMs last). The dict is the
# same on both backends, so their bytes are the same. The twin of
# pasid/pure/export.py.


cdef dict export_state(PasidAllocator a):
    """The whole state as the dict of ``pasid._snapshot.FIELDS`` (shared with the pure
    backend), at one reading of the clock.

    The buffers are made first (that may run Python code); then one pass,
    with the garbage collector paused, settles the time and copies every
    table: C arrays into the buffers, the objects (owner keys, data, binding
    data, devices, quotas) into new lists. An owner's key is listed once:
    its record's ``mark`` holds its index while the pass runs and is reset
    before the pass ends. No Python code runs in the pass, so no other
    thread changes the state halfway through it. The columns are cut and
    encoded after.
    """
    cdef int64_t size = a._size
    cdef int64_t p, n_fifo = 0, n_keys = 0, n_data = 0, n_bound = 0, n_bind_data = 0
    cdef int64_t room = 0
    cdef int32_t record, q
    cdef uint8_t meta
    cdef _Owner owner
    cdef _Device info
    cdef double reading, now
    cdef int was_enabled
    cdef bint short_of_memory = False
    cdef uint32_t* columns = NULL    # the bindings: PASID, handle, count, data row (room each)
    cdef list owner_keys = [], marked = [], data = [], bind_data = []
    cdef list devices = [], handles = [], quotas = []
    cdef list vm_rows = []
    slots = np.empty(2 * size, dtype=np.uint8)
    generation = np.empty(size, dtype=np.uint32)
    refcount = np.empty(size, dtype=np.uint32)
    hold = np.empty(size, dtype=np.float64)
    owner_code = np.zeros(size, dtype=np.uint32)
    data_ids = np.empty(size, dtype=np.uint32)
    fifo = np.empty(size if a._fifo.prev != NULL else 0, dtype=np.uint32)
    cdef uint8_t[::1] slots_out = slots
    cdef uint32_t[::1] generation_out = generation
    cdef uint32_t[::1] refcount_out = refcount
    cdef double[::1] hold_out = hold
    cdef uint32_t[::1] owner_code_out = owner_code
    cdef uint32_t[::1] data_ids_out = data_ids
    cdef uint32_t[::1] fifo_out = fifo
    cdef uint32_t[:, ::1] bindings_out
    reading = a._reading()
    with cython.critical_section(a):
        wait_batch(a)
        was_enabled = _gc_pause()
        try:
            now = a._time(reading)
            a._settle_time(now)
            memcpy(&slots_out[0], a._slots, size * sizeof(Slot))
            memcpy(&refcount_out[0], a._refcount, size * sizeof(uint32_t))
            memcpy(&hold_out[0], a._hold, size * sizeof(double))
            for p in range(size):
                generation_out[p] = (a._generation_high[p] << 8) | a._slots[p].generation_low
            room = a._bindings.used
            if room:
                columns = <uint32_t*>malloc(4 * room * sizeof(uint32_t))
                short_of_memory = columns == NULL
            for p in range(size):
                meta = a._slots[p].meta
                if not (meta & (HAS_OWNER | HAS_DATA | HAS_BINDINGS)):
                    continue
                if meta & HAS_OWNER:
                    owner = <_Owner>a._owned.owner_of[p]
                    if owner.mark == 0:
                        marked.append(owner)
                        owner_keys.append(owner.key)
                        n_keys += 1
                        owner.mark = n_keys
                    owner_code_out[p] = <uint32_t>owner.mark
                if meta & HAS_DATA:
                    data_ids_out[n_data] = <uint32_t>p
                    n_data += 1
                    data.append(a._data[p])
                if meta & HAS_BINDINGS and columns != NULL:
                    record = a._bindings.first[p]
                    while record >= 0:
                        columns[n_bound] = <uint32_t>p
                        columns[room + n_bound] = <uint32_t>a._bindings.recs[record].device
                        columns[2 * room + n_bound] = a._bindings.recs[record].count
                        if a._bind_data[record] is not None:
                            columns[3 * room + n_bind_data] = <uint32_t>n_bound
                            n_bind_data += 1
                            bind_data.append(a._bind_data[record])
                        n_bound += 1
                        record = a._bindings.recs[record].next
            for found in a._device_list:
                if found is not None:
                    info = <_Device>found
                    devices.append((info.key, info.bits, info.drain))
                    handles.append(info.handle)
            for found, quota in a._quota.items():
                quotas.append(((<_Owner>found).key, quota))
            if a._vms is not None:
                for found in a._vms.vms:
                    vm_rows.append(vm_row(<GuestSpace>found))
            if a._fifo.prev != NULL:
                q = a._fifo.head
                while q >= 0:
                    fifo_out[n_fifo] = <uint32_t>q
                    n_fifo += 1
                    q = a._fifo.next[q]
            scalars = (a._rng, a._cursor,
                       [a._allocations, a._releases, a._reclaimed,
                        a._failures, a._high_water])
        finally:
            for found in marked:
                (<_Owner>found).mark = 0
            _gc_resume(was_enabled)
    # from here on, copies only
    try:
        if short_of_memory:
            raise MemoryError()
        bindings = np.empty((4, n_bound), dtype=np.uint32)
        if n_bound:
            bindings_out = bindings
            for q in range(4):
                memcpy(&bindings_out[q, 0], columns + q * room, n_bound * sizeof(uint32_t))
    finally:
        free(columns)
    raw = slots.reshape(size, 2)
    meta_bytes = raw[:, 0]
    state = meta_bytes & STATE_MASK
    ids = np.flatnonzero(state)
    multi = np.flatnonzero(meta_bytes & MULTI)
    generated = np.flatnonzero(generation)
    held = np.flatnonzero(meta_bytes & HAS_HOLD)
    index_of = np.zeros(max(handles) + 1 if handles else 1, dtype=np.uint32)
    index_of[handles] = np.arange(len(handles), dtype=np.uint32)
    state = {
        "bits": a._bits,
        "strategy": STRATEGIES[a._strategy],
        "grace": a._grace,
        "now": now,
        "rng": scalars[0],
        "cursor": scalars[1],
        "counters": scalars[2],
        "states": _snapshot.arrays(ids, state[ids], "u1"),
        "refcounts": _snapshot.arrays(multi, refcount[multi], "<u4"),
        "generations": _snapshot.arrays(generated, generation[generated], "<u4"),
        "holds": _snapshot.arrays(held, hold[held], "<f8"),
        "owner_keys": owner_keys,
        "owners": _snapshot.column(owner_code[ids]),
        "data": (_snapshot.id_column(data_ids[:n_data]), data),
        "devices": devices,
        "bindings": (_snapshot.id_column(bindings[0]),
                     _snapshot.column(index_of[bindings[1]]),
                     _snapshot.column(bindings[2])),
        "binding_data": (_snapshot.id_column(bindings[3, :n_bind_data]), bind_data),
        "quotas": quotas,
        "fifo": _snapshot.column(fifo[:n_fifo]) if a._fifo.prev != NULL else None,
    }
    if vm_rows:
        state["vms"] = [
            _snapshot.vm_entry(row[0], _args.VM_MODES[row[1]], row[2], row[3], row[4],
                               [int(index_of[handle]) for handle in row[5]], *row[6:])
            for row in vm_rows]
    return state


cdef tuple vm_row(GuestSpace vm):
    """A VM's part of export_state's pass (no Python code runs): name, mode, bits, lo,
    hi, its devices' handles (a device removed since it was assigned left out), guest
    PASIDs, host PASIDs, tagged guest PASIDs, tags, allocations, failures."""
    cdef list guests = vm._guests(), hosts = [], tagged = [], tags = [], handles = []
    cdef int64_t g
    for g in guests:
        hosts.append(vm._host_of(g))
        if vm._tags is not None and vm._tags[g] is not None:
            tagged.append(g)
            tags.append(vm._tags[g])
    for info in vm._devices:
        if not (<_Device>info).gone:
            handles.append((<_Device>info).handle)
    return (vm._name, vm._mode, vm._bits, vm._lo, vm._hi, handles, guests, hosts, tagged,
            tags, vm._allocations, vm._failures)


cdef int load_state(PasidAllocator a, dict snap) except -1:
    """Fill a new, empty allocator from a checked snapshot (``pasid._snapshot.check``).

    C loops over the columns: the space takes a word of IDs at a time, the
    owners' ACTIVE lists are linked in C arrays and written to the records
    once; a Python step per owner key, data item, device, binding and quota.
    No one else sees the allocator yet, so the order is free.
    """
    cdef Node* path[MAX_HEIGHT + 1]
    cdef Node* leaf
    cdef uint64_t bits
    cdef int64_t p, i, n, k, word, taken, n_keys
    cdef const int64_t[:] rows          # the states' IDs: the owners column follows them
    cdef const int64_t[:] ids
    cdef const int64_t[:] values
    cdef const int64_t[:] devices
    cdef const uint8_t[:] states
    cdef const double[:] times
    cdef int64_t[::1] use
    cdef int64_t[::1] active
    cdef int32_t[::1] first
    cdef void** record_of = NULL
    cdef _Owner record
    cdef list records = [], infos = [], objects, bound_data
    a._cursor = snap["cursor"]
    (a._allocations, a._releases, a._reclaimed, a._failures,
     a._high_water) = snap["counters"]
    rows, states = snap["states"]
    n = rows.shape[0]
    i = 0
    while i < n:                        # a word of the space at a time
        p = rows[i]
        word = p >> 6
        bits = 0
        taken = 0
        while i < n and (rows[i] >> 6) == word:
            bits |= (<uint64_t>1) << (rows[i] & 63)
            taken += 1
            i += 1
        leaf = space_leaf(&a.space, p, path)
        if leaf == NULL:
            raise MemoryError()
        space_take_bits(&a.space, leaf, path, p, bits, <int>taken)
    for i in range(n):
        a._left_free(rows[i], states[i])
    ids, values = snap["refcounts"]
    for i in range(ids.shape[0]):
        p = ids[i]
        a._slots[p].meta |= MULTI
        a._refcount[p] = <uint32_t>values[i]
    ids, values = snap["generations"]
    for i in range(ids.shape[0]):
        a._generation_set(ids[i], <uint32_t>values[i])
    ids, times = snap["holds"]
    for i in range(ids.shape[0]):
        p = ids[i]
        a._slots[p].meta |= HAS_HOLD
        a._hold[p] = times[i]
        if a._slots[p].meta & STATE_MASK == QUARANTINED:
            release_push(&a._queue, times[i], p)
    for owner, quota in snap["quotas"]:
        record = owner_new(owner)
        record.quota = quota
        owner_table_put(a, owner, record)
        a._quota[record] = quota
    for owner in snap["owner_keys"]:
        found = a._owners.get(owner)
        if found is None:
            found = owner_new(owner)
            owner_table_put(a, owner, <_Owner>found)
        records.append(found)
    n_keys = len(records)
    use = np.zeros(n_keys, dtype=np.int64)
    active = np.zeros(n_keys, dtype=np.int64)
    first = np.full(n_keys, -1, dtype=np.int32)
    record_of = <void**>malloc((n_keys + 1) * sizeof(void*))
    if record_of == NULL:
        raise MemoryError()
    try:
        for k in range(n_keys):
            record_of[k] = <void*>records[k]
        values = snap["owners"]
        for i in range(n):
            if values[i] == 0:
                continue
            k = values[i] - 1
            p = rows[i]
            a._slots[p].meta |= HAS_OWNER
            a._owned.owner_of[p] = record_of[k]
            use[k] += 1
            if a._slots[p].meta & STATE_MASK == ACTIVE:   # as _owner_tag links it
                active[k] += 1
                a._owned.prev[p] = -1
                a._owned.next[p] = first[k]
                if first[k] >= 0:
                    a._owned.prev[first[k]] = <int32_t>p
                first[k] = <int32_t>p
    finally:
        free(record_of)
    for k in range(n_keys):
        record = <_Owner>records[k]
        record.use = use[k]
        record.active = active[k]
        record.first = first[k]
    ids, objects = snap["data"]
    if ids.shape[0]:
        a._data = [None] * a._size
    for i in range(ids.shape[0]):
        p = ids[i]
        a._slots[p].meta |= HAS_DATA
        a._data[p] = objects[i]
    for device, width, drain in snap["devices"]:
        info = _Device(device, len(a._device_list), width, float(drain), None)
        a._device_list.append(info)
        a._devices[device] = info
        infos.append(info)
    ids, devices, values = snap["bindings"]
    bound_data = [None] * ids.shape[0]
    rows, objects = snap["binding_data"]
    for i in range(rows.shape[0]):
        bound_data[rows[i]] = objects[i]
    for i in range(ids.shape[0]):
        bind_link(a, ids[i], <_Device>infos[devices[i]], bound_data[i],
                        <uint32_t>values[i])
    if a._fifo.prev != NULL:
        while a._fifo.head >= 0:
            fifo_remove(&a._fifo, a._fifo.head)
        ids = snap["fifo"]
        for i in range(ids.shape[0]):
            fifo_push(&a._fifo, ids[i])
    for vm in snap["vms"]:
        load_vm(a, vm, infos)
    return 0


cdef int load_vm(PasidAllocator a, dict vm, list infos) except -1:
    """A checked VM into the new allocator: its owner record (made if the name owns
    nothing and has no quota) pinned and pointing back, its devices assigned, its C
    tables filled (guest map pages, the translated guest space with 0 and every
    mapped number taken, the host's guest_of)."""
    cdef _Owner record
    cdef GuestSpace space
    cdef const int64_t[:] guests = vm["guests"]
    cdef const int64_t[:] hosts = vm["hosts"]
    cdef const int64_t[:] tagged
    cdef int64_t i, g, h
    cdef list tags
    name = vm["name"]
    found = a._owners.get(name)
    if found is None:
        found = owner_new(name)
        owner_table_put(a, name, <_Owner>found)
    record = <_Owner>found
    record.pins += 1                             # the VM's pin, as add_vm takes it
    if a._vms is None:
        a._vms = _VMTable(a._size)
    space = vm_make(a, name, vm["mode"], vm["bits"], vm["lo"], vm["hi"], -1,
                    [infos[i] for i in vm["devices"]], record, a._vms)
    for i in range(guests.shape[0]):
        g, h = guests[i], hosts[i]
        if space._translated:
            guestmap_reserve(&space._map, g)
            if space_take(&space._space, g) < 0:
                raise MemoryError()
            guestmap_set(&space._map, g, h)
        a._vms.guest_of[h] = <int32_t>g
    space._active = guests.shape[0]
    tagged, tags = vm["tags"]
    if tags:
        space._tags = [None] * (<int64_t>1 << space._bits)
        for i in range(tagged.shape[0]):
            space._tags[tagged[i]] = tags[i]
    space._allocations = vm["allocations"]
    space._failures = vm["failures"]
    return 0


def _restore(cls, dict snap, clock):
    """A new allocator holding a checked snapshot."""
    cdef PasidAllocator a = cls(snap["bits"], reserved=(), strategy=snap["strategy"],
                                grace=snap["grace"], clock=clock, seed=snap["rng"])
    if clock is None:
        a._now = snap["now"]
    load_state(a, snap)
    return a
