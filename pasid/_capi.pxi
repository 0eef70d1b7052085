# The public C-level API: the table of pasid/capi.pxd, filled here and exported as
# the capsule ``pasid._core._C_API`` (as ``datetime.datetime_CAPI``).
#
# Each entry is the class's ``c_*`` method of the same name itself (_allocator.pxi,
# _ida.pxi; the guests' below, over GuestSpace's cdef methods, and vcmd GuestSpace._vcmd
# itself): the function its vtable holds, so a caller pays one indirect call as
# it did through the vtable. A thin function calling the method instead (a direct
# call gcc does not inline: c_alloc is too large) cost 8-13 ns more per W1 pair,
# measured from examples/cython_sim. The opaque handle is the object's own struct
# (pasid/capi.pxd names its tag), so the entry's type and the method's are the
# same C type; Cython does not know that, hence the cast below. Assigning each
# method to a variable of its own type first makes Cython check the method's
# signature against the entry's: a method changed without its entry is a compile
# error here, not a crash in a caller. Keep the order of pasid/capi.pxd: entries are
# appended, never moved (its version rule).

from cpython.pycapsule cimport PyCapsule_New
from pasid.capi cimport (PASID_CAPI_VERSION, PASID_VCMD_31, PASID_VCMD_33, pasid_allocator_t,
                         pasid_capi_t, pasid_guest_t, pasid_ida_t)


cdef pasid_allocator_t* _capi_allocator(object obj) except NULL:
    if type(obj) is not PasidAllocator:
        raise TypeError(f"pasid's C API needs a pasid._core.PasidAllocator, not "
                        f"{type(obj).__module__}.{type(obj).__qualname__}")
    return <pasid_allocator_t*><void*>obj


cdef pasid_ida_t* _capi_ida(object obj) except NULL:
    if type(obj) is not IDA:
        raise TypeError(f"pasid's C API needs a pasid._core.IDA, not "
                        f"{type(obj).__module__}.{type(obj).__qualname__}")
    return <pasid_ida_t*><void*>obj


cdef pasid_guest_t* _capi_guest(object obj) except NULL:
    if type(obj) is not GuestSpace:
        raise TypeError(f"pasid's C API needs a pasid._core.GuestSpace, not "
                        f"{type(obj).__module__}.{type(obj).__qualname__}")
    return <pasid_guest_t*><void*>obj


# ---------------------------------------------------------------- the entries
#
# C integers and doubles in and out; each runs the phases of the Python method of
# the same name (its checks, counters and atomicity). Misuse raises that method's
# exception (``except -1``); an allocation that finds nothing FREE (or an owner at
# its quota) returns -1. Devices are named by the handle add_device returns.


cdef int64_t c_alloc(PasidAllocator a, object owner, int64_t lo, int64_t hi) except -2:
    """Allocate by the strategy in ``lo..hi``: the PASID, or -1 when nothing
    there is FREE or ``owner`` is at its quota (a counted failure).
    InvalidPasid for a range outside the space or empty."""
    cdef int64_t p
    if lo < 0 or hi >= a._size or lo > hi:
        raise InvalidPasid(bad_range(lo, hi, a._size))
    if owner is None and a._clock is None:
        # no user code can run (as alloc()'s common call): the phases are one step
        with cython.critical_section(a):
            wait_batch(a)
            if release_due(&a._queue, a._now):
                reclaim(a, a._now)
            p = a._alloc_in(None, None, lo, hi)
        a._after()
        return p
    return a._alloc_checked(owner, None, lo, hi, False, NULL)


cdef int64_t c_alloc_exact(PasidAllocator a, int64_t p, object owner) except -2:
    """Allocate exactly ``p``: ``p``, or -1 when it is not FREE or ``owner`` is at
    its quota (the quota refusal counted, as alloc_exact counts it).
    InvalidPasid outside the space."""
    cdef int64_t quota = -1
    a._check_c_id(p)
    if a._alloc_exact_in(p, owner, None, &quota) != FREE or quota >= 0:
        return -1
    return p


cdef int64_t c_alloc_many(PasidAllocator a, uint32_t* out, int64_t n, object owner) except -2:
    """``n`` PASIDs by the strategy into ``out`` (room for ``n``), as alloc_many:
    ``n``, or -1 (a counted failure, nothing taken) when fewer than ``n`` are
    FREE or ``owner`` is at its quota. ``n < 0``: ValueError.

    A batch that may run without the GIL (RELEASE_MIN IDs or more) fills
    memory the allocator owns and copies it to ``out`` once the change is
    complete: the caller's buffer is only written, so a thread writing into
    it meanwhile cannot steer what the allocator reads back."""
    cdef int64_t quota = -1, free_ids = 0, got
    cdef uint32_t* own
    if n < 0:
        raise ValueError(negative_count(n))
    if n < RELEASE_MIN:
        return alloc_many_in(a, out, n, owner, None, &quota, &free_ids)
    own = <uint32_t*>malloc(n * sizeof(uint32_t))
    if own == NULL:
        raise MemoryError()
    try:
        got = alloc_many_in(a, own, n, owner, None, &quota, &free_ids)
        if got > 0:
            memcpy(out, own, got * sizeof(uint32_t))
    finally:
        free(own)
    return got


cdef int c_free_many(PasidAllocator a, const uint32_t* ids, int64_t n) except -1:
    """As free_many over ``ids[0:n]``: all or nothing, StateError on a double free,
    InvalidPasid for an ID outside the space (nothing changed); returns 0.

    The IDs are copied into memory the allocator owns and the copy is
    checked and freed: the caller's buffer is read once, so a thread writing
    into it meanwhile (while the batch runs without the GIL, say) changes
    nothing here."""
    cdef int64_t i
    cdef uint32_t* copy
    if n < 0:
        raise ValueError(negative_count(n))
    # the copy, then n + 1 zeroed bytes of scratch for _free_many_in
    copy = <uint32_t*>calloc(n * sizeof(uint32_t) + n + 1, 1)
    if copy == NULL:
        raise MemoryError()
    try:
        if n:
            memcpy(copy, ids, n * sizeof(uint32_t))
        for i in range(n):
            if copy[i] >= a._size:
                raise InvalidPasid(out_of_range(copy[i], a._size))
        free_many_in(a, copy, n, <uint8_t*>(copy + n))
    finally:
        free(copy)
    return 0


cdef int c_get(PasidAllocator a, int64_t p) except -1:
    """One more reference to ACTIVE ``p`` (StateError otherwise); returns 0."""
    cdef double reading
    a._check_c_id(p)
    reading = a._reading()
    with cython.critical_section(a):
        wait_batch(a)
        a._settle_time(a._time(reading))
        if (a._slots[p].meta & STATE_MASK) != ACTIVE:
            raise StateError(not_active("get", p, _STATE_NAMES[(a._slots[p].meta & STATE_MASK)]))
        a._ref_inc(p)
    return 0


cdef int c_put(PasidAllocator a, int64_t p) except -1:
    """Drop one reference (the last releases); returns ``p``'s state after:
    ACTIVE while references remain, else DRAINING, QUARANTINED or FREE."""
    a._check_c_id(p)
    return a._put(p)


cdef int c_bind(PasidAllocator a, int64_t p, int device) except -1:
    """Bind ACTIVE ``p`` to the device with that handle (counted per pair); returns 0."""
    cdef double reading
    a._check_c_id(p)
    reading = a._reading()
    with cython.critical_section(a):
        wait_batch(a)
        a._settle_time(a._time(reading))
        bind_in(a, p, device_at(a, device), None)
    return 0


cdef int c_unbind(PasidAllocator a, int64_t p, int device) except -1:
    """The device with that handle has drained ``p``; returns ``p``'s state after."""
    cdef double reading, now
    cdef int state
    a._check_c_id(p)
    reading = a._reading()
    with cython.critical_section(a):
        wait_batch(a)
        now = a._time(reading)
        a._settle_time(now)
        state = unbind_in(a, p, device_at(a, device), now)
    a._after()
    return state


cdef list c_exit_owner(PasidAllocator a, object owner):
    """Release every ACTIVE PASID of ``owner``; returns them ascending (a list)."""
    cdef _Owner record
    cdef double reading, now
    cdef list released = None, teardown = None
    cdef int was_enabled
    if owner is None:
        raise ValueError(EXIT_NONE)
    while released is None:
        record = owner_lookup(a, owner)
        reading = a._reading()
        with cython.critical_section(a):
            wait_batch(a)
            was_enabled = _gc_pause()
            try:
                now = a._time(reading)
                a._settle_time(now)
                if record is None or record.gone:
                    # it holds nothing (or was dropped meanwhile: look again)
                    released = [] if record is None else None
                else:
                    released = exit_in(a, record, now)
                    for p in released:
                        teardown = teardown_of(a, p, teardown)
            finally:
                _gc_resume(was_enabled)
    a._after()
    if teardown:
        run_teardown(teardown)
    return released


cdef int64_t c_advance(PasidAllocator a, double to) except -1:
    """Move the logical clock to ``to`` and reclaim; returns how many became FREE."""
    cdef int64_t reclaimed
    if a._clock is not None:
        raise ValueError(ADVANCE_CALLABLE)
    check_time(to, "to")
    with cython.critical_section(a):
        wait_batch(a)
        if to < a._now:
            raise ValueError(clock_back(a._now, to))
        a._now = to
        reclaimed = reclaim(a, to)
    a._after()
    return reclaimed


cdef double c_now(PasidAllocator a) except? -1.0:
    """The current time (a callable clock's reading, held at its highest)."""
    cdef double reading = a._reading()
    with cython.critical_section(a):
        wait_batch(a)
        return a._time(reading)


cdef int c_state(PasidAllocator a, int64_t p) except -1:
    """``p``'s state, 0..4 (the values of :class:`~pasid.State`)."""
    cdef double reading
    a._check_c_id(p)
    reading = a._reading()
    with cython.critical_section(a):
        wait_batch(a)
        a._settle_time(a._time(reading))
        return a._slots[p].meta & STATE_MASK


cdef int64_t c_generation(PasidAllocator a, int64_t p) except -1:
    """How many times ``p`` has been allocated."""
    a._check_c_id(p)
    with cython.critical_section(a):
        wait_batch(a)
        return a._generation_of(p)


cdef double c_next_release_time(PasidAllocator a) except? -1.0:
    """The earliest ``release_at`` waiting, or NaN when nothing is QUARANTINED."""
    cdef double reading = a._reading()
    with cython.critical_section(a):
        wait_batch(a)
        a._settle_time(a._time(reading))
        return a._queue.time[0] if a._queue.len else NAN


cdef int64_t c_count(PasidAllocator a, int state) except -1:
    """How many PASIDs are in ``state`` (0..4) now."""
    cdef double reading
    if state < 0 or state > 4:
        raise ValueError(bad_state_code(state))
    reading = a._reading()
    with cython.critical_section(a):
        wait_batch(a)
        a._settle_time(a._time(reading))
        return a._counts[state]


# ---------------------------------------------------------------- the guests' entries
#
# Version 2: each is GuestSpace's method of the same meaning, its phases in the cdef
# methods they share (_guest.pxi): the Python method converts its arguments and
# raises where the entry answers -1.


# vcmd: GuestSpace._vcmd itself, ``vcmd(word, encoding=...)`` with the layout's index
# (PASID_VCMD_31 or PASID_VCMD_33; ValueError otherwise): the response word. A bad word
# is answered with a status, never raised; StateError for a removed VM.


cdef int64_t c_guest_alloc(GuestSpace vm, object owner) except -2:
    """``try_alloc(owner)``: the guest PASID, or -1 when none is available (nothing
    FREE in the guest or its host range, the VM at its quota: a counted failure)."""
    return vm._try_alloc(owner, None)


cdef int c_guest_free(GuestSpace vm, int64_t g) except -1:
    """``free(g)``: drop one reference, the last releases; returns 0. StateError unless
    ACTIVE in the guest, InvalidPasid outside the guest's space."""
    return vm._put(vm._check_guest_id(g))


cdef int64_t c_guest_to_host(GuestSpace vm, int64_t g) except -2:
    """``host_pasid(g)``, with -1 where it raises StateError for ``g`` not ACTIVE in
    the guest. InvalidPasid outside the guest's space; StateError for a removed VM."""
    vm._check_guest_id(g)
    with cython.critical_section(vm._host):
        wait_batch(vm._host)
        return vm._to_host(g)


cdef int64_t c_host_to_guest(GuestSpace vm, int64_t h) except -2:
    """``guest_pasid(h)``, with -1 where it raises StateError for ``h`` not one of the
    VM's ACTIVE host PASIDs. InvalidPasid outside the host's space; StateError for a
    removed VM."""
    vm._host._check_c_id(h)
    with cython.critical_section(vm._host):
        wait_batch(vm._host)
        return vm._to_guest(h)


cdef extern from *:
    """
    /* for writing (the operation to come changes them), kept in every cache level */
    #define PASID_PREFETCH(p) __builtin_prefetch((const void*)(p), 1, 3)
    """
    void PASID_PREFETCH(const void* p) noexcept nogil


cdef void c_prefetch(PasidAllocator a, int64_t p) noexcept:
    """The table's ``prefetch`` (version 3): the lines of ``p``'s per-PASID tables
    asked for now; nothing read or changed, ``p`` outside the space ignored. The
    tables live as long as the allocator (made in ``__cinit__``)."""
    if not 0 <= p < a._size:
        return
    PASID_PREFETCH(&a._slots[p])
    PASID_PREFETCH(&a._owned.owner_of[p])
    PASID_PREFETCH(&a._owned.prev[p])
    PASID_PREFETCH(&a._owned.next[p])
    PASID_PREFETCH(&a._bindings.first[p])
    PASID_PREFETCH(&a._hold[p])


# ---------------------------------------------------------------- the table


# each entry's type as a method (checked) and as the table declares it (the cast)
ctypedef int64_t (*_alloc_m)(PasidAllocator, object, int64_t, int64_t) except -2
ctypedef int64_t (*_alloc_t)(pasid_allocator_t*, object, int64_t, int64_t) except -2
ctypedef int64_t (*_alloc_exact_m)(PasidAllocator, int64_t, object) except -2
ctypedef int64_t (*_alloc_exact_t)(pasid_allocator_t*, int64_t, object) except -2
ctypedef int64_t (*_alloc_many_m)(PasidAllocator, uint32_t*, int64_t, object) except -2
ctypedef int64_t (*_alloc_many_t)(pasid_allocator_t*, uint32_t*, int64_t, object) except -2
ctypedef int (*_free_many_m)(PasidAllocator, const uint32_t*, int64_t) except -1
ctypedef int (*_free_many_t)(pasid_allocator_t*, const uint32_t*, int64_t) except -1
ctypedef int (*_pasid_m)(PasidAllocator, int64_t) except -1            # get, put, state
ctypedef int (*_pasid_t)(pasid_allocator_t*, int64_t) except -1
ctypedef int (*_device_m)(PasidAllocator, int64_t, int) except -1      # bind, unbind
ctypedef int (*_device_t)(pasid_allocator_t*, int64_t, int) except -1
ctypedef list (*_exit_owner_m)(PasidAllocator, object)
ctypedef object (*_exit_owner_t)(pasid_allocator_t*, object)
ctypedef int64_t (*_advance_m)(PasidAllocator, double) except -1
ctypedef int64_t (*_advance_t)(pasid_allocator_t*, double) except -1
ctypedef double (*_time_m)(PasidAllocator) except? -1.0               # now, next_release_time
ctypedef double (*_time_t)(pasid_allocator_t*) except? -1.0
ctypedef int64_t (*_generation_m)(PasidAllocator, int64_t) except -1
ctypedef int64_t (*_generation_t)(pasid_allocator_t*, int64_t) except -1
ctypedef int64_t (*_count_m)(PasidAllocator, int) except -1
ctypedef int64_t (*_count_t)(pasid_allocator_t*, int) except -1
ctypedef int64_t (*_ida_alloc_m)(IDA, int64_t, int64_t) except -2
ctypedef int64_t (*_ida_alloc_t)(pasid_ida_t*, int64_t, int64_t) except -2
ctypedef int (*_ida_free_m)(IDA, int64_t) except -1
ctypedef int (*_ida_free_t)(pasid_ida_t*, int64_t) except -1
ctypedef bint (*_ida_exists_m)(IDA, int64_t) noexcept
ctypedef bint (*_ida_exists_t)(pasid_ida_t*, int64_t) noexcept
ctypedef uint64_t (*_vcmd_m)(GuestSpace, uint64_t, int) except? 0xFFFFFFFFFFFFFFFF
ctypedef uint64_t (*_vcmd_t)(pasid_guest_t*, uint64_t, int) except? 0xFFFFFFFFFFFFFFFF
ctypedef int64_t (*_guest_alloc_m)(GuestSpace, object) except -2
ctypedef int64_t (*_guest_alloc_t)(pasid_guest_t*, object) except -2
ctypedef int (*_guest_free_m)(GuestSpace, int64_t) except -1
ctypedef int (*_guest_free_t)(pasid_guest_t*, int64_t) except -1
ctypedef int64_t (*_translate_m)(GuestSpace, int64_t) except -2   # guest_to_host, host_to_guest
ctypedef int64_t (*_translate_t)(pasid_guest_t*, int64_t) except -2
ctypedef void (*_prefetch_m)(PasidAllocator, int64_t) noexcept
ctypedef void (*_prefetch_t)(pasid_allocator_t*, int64_t) noexcept


cdef pasid_capi_t _capi


cdef void _capi_fill() noexcept:
    cdef _alloc_m alloc = c_alloc
    cdef _alloc_exact_m alloc_exact = c_alloc_exact
    cdef _alloc_many_m alloc_many = c_alloc_many
    cdef _free_many_m free_many = c_free_many
    cdef _pasid_m get = c_get
    cdef _pasid_m put = c_put
    cdef _device_m bind = c_bind
    cdef _device_m unbind = c_unbind
    cdef _exit_owner_m exit_owner = c_exit_owner
    cdef _advance_m advance = c_advance
    cdef _time_m now = c_now
    cdef _time_m next_release_time = c_next_release_time
    cdef _pasid_m state = c_state
    cdef _generation_m generation = c_generation
    cdef _count_m count = c_count
    cdef _ida_alloc_m ida_alloc = IDA.c_alloc
    cdef _ida_free_m ida_free = IDA.c_free
    cdef _ida_exists_m ida_exists = IDA.c_exists
    cdef _vcmd_m vcmd = GuestSpace._vcmd
    cdef _guest_alloc_m guest_alloc = c_guest_alloc
    cdef _guest_free_m guest_free = c_guest_free
    cdef _translate_m guest_to_host = c_guest_to_host
    cdef _translate_m host_to_guest = c_host_to_guest
    cdef _prefetch_m prefetch = c_prefetch

    _capi.version = PASID_CAPI_VERSION
    _capi.size = sizeof(pasid_capi_t)
    _capi.allocator = _capi_allocator
    _capi.ida = _capi_ida
    _capi.alloc = <_alloc_t>alloc
    _capi.alloc_exact = <_alloc_exact_t>alloc_exact
    _capi.alloc_many = <_alloc_many_t>alloc_many
    _capi.free_many = <_free_many_t>free_many
    _capi.get = <_pasid_t>get
    _capi.put = <_pasid_t>put
    _capi.bind = <_device_t>bind
    _capi.unbind = <_device_t>unbind
    _capi.exit_owner = <_exit_owner_t>exit_owner
    _capi.advance = <_advance_t>advance
    _capi.now = <_time_t>now
    _capi.next_release_time = <_time_t>next_release_time
    _capi.state = <_pasid_t>state
    _capi.generation = <_generation_t>generation
    _capi.count = <_count_t>count
    _capi.ida_alloc = <_ida_alloc_t>ida_alloc
    _capi.ida_free = <_ida_free_t>ida_free
    _capi.ida_exists = <_ida_exists_t>ida_exists
    # version 2
    _capi.guest = _capi_guest
    _capi.vcmd = <_vcmd_t>vcmd
    _capi.guest_alloc = <_guest_alloc_t>guest_alloc
    _capi.guest_free = <_guest_free_t>guest_free
    _capi.guest_to_host = <_translate_t>guest_to_host
    _capi.host_to_guest = <_translate_t>host_to_guest
    # version 3
    _capi.prefetch = <_prefetch_t>prefetch


_capi_fill()
_C_API = PyCapsule_New(<void*>&_capi, "pasid._core._C_API", NULL)
