# Bindings and devices of PasidAllocator: a record per declared device (its
# settings, handle and bindings), found through the device table (a dict keyed
# by the device object, changed under the registry lock) or, for the devices
# named lately, by identity; bindings in a pool of C records, each (PASID,
# device) pair once with its bind count, linked per PASID in bind order and per
# device; the driver's data for a pair in a list beside the pool. The twin of
# pasid/pure/bindings.py.
#
# ctypedef struct Bindings (in _core.pxd, where PasidAllocator holds one):
#     BindRec* recs      the pool (see BindRec); free records linked through .next
#     int64_t cap, used  its room, and the records ever used
#     int32_t free       the first free record, or -1
#     int32_t* first     per PASID: its first binding, while HAS_BINDINGS


@cython.final
cdef class _Device:
    """A declared device: its settings, handle and bindings. Attributes in _core.pxd."""

    def __cinit__(self, key, int handle, int bits, double drain, on_teardown):
        self.key = key
        self.handle = handle
        self.bits = bits
        self.drain = drain
        self.on_teardown = on_teardown
        self.gone = 0
        self.first = -1
        self.nbound = 0


cdef int bindings_init(Bindings* b, int64_t capacity, int scattered) noexcept nogil:
    """No binding yet, for ``capacity`` PASIDs (the pool grows at the first bind);
    -1 out of memory (the caller destroys it either way)."""
    b.recs = NULL
    b.cap = b.used = 0
    b.free = -1
    b.first = <int32_t*>pasid_table_new(capacity, sizeof(int32_t), scattered)
    return -1 if b.first == NULL else 0


cdef void bindings_destroy(Bindings* b, int64_t capacity, int scattered) noexcept nogil:
    free(b.recs)
    pasid_table_free(b.first, capacity, sizeof(int32_t), scattered)
    b.recs = NULL
    b.first = NULL


# ---------------------------------------------------------------- bindings (phase 2)


cdef int binds_reserve(PasidAllocator a) except -1:
    """Room for one more binding record, made before anything changes (MemoryError)."""
    if a._bindings.free >= 0:
        return 0
    return binds_room(a, 1)


cdef int binds_room(PasidAllocator a, int64_t k) except -1:
    """Room for ``k`` more binding records past the used ones (the free list aside),
    made before anything changes (MemoryError)."""
    cdef int64_t capacity
    cdef BindRec* grown
    cdef int was_enabled
    while a._bindings.used + k > a._bindings.cap:
        capacity = 64 if a._bindings.cap == 0 else 2 * a._bindings.cap
        if capacity > 0x7FFFFFFF:
            raise MemoryError("too many bindings")
        grown = <BindRec*>realloc(a._bindings.recs, capacity * sizeof(BindRec))
        if grown == NULL:
            raise MemoryError()
        a._bindings.recs = grown
        was_enabled = _gc_pause()          # a new list: no collection in phase 2
        try:
            a._bind_data.extend([None] * (capacity - a._bindings.cap))
        finally:
            _gc_resume(was_enabled)
        a._bindings.cap = capacity
    return 0


cdef int32_t bind_find(PasidAllocator a, int64_t p, int handle) noexcept:
    """The record binding ``p`` to the device with that handle, or -1."""
    cdef int32_t record
    if not (a._slots[p].meta & HAS_BINDINGS):
        return -1
    record = a._bindings.first[p]
    while record >= 0 and a._bindings.recs[record].device != handle:
        record = a._bindings.recs[record].next
    return record


cdef void bind_unlink(PasidAllocator a, int32_t record) noexcept:
    """Take a record off its PASID's list and its device's list; free it."""
    cdef BindRec* rec = &a._bindings.recs[record]
    cdef int64_t p = rec.pasid
    cdef int32_t at = a._bindings.first[p], before = -1
    cdef _Device info = <_Device>a._device_list[rec.device]
    while at != record:
        before = at
        at = a._bindings.recs[at].next
    if before >= 0:
        a._bindings.recs[before].next = rec.next
    else:
        a._bindings.first[p] = rec.next
        if rec.next < 0:
            a._slots[p].meta &= ~HAS_BINDINGS
    if rec.dprev >= 0:
        a._bindings.recs[rec.dprev].dnext = rec.dnext
    else:
        info.first = rec.dnext
    if rec.dnext >= 0:
        a._bindings.recs[rec.dnext].dprev = rec.dprev
    info.nbound -= 1
    rec.next = a._bindings.free
    a._bindings.free = record
    if a._bind_data[record] is not None:
        a._bury(a._bind_data[record])
        a._bind_data[record] = None


cdef int bind_in(PasidAllocator a, int64_t p, _Device info, object data) except -1:
    """The body of bind (critical section held, time settled, ``info`` current)."""
    cdef int32_t record, tail
    cdef BindRec* rec
    if (a._slots[p].meta & STATE_MASK) != ACTIVE:
        raise StateError(not_active("bind", p, _STATE_NAMES[(a._slots[p].meta & STATE_MASK)]))
    if p >> info.bits:
        raise InvalidPasid(too_wide(p, info.key, info.bits))
    record = bind_find(a, p, info.handle)
    if record >= 0:
        if a._bindings.recs[record].count == COUNT_MAX:
            raise OverflowError(bind_limit(p, info.key))
        a._bindings.recs[record].count += 1
        if data is not None:
            if a._bind_data[record] is not None:
                a._bury(a._bind_data[record])
            a._bind_data[record] = data
        return 0
    bind_link(a, p, info, data, 1)
    return 0


cdef int32_t bind_link(PasidAllocator a, int64_t p, _Device info, object data, uint32_t count) except -1:
    """A new binding record of ``p`` to ``info`` (none yet), last in ``p``'s bind order;
    MemoryError, nothing changed, when the pool cannot grow."""
    cdef int32_t record, tail
    cdef BindRec* rec
    binds_reserve(a)
    if a._bindings.free >= 0:
        record = a._bindings.free
        a._bindings.free = a._bindings.recs[record].next
    else:
        record = <int32_t>a._bindings.used
        a._bindings.used += 1
    rec = &a._bindings.recs[record]
    rec.pasid = <int32_t>p
    rec.device = info.handle
    rec.count = count
    rec.next = -1
    if data is not None:
        a._bind_data[record] = data
    if a._slots[p].meta & HAS_BINDINGS:       # bind order: append
        tail = a._bindings.first[p]
        while a._bindings.recs[tail].next >= 0:
            tail = a._bindings.recs[tail].next
        a._bindings.recs[tail].next = record
    else:
        a._bindings.first[p] = record
        a._slots[p].meta |= HAS_BINDINGS
    rec.dprev = -1
    rec.dnext = info.first
    if info.first >= 0:
        a._bindings.recs[info.first].dprev = record
    info.first = record
    info.nbound += 1
    return record


cdef int unbind_in(PasidAllocator a, int64_t p, _Device info, double now) except -1:
    """The body of unbind (critical section held, time settled); the state after."""
    cdef int state = a._slots[p].meta & STATE_MASK
    cdef int32_t record = bind_find(a, p, info.handle)
    cdef double hold
    if record < 0:
        raise StateError(not_bound(p, info.key))
    if a._bindings.recs[record].count > 1:
        a._bindings.recs[record].count -= 1
        return state
    hold = now + info.drain
    if not (a._slots[p].meta & HAS_HOLD) or hold > a._hold[p]:
        a._hold[p] = hold
        a._slots[p].meta |= HAS_HOLD
    bind_unlink(a, record)
    if not (a._slots[p].meta & HAS_BINDINGS) and state == DRAINING:
        settle(a, p, now)
    return a._slots[p].meta & STATE_MASK


# ---------------------------------------------------------------- the device table (phase 1)


cdef inline _Device recent_device(PasidAllocator a, object device):
    """The current record of ``device`` if it is among the devices named lately
    (by identity: no __hash__/__eq__, no dict look-up), else None. Inline: the
    common case of bind and unbind costs no call."""
    cdef _Device info
    cdef Py_ssize_t i
    for i in range(0, 2 * RECENT_DEVICES, 2):
        if a._recent_devices[i] is device:
            info = <_Device>a._recent_devices[i + 1]
            if not info.gone:
                return info
    return None


cdef _Device device_record(PasidAllocator a, object device, bint declare):
    """The current record of ``device`` (phase 1); None if it is not declared and
    ``declare`` is false, else declared with the defaults."""
    cdef _Device info = recent_device(a, device)
    if info is not None:
        return info
    found = a._devices.get(device)
    if found is not None and not (<_Device>found).gone:
        remember_device(a, device, <_Device>found)
        return <_Device>found
    if not declare:
        return None
    a._enter_registry()
    try:
        found = a._devices.get(device)
        if found is not None and not (<_Device>found).gone:
            return <_Device>found
        info = _Device(device, len(a._device_list), MAX_BITS, 0.0, None)
        a._device_list.append(info)
        try:
            a._devices[device] = info       # its __hash__/__eq__ may raise
        except BaseException:
            a._device_list.pop()
            raise
    finally:
        a._leave_registry()
    return info


cdef void remember_device(PasidAllocator a, object device, _Device info) noexcept:
    """Keep ``device`` (the object named) and its record among the recent ones.
    The entries are a cache: a record gone is skipped, and removing a device
    forgets its entries."""
    cdef Py_ssize_t i = 2 * a._recent_next
    a._recent_devices[i] = device
    a._recent_devices[i + 1] = info
    a._recent_next = (a._recent_next + 1) % RECENT_DEVICES


cdef _Device device_at(PasidAllocator a, int device):
    """The current record of the device with that handle; StateError if none."""
    cdef object info = None
    if 0 <= device < len(a._device_list):
        info = a._device_list[device]
    if info is None:
        raise StateError(no_handle(device))
    return <_Device>info


# ---------------------------------------------------------------- declaring and removing devices


cdef int device_settings(PasidAllocator a, object device, int64_t width, double drain_time,
                         bint callback_given, object on_teardown) except -1:
    """The body of add_device: ``device`` declared with the defaults if it is not,
    then the settings given (``width`` >= 0, ``drain_time`` >= 0, ``on_teardown``
    when ``callback_given``) set, all or none; its handle. Narrower than a PASID
    bound to it: InvalidPasid, nothing changed."""
    cdef _Device info
    cdef int32_t record
    cdef int64_t widest
    while True:
        info = device_record(a, device, True)
        with cython.critical_section(a):
            wait_batch(a)
            if not info.gone:
                widest = -1
                record = info.first
                while record >= 0:
                    if a._bindings.recs[record].pasid > widest:
                        widest = a._bindings.recs[record].pasid
                    record = a._bindings.recs[record].dnext
                if width >= 0 and widest >= 0 and widest >> width:
                    raise InvalidPasid(narrower_than_bound(device, widest, width))
                if width >= 0:
                    info.bits = <int>width
                if drain_time >= 0:
                    info.drain = drain_time
                if callback_given:
                    a._callbacks += (on_teardown is not None) - (info.on_teardown is not None)
                    info.on_teardown = on_teardown
                return info.handle


cdef int device_remove(PasidAllocator a, object device) except -1:
    """The body of remove_device up to its phase 3 (the caller's ``_after``): every
    binding of ``device`` dropped at once (no drain hold, no callback), the PASIDs
    left DRAINING by it settled in PASID order, its record marked gone and dropped
    from the device table. Unknown device: StateError, nothing changed."""
    cdef _Device info = device_record(a, device, False)
    cdef double reading, now
    cdef int32_t* drained = NULL
    cdef int64_t k = 0, i, p
    cdef int32_t record
    # called from a __hash__/__eq__ while this thread changes the tables, its own
    # table update (phase 3) could not run: refused before anything changes
    a._refuse_reentry()
    if info is None:
        raise StateError(unknown_device(device))
    reading = a._reading()
    with cython.critical_section(a):
        wait_batch(a)
        if info.gone:
            raise StateError(unknown_device(device))
        now = a._time(reading)
        a._settle_time(now)
        if info.nbound:
            drained = <int32_t*>malloc(info.nbound * sizeof(int32_t))
            if drained == NULL:
                raise MemoryError()
        while info.first >= 0:
            record = info.first
            p = a._bindings.recs[record].pasid
            bind_unlink(a, record)
            if not (a._slots[p].meta & HAS_BINDINGS) and (a._slots[p].meta & STATE_MASK) == DRAINING:
                drained[k] = <int32_t>p
                k += 1
        if k:
            qsort(drained, k, sizeof(int32_t), _compare_int32)
        for i in range(k):
            settle(a, drained[i], now)
        free(drained)
        info.gone = 1
        if info.on_teardown is not None:
            a._callbacks -= 1
        a._device_list[info.handle] = None
        for i in range(1, 2 * RECENT_DEVICES, 2):
            if a._recent_devices[i] is info:
                a._recent_devices[i - 1] = a._recent_devices[i] = None
    # the device's __hash__/__eq__ may raise here, after the change; then its record
    # stays in the table, marked gone (look-ups skip it)
    a._enter_registry()
    try:
        if a._devices.get(device) is info:
            del a._devices[device]
    except Exception:
        pass
    finally:
        a._leave_registry()
    return 0
