# Owners and quotas of PasidAllocator: a record per owner object (its use, what
# its quota counts; its quota; its ACTIVE PASIDs, linked through the Owned
# arrays), found through the owner table (a dict keyed by the owner object:
# its __hash__/__eq__ run in phase 1 only, the table changing under the
# registry lock). A record is pinned from an operation's phase 1 to its phase 3
# and dropped once it holds nothing, has no quota and no pin, unless it is the
# last record an operation named (``_last``): that one is kept while idle, so an
# owner that frees its only PASID and allocates again (a process with one PASID,
# a VM's guest) finds its record without the registry lock, a new record or a
# dict insert and delete; and the same owner object again is found by identity,
# with no look-up at all. At most one idle record is kept: the previous one is
# dropped when another owner is named. The twin of pasid/pure/owners.py.
#
# ctypedef struct Owned (in _core.pxd, where PasidAllocator holds one):
#     void** owner_of    per PASID: its owner's record (borrowed), while HAS_OWNER
#     int32_t* prev      per PASID: the owner's ACTIVE PASIDs, a doubly linked list
#     int32_t* next      (the head in the record's ``first``)


@cython.final
@cython.freelist(64)            # made and dropped with every process that holds one PASID
cdef class _Owner:
    """An owner's record: its use (what its quota counts), quota and ACTIVE PASIDs.
    Attributes are declared in _core.pxd."""

    def __cinit__(self, key):
        self.key = key
        self.use = 0
        self.quota = -1
        self.active = 0
        self.first = -1
        self.gone = 0
        self.pins = 0
        self.mark = 0
        self.guest = None


cdef int owned_init(Owned* owned, int64_t capacity) noexcept nogil:
    """Links for ``capacity`` PASIDs, none owned; -1 out of memory (the caller destroys
    it either way)."""
    owned.owner_of = <void**>calloc(capacity, sizeof(void*))
    owned.prev = <int32_t*>calloc(capacity, sizeof(int32_t))
    owned.next = <int32_t*>calloc(capacity, sizeof(int32_t))
    return -1 if owned.owner_of == NULL or owned.prev == NULL or owned.next == NULL else 0


cdef void owned_destroy(Owned* owned) noexcept nogil:
    free(owned.owner_of)
    free(owned.prev)
    free(owned.next)
    owned.owner_of = owned.prev = owned.next = NULL


# ---------------------------------------------------------------- the owner table (phase 1, 3)


cdef _Owner owner_lookup(PasidAllocator a, object owner):
    """The current record of ``owner``, or None: it holds no PASID and has no quota.
    Its __hash__/__eq__ may run (phase 1); TypeError if it is unhashable."""
    found = a._owners.get(owner)
    if found is None or (<_Owner>found).gone:
        return None
    return <_Owner>found


cdef _Owner owner_record(PasidAllocator a, object owner):
    """The current record of ``owner``, made if it has none, pinned (phase 1),
    and remembered as the last one named.

    A pinned record is never marked gone, so it stays current through the
    operation's phase 2, and a record made for it is not "idle" to
    :meth:`_check` while the operation is in flight. Every caller unpins it
    in its phase 3 (:meth:`_unpin`, in a ``finally``). The same object as the
    last owner named costs no look-up (an identity test: no user code runs)."""
    cdef _Owner record = owner_last(a, owner)
    if record is not None:
        return record
    record = owner_lookup(a, owner)
    if record is None or not owner_pin(a, record):
        record = owner_make(a, owner)
    owner_remember(a, record)
    return record


cdef _Owner owner_last(PasidAllocator a, object owner):
    """The last record named, pinned, if ``owner`` is its very key object; else None."""
    cdef _Owner record
    with cython.critical_section(a):
        record = a._last
        if record is None or record.key is not owner or record.gone:
            return None
        record.pins += 1
        return record


cdef _Owner owner_make(PasidAllocator a, object owner):
    """:func:`owner_record`'s slow path: under the registry lock, the record in the
    table (a thread may have made it meanwhile) or a new one, pinned."""
    cdef _Owner record
    a._enter_registry()
    try:
        found = a._owners.get(owner)
        if found is not None and owner_pin(a, <_Owner>found):
            return <_Owner>found
        record = _Owner.__new__(_Owner, owner)
        record.pins = 1                  # no other thread sees it before the insert
        a._owners[owner] = record
    finally:
        a._leave_registry()
    return record


cdef void owner_remember(PasidAllocator a, _Owner record) noexcept:
    """``record`` (pinned) becomes the last named; the one before, if idle, is
    marked gone (dropped in phase 3). It is still in the table, which keeps it
    alive through the reassignment: no finalizer runs here."""
    cdef _Owner before
    with cython.critical_section(a):
        before = a._last
        if before is record:
            return
        a._last = record
        if before is not None and owner_idle(before) and not before.gone:
            owner_drop(a, before)


cdef inline bint owner_idle(_Owner record) noexcept:
    """Nothing held, no quota, no operation holding it."""
    return record.use == 0 and record.quota < 0 and record.pins == 0


cdef inline void owner_drop(PasidAllocator a, _Owner record) noexcept:
    """Mark ``record`` gone, to be dropped from the table in phase 3."""
    record.gone = 1
    record.next_gone = a._gone
    a._gone = record


cdef bint owner_pin(PasidAllocator a, _Owner record) noexcept:
    """Pin ``record`` unless it is gone; True if pinned."""
    with cython.critical_section(a):
        if record.gone:
            return False
        record.pins += 1
        return True


cdef int owner_unpin(PasidAllocator a, _Owner record) except -1:
    """Phase 3: the operation lets go of the record it pinned. Left with nothing,
    no quota and no other pin, the record is marked gone (dropped by
    :meth:`_after`). No batch loop touches owner records: no wait for one."""
    with cython.critical_section(a):
        record.pins -= 1
        if owner_idle(record) and not record.gone and record is not a._last:
            owner_drop(a, record)
    return 0


cdef int drop_gone_owners(PasidAllocator a) except -1:
    """Phase 3: drop from the owner table the records operations left idle.

    Skipped while this thread is changing the table further up the stack (a
    __hash__/__eq__ that called back): a later operation drops them.
    """
    cdef _Owner record
    if a._gone is None or a._registry_thread == PyThread_get_thread_ident():
        return 0
    # only the owners' __hash__/__eq__ run here, after the change: what they
    # raise is swallowed; the record stays, marked gone (look-ups skip it)
    a._enter_registry()
    try:
        while True:
            with cython.critical_section(a):
                wait_batch(a)
                record = a._gone
                if record is not None:
                    a._gone = record.next_gone
                    record.next_gone = None
            if record is None:
                break
            try:
                if a._owners.get(record.key) is record:
                    del a._owners[record.key]
            except Exception:
                pass
    finally:
        a._leave_registry()
    return 0


# ---------------------------------------------------------------- a PASID's owner (phase 2)


cdef inline void owner_tag(PasidAllocator a, int64_t p, _Owner owner) noexcept:
    """A new ACTIVE PASID of ``owner`` (a current record): its use and ACTIVE list."""
    a._slots[p].meta |= HAS_OWNER
    a._owned.owner_of[p] = <void*>owner
    owner.use += 1
    owner.active += 1
    a._owned.prev[p] = -1
    a._owned.next[p] = owner.first
    if owner.first >= 0:
        a._owned.prev[owner.first] = <int32_t>p
    owner.first = <int32_t>p


cdef inline void owned_unlink(PasidAllocator a, int64_t p) noexcept:
    """A PASID of an owner left ACTIVE: off the owner's ACTIVE list (its use stays)."""
    cdef _Owner owner = <_Owner>a._owned.owner_of[p]
    owned_unlink_from(a, p, owner)
    if owner.guest is not None:
        guest_unmap(a, <GuestSpace>owner.guest, p)   # a VM's: its guest PASID goes now


cdef inline void owned_unlink_from(PasidAllocator a, int64_t p, _Owner owner) noexcept:
    """:func:`owned_unlink`'s list work, ``owner`` being ``p``'s (the caller knows it:
    a VM's record, no look-up) and the guest's unmapping the caller's."""
    cdef int32_t before = a._owned.prev[p], after = a._owned.next[p]
    if before >= 0:
        a._owned.next[before] = after
    else:
        owner.first = after
    if after >= 0:
        a._owned.prev[after] = before
    owner.active -= 1


cdef inline void owner_untag(PasidAllocator a, int64_t p) noexcept:
    """A PASID of an owner became FREE; an owner left with nothing, no quota and no
    pin is marked gone, to be dropped from the table in phase 3 (unless it is the
    last one named: :func:`owner_remember`)."""
    owner_untag_from(a, p, <_Owner>a._owned.owner_of[p])


cdef inline void owner_untag_from(PasidAllocator a, int64_t p, _Owner owner) noexcept:
    """:func:`owner_untag`, ``owner`` being ``p``'s (the caller knows it)."""
    a._owned.owner_of[p] = NULL
    owner.use -= 1
    if owner_idle(owner) and not owner.gone and owner is not a._last:
        owner_drop(a, owner)


cdef inline bint over_quota(_Owner owner, int64_t n) noexcept:
    """True if ``n`` more would pass the owner's quota."""
    return owner is not None and owner.quota >= 0 and owner.use + n > owner.quota


cdef list exit_in(PasidAllocator a, _Owner owner, double now):
    """The body of exit_owner (critical section held, time settled, ``owner``
    current): release its ACTIVE PASIDs in ascending order; returns them.
    The buffer is made before anything changes (MemoryError)."""
    cdef int64_t k = owner.active, i
    cdef int32_t* pasids
    cdef int32_t p
    if k == 0:
        return []
    if k == 1:                          # a process's one PASID: no buffer, nothing to sort
        p = owner.first
        release(a, p, now)
        return [p]
    pasids = <int32_t*>malloc(k * sizeof(int32_t))
    if pasids == NULL:
        raise MemoryError()
    p = owner.first
    for i in range(k):
        pasids[i] = p
        p = a._owned.next[p]
    qsort(pasids, k, sizeof(int32_t), _compare_int32)
    for i in range(k):
        release(a, pasids[i], now)
    released = [pasids[i] for i in range(k)]
    free(pasids)
    return released
