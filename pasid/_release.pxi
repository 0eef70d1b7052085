# The release queue and reclaim of PasidAllocator: a released PASID waits here
# (QUARANTINED) until its release_at, then becomes FREE; what happens at a
# release (DRAINING, QUARANTINED or FREE at once) and the teardown callbacks it
# owes. The twin of pasid/pure/release.py.
#
# ctypedef struct ReleaseQueue (in _core.pxd, where PasidAllocator holds one):
#     double* time       a binary heap of (release_at, PASID) entries, by time
#     int32_t* pasid     then PASID: room for every PASID (one entry each at most)
#     int64_t len


cdef int release_init(ReleaseQueue* q, int64_t capacity) noexcept nogil:
    """An empty queue with room for ``capacity`` entries; -1 out of memory (the caller
    destroys it either way)."""
    q.time = <double*>calloc(capacity, sizeof(double))
    q.pasid = <int32_t*>calloc(capacity, sizeof(int32_t))
    q.len = 0
    return -1 if q.time == NULL or q.pasid == NULL else 0


cdef void release_destroy(ReleaseQueue* q) noexcept nogil:
    free(q.time)
    free(q.pasid)
    q.time = NULL
    q.pasid = NULL
    q.len = 0


cdef inline bint release_due(const ReleaseQueue* q, double now) noexcept nogil:
    """True if the earliest entry's release_at is at or before ``now``. O(1)."""
    return q.len > 0 and q.time[0] <= now


cdef object release_next(const ReleaseQueue* q):
    """The earliest release_at waiting (a float), or None. O(1)."""
    return q.time[0] if q.len else None


cdef void release_push(ReleaseQueue* q, double release_at, int64_t p) noexcept nogil:
    """Push ``(release_at, p)`` onto the heap, ordered by (release_at, PASID). O(log n)."""
    cdef int64_t i = q.len, parent
    q.len += 1
    while i > 0:
        parent = (i - 1) >> 1
        if q.time[parent] < release_at or (q.time[parent] == release_at and q.pasid[parent] < p):
            break
        q.time[i] = q.time[parent]
        q.pasid[i] = q.pasid[parent]
        i = parent
    q.time[i] = release_at
    q.pasid[i] = <int32_t>p


cdef int64_t release_pop(ReleaseQueue* q) noexcept nogil:
    """Pop the earliest (release_at, PASID) and return the PASID (the queue is not
    empty). O(log n)."""
    cdef int64_t top = q.pasid[0]
    cdef int64_t n = q.len - 1
    cdef double time = q.time[n]
    cdef int32_t pasid = q.pasid[n]
    cdef int64_t i = 0, child
    q.len = n
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and (
                q.time[child + 1] < q.time[child] or
                (q.time[child + 1] == q.time[child] and q.pasid[child + 1] < q.pasid[child])):
            child += 1
        if time < q.time[child] or (time == q.time[child] and pasid < q.pasid[child]):
            break
        q.time[i] = q.time[child]
        q.pasid[i] = q.pasid[child]
        i = child
    if n:
        q.time[i] = time
        q.pasid[i] = pasid
    return top


cdef str release_check(const ReleaseQueue* q):
    """None if the queue is a heap by (release_at, PASID); else what is wrong."""
    cdef int64_t i
    for i in range(1, q.len):
        if (q.time[(i - 1) // 2], q.pasid[(i - 1) // 2]) > (q.time[i], q.pasid[i]):
            return "release queue is not a heap"
    return None


# ---------------------------------------------------------------- reclaim

cdef void make_free(PasidAllocator a, int64_t p) noexcept:
    """A PASID whose release is complete becomes FREE; its tags go.

    Deleting its data drops the allocator's reference to it: a finalizer of
    that object must not call back into the allocator (documented).
    """
    cdef uint8_t flags = a._slots[p].meta & FLAG_MASK
    a._counts[a._slots[p].meta & STATE_MASK] -= 1
    a._counts[FREE] += 1
    a._slots[p].meta = FREE                  # no refcount, no flags
    space_release(&a.space, p)
    if a._fifo.prev != NULL:
        fifo_push(&a._fifo, p)
    if flags & HAS_OWNER:
        owner_untag(a, p)
    if flags & HAS_DATA:
        a._bury(a._data[p])
        a._data[p] = None


cdef int64_t reclaim(PasidAllocator a, double now) except -1:
    """Every QUARANTINED PASID whose release_at <= now becomes FREE, ascending.

    The rare case of several at once sorts them in a buffer made before
    anything changes (MemoryError, nothing changed).
    """
    cdef int64_t n = 0, i
    cdef int32_t* expired
    if not a._queue.len or a._queue.time[0] > now:
        return 0
    if a._queue.len == 1 or a._queue.time[1] > now and (
            a._queue.len == 2 or a._queue.time[2] > now):
        # the common case: exactly one expired
        make_free(a, release_pop(&a._queue))
        a._reclaimed += 1
        return 1
    expired = <int32_t*>malloc(a._queue.len * sizeof(int32_t))
    if expired == NULL:
        raise MemoryError()
    while a._queue.len and a._queue.time[0] <= now:
        expired[n] = <int32_t>release_pop(&a._queue)
        n += 1
    qsort(expired, n, sizeof(int32_t), _compare_int32)
    for i in range(n):
        make_free(a, expired[i])
    free(expired)
    a._reclaimed += n
    return n


cdef void settle(PasidAllocator a, int64_t p, double now) noexcept:
    """A released PASID with no device bound: QUARANTINED until release_at, or FREE."""
    cdef double release_at = a._hold[p]   # HAS_HOLD: set at release
    if release_at <= now:
        make_free(a, p)
        a._reclaimed += 1
    else:
        a._counts[(a._slots[p].meta & STATE_MASK)] -= 1
        a._counts[QUARANTINED] += 1
        a._slots[p].meta = (a._slots[p].meta & ~STATE_MASK) | QUARANTINED
        release_push(&a._queue, release_at, p)


cdef void release(PasidAllocator a, int64_t p, double now) noexcept:
    """An ACTIVE PASID is released: DRAINING, QUARANTINED or FREE."""
    cdef uint8_t flags = (a._slots[p].meta & FLAG_MASK)
    cdef double release_at = now + a._grace
    a._releases += 1
    a._slots[p].meta &= ~MULTI
    if flags & HAS_OWNER:
        owned_unlink(a, p)
    if flags & HAS_HOLD and a._hold[p] > release_at:
        release_at = a._hold[p]
    if flags & HAS_BINDINGS:
        a._hold[p] = release_at
        a._slots[p].meta |= HAS_HOLD
        a._counts[ACTIVE] -= 1
        a._counts[DRAINING] += 1
        a._slots[p].meta = (a._slots[p].meta & ~STATE_MASK) | DRAINING
    elif release_at <= now:
        # no hold at all: FREE at once, the release time need not be kept
        make_free(a, p)
        a._reclaimed += 1
    else:
        a._hold[p] = release_at
        a._slots[p].meta |= HAS_HOLD
        a._counts[ACTIVE] -= 1
        a._counts[QUARANTINED] += 1
        a._slots[p].meta = (a._slots[p].meta & ~STATE_MASK) | QUARANTINED
        release_push(&a._queue, release_at, p)


cdef list teardown_of(PasidAllocator a, int64_t p, list teardown):
    """Phase 3: the ``(on_teardown, p)`` of the devices bound to a PASID just
    released, in bind order, appended to ``teardown`` (made when first needed)."""
    cdef int32_t record
    cdef _Device info
    cdef int was_enabled
    if not (a._slots[p].meta & HAS_BINDINGS) or a._callbacks == 0:
        return teardown
    # the common case first: no bound device has a callback, nothing to build
    record = a._bindings.first[p]
    while record >= 0:
        if (<_Device>a._device_list[a._bindings.recs[record].device]).on_teardown is not None:
            break
        record = a._bindings.recs[record].next
    if record < 0:
        return teardown
    was_enabled = _gc_pause()
    try:
        while record >= 0:
            info = <_Device>a._device_list[a._bindings.recs[record].device]
            if info.on_teardown is not None:
                if teardown is None:
                    teardown = []
                teardown.append((info.on_teardown, p))
            record = a._bindings.recs[record].next
    finally:
        _gc_resume(was_enabled)
    return teardown


@cython.final
cdef class _ReleaseQueueForTests:
    """A ReleaseQueue with the methods of its pure twin (pasid.pure.release.ReleaseQueue),
    so one state-machine test runs on both (tests/test_components.py). Not public."""

    cdef ReleaseQueue queue
    cdef int64_t capacity

    def __cinit__(self, entries=()):
        entries = list(entries)
        if release_init(&self.queue, len(entries) + 64) < 0:
            release_destroy(&self.queue)
            raise MemoryError()
        self.capacity = len(entries) + 64
        for release_at, p in entries:
            self.push(release_at, p)

    def __dealloc__(self):
        release_destroy(&self.queue)

    def __len__(self):
        return self.queue.len

    def entries(self):
        return [(self.queue.time[i], self.queue.pasid[i]) for i in range(self.queue.len)]

    def due(self, double now):
        return release_due(&self.queue, now)

    def next(self):
        return release_next(&self.queue)

    def push(self, double release_at, int64_t p):
        if self.queue.len == self.capacity:
            raise OverflowError("the test queue is full")
        release_push(&self.queue, release_at, p)

    def pop(self):
        if not self.queue.len:
            raise IndexError("pop from an empty release queue")
        return release_pop(&self.queue)

    def check(self):
        return release_check(&self.queue)
