# Owners and quotas of PasidAllocator: a record per owner object (its use, what
# its quota counts; its quota; its ACTIVE PASIDs, linked through the Owned
# arrays), found through the owner table (a dict keyed by the owner object:
# its __hash__/__eq__ run in phase 1 only, the table changing under the
# registry lock). A record is pinned from an operation's phase 1 to its phase 3
# and dropped once it holds nothing, has no quota and no pin.
#
# What a process with one PASID costs (a pid per process, the simulators' case):
# - The last record an operation named (``_last``) is kept while idle, and found
#   first: by identity, or, for an exact str or int, by a comparison no user code
#   takes part in (owner_same). At most one idle record is kept.
# - A new record whose key is an exact str or int stays out of the table while it
#   is ``_last`` (``pending``): it goes in only if another owner is named while
#   it still holds something; idle, it is let go (or, referenced by nothing else,
#   reused for the next owner). A look-up by a key that could equal it without
#   being owner_same (a float, a bool, a user's object) puts it in first
#   (owner_settle), so the table decides as a dict would.
# - While every key the table has held is an exact str or int (``_exact_keys``),
#   no look-up can run user code: alloc(owner=pid) finds or makes the record in
#   its one critical section (owner_find_exact), with no registry lock.
# The pure twin (pasid/pure/owners.py) keeps the same rules for which record
# lives, with every record in its table: the difference is storage, not behaviour.
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

    def __cinit__(self):
        # made as _Owner.__new__(_Owner) (no argument tuple), the key set after
        self.key = None
        self.use = 0
        self.quota = -1
        self.active = 0
        self.first = -1
        self.gone = 0
        self.pins = 0
        self.mark = 0
        self.guest = None
        self.pending = 0


cdef int owned_init(Owned* owned, int64_t capacity, int scattered) noexcept nogil:
    """Links for ``capacity`` PASIDs, none owned; -1 out of memory (the caller destroys
    it either way, with the same ``capacity`` and ``scattered``: pasid_table_new)."""
    owned.owner_of = <void**>pasid_table_new(capacity, sizeof(void*), scattered)
    owned.prev = <int32_t*>pasid_table_new(capacity, sizeof(int32_t), scattered)
    owned.next = <int32_t*>pasid_table_new(capacity, sizeof(int32_t), scattered)
    return -1 if owned.owner_of == NULL or owned.prev == NULL or owned.next == NULL else 0


cdef void owned_destroy(Owned* owned, int64_t capacity, int scattered) noexcept nogil:
    pasid_table_free(owned.owner_of, capacity, sizeof(void*), scattered)
    pasid_table_free(owned.prev, capacity, sizeof(int32_t), scattered)
    pasid_table_free(owned.next, capacity, sizeof(int32_t), scattered)
    owned.owner_of = owned.prev = owned.next = NULL


# ---------------------------------------------------------------- the owner table (phase 1, 3)


cdef _Owner owner_lookup(PasidAllocator a, object owner):
    """The current record of ``owner``, or None: it holds no PASID and has no quota.
    Its __hash__/__eq__ may run (phase 1); TypeError if it is unhashable."""
    cdef _Owner record
    with cython.critical_section(a):
        record = a._last
        if record is not None and not record.gone and owner_same(record.key, owner):
            return record
    return owner_lookup_table(a, owner)


cdef _Owner owner_lookup_table(PasidAllocator a, object owner):
    """:func:`owner_lookup` past the last named: the table's record, or None."""
    owner_settle(a, owner)
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
    in its phase 3 (:meth:`_unpin`, in a ``finally``). The last owner named
    costs no look-up: the same object, or an equal str or int (a comparison
    no user code takes part in)."""
    cdef _Owner record = owner_last(a, owner)
    if record is not None:
        return record
    if a._exact_keys and owner_exact(owner):
        return owner_record_exact(a, owner)
    record = owner_lookup_table(a, owner)
    if record is None or not owner_pin(a, record):
        record = owner_make(a, owner)
    owner_remember(a, record)
    return record


cdef inline _Owner owner_new(object key):
    """A new record of ``key`` (from the free list: no argument tuple)."""
    cdef _Owner record = _Owner.__new__(_Owner)
    record.key = key
    return record


cdef _Owner owner_record_exact(PasidAllocator a, object owner):
    """:func:`owner_record` of an exact str or int while every key the table has held
    is one (``_exact_keys``): :func:`owner_find_exact` and the pin in one critical
    section, with no registry lock and no second look-up."""
    cdef _Owner record
    with cython.critical_section(a):
        record = owner_find_exact(a, owner)
        record.pins += 1
        return record


cdef _Owner owner_find_exact(PasidAllocator a, object owner):
    """The current record of ``owner``, an exact str or int, made if it has none, now
    the last named; ``_exact_keys`` holds and the caller holds the critical section:
    the table's look-up and changes run no user code. MemoryError (from the table or
    the new record) leaves the owners as they were, but for the last named perhaps
    moved into the table."""
    cdef _Owner record, before = a._last
    if before is not None and before.pending and not owner_idle(before):
        a._owners[before.key] = before          # it holds something: into the table
        before.pending = 0
    found = a._owners.get(owner) if PyDict_GET_SIZE(a._owners) else None
    if found is not None and not (<_Owner>found).gone:
        record = <_Owner>found
    elif (GIL_BUILD and before is not None and before.pending and before.guest is None
            and _refcount(<PyObject*>before) == 2):
        # the one before, idle and out of the table, referenced by nothing but
        # _last and this function: it becomes the new owner's (no record made, none
        # let go; its old key, an exact str or int, goes with no code of its own).
        # Not on the free-threaded build, whose reference counts another thread
        # may hold in part
        before.key = owner
        return before
    else:
        record = owner_new(owner)
        record.pending = 1
    owner_swap(a, record)                       # (True: the one before is not in the way)
    return record


cdef int owner_table_put(PasidAllocator a, object key, _Owner record) except -1:
    """``a._owners[key] = record``, keeping ``_exact_keys`` (cleared first: a key that
    is not an exact str or int may run code in later look-ups)."""
    if not owner_exact(key):
        a._exact_keys = False
    a._owners[key] = record
    return 0


cdef inline bint owner_exact(object key) noexcept:
    """An exact str or int: a key that only an equal str or int equals (in a dict
    too), and whose comparison, hash and finalizer run no user code."""
    return type(key) is str or type(key) is int


cdef extern from *:
    """
    #include <string.h>
    /* Two strs equal? Their lengths, kinds and code units, as str.__eq__ tells.
       PyUnicode_Compare orders, we only match: for a 3-letter name equal but not the
       same object, 59 instructions over a same-object match against 116 (callgrind,
       3.11), about 2 ns against 4-5. A str not yet in the canonical form (made only
       by C APIs gone in 3.12) is left to PyUnicode_Compare. */
    static int pasid_str_equal(PyObject* x, PyObject* y) {
    #if PY_VERSION_HEX < 0x030C0000
        if (!PyUnicode_IS_READY(x) || !PyUnicode_IS_READY(y))
            return PyUnicode_Compare(x, y) == 0;
    #endif
        Py_ssize_t n = PyUnicode_GET_LENGTH(x);
        if (n != PyUnicode_GET_LENGTH(y) || PyUnicode_KIND(x) != PyUnicode_KIND(y))
            return 0;
        size_t bytes = (size_t)n * PyUnicode_KIND(x);
        const unsigned char* a = (const unsigned char*)PyUnicode_DATA(x);
        const unsigned char* b = (const unsigned char*)PyUnicode_DATA(y);
        if (bytes > 16)
            return memcmp(a, b, bytes) == 0;
        for (size_t i = 0; i < bytes; i++)      /* a name: shorter than a call to memcmp */
            if (a[i] != b[i])
                return 0;
        return 1;
    }
    """
    bint pasid_str_equal(object x, object y) noexcept


cdef inline bint owner_same(object key, object owner) noexcept:
    """``owner`` is ``key`` for the owner table, decided without user code: the same
    object, or equal exact strs or ints. False when that cannot be told so."""
    if key is owner:
        return True
    if type(key) is str:
        return type(owner) is str and pasid_str_equal(key, owner)
    if type(key) is int:
        return type(owner) is int and owner_ints_equal(key, owner)
    return False


cdef inline bint owner_ints_equal(object x, object y) noexcept:
    """Two exact ints equal? In C when both fit 64 bits (the usual owner: a pid)."""
    cdef int over_x = 0, over_y = 0
    cdef long long a = PyLong_AsLongLongAndOverflow(x, &over_x)
    cdef long long b = PyLong_AsLongLongAndOverflow(y, &over_y)
    if over_x or over_y:
        return PyObject_RichCompareBool(x, y, Py_EQ) == 1
    return a == b


cdef _Owner owner_last(PasidAllocator a, object owner):
    """The last record named, pinned, if it is ``owner``'s (:func:`owner_same`); else None."""
    cdef _Owner record
    with cython.critical_section(a):
        record = a._last
        if record is None or record.gone or not owner_same(record.key, owner):
            return None
        record.pins += 1
        return record


cdef int owner_settle(PasidAllocator a, object owner) except -1:
    """Before the table is asked about ``owner``: a record kept out of it (the last
    named, its key an exact str or int) goes in if ``owner`` could equal its key
    without being :func:`owner_same` (a float, a bool, a user's object: the table's
    __eq__ decides those)."""
    if not owner_unsettled(a, owner):
        return 0
    a._enter_registry()
    try:
        owner_table_last(a)
    finally:
        a._leave_registry()
    return 0


cdef inline bint owner_unsettled(PasidAllocator a, object owner) noexcept:
    """A record is kept out of the table that ``owner`` could equal without being
    :func:`owner_same`: the table must have it before it is asked (owner_settle)."""
    return a._last is not None and a._last.pending and not owner_exact(owner)


cdef int owner_table_last(PasidAllocator a) except -1:
    """Under the registry lock: the last record named, kept out of the table, goes in
    (its key's hash and comparisons with the keys there run no code of its own)."""
    cdef _Owner record
    with cython.critical_section(a):
        record = a._last
        if record is None or not record.pending:
            return 0
    a._owners[record.key] = record
    with cython.critical_section(a):
        record.pending = 0
    return 0


cdef _Owner owner_make(PasidAllocator a, object owner):
    """:func:`owner_record`'s slow path: under the registry lock, the record in the
    table (a thread may have made it meanwhile) or a new one, pinned. A new record
    whose key is an exact str or int is kept out of the table while it is the last
    named (``pending``): an owner that comes and goes with one PASID costs no table
    change at all; it goes in when another owner is named while it holds something."""
    cdef _Owner record
    a._enter_registry()
    try:
        if owner_unsettled(a, owner):
            owner_table_last(a)
        found = a._owners.get(owner)
        if found is not None and owner_pin(a, <_Owner>found):
            return <_Owner>found
        record = owner_last(a, owner)
        if record is not None:
            return record
        record = owner_new(owner)
        record.pins = 1                  # no other thread sees it before the insert
        if owner_exact(owner):
            record.pending = 1           # the last named at once, before the lock goes
            while not owner_swap(a, record):
                owner_table_last(a)
        else:
            owner_table_put(a, owner, record)
    finally:
        a._leave_registry()
    return record


cdef int owner_remember(PasidAllocator a, _Owner record) except -1:
    """``record`` (pinned) becomes the last named (:func:`owner_swap`); one before it
    that holds something and was kept out of the table goes in first (registry lock)."""
    while not owner_swap(a, record):
        a._enter_registry()
        try:
            owner_table_last(a)
        finally:
            a._leave_registry()
    return 0


cdef bint owner_swap(PasidAllocator a, _Owner record) noexcept:
    """``record`` becomes the last named, unless the one before holds something while
    kept out of the table (False: it must go in first). The one before, if idle, is
    marked gone: dropped from the table in phase 3, or, never in it, let go here (its
    key an exact str or int: no finalizer runs). True when done."""
    cdef _Owner before
    with cython.critical_section(a):
        before = a._last
        if before is record:
            return True
        if before is not None and before.pending and not owner_idle(before):
            return False
        a._last = record
        if before is not None and owner_idle(before) and not before.gone:
            if before.pending:
                before.gone = 1                  # never in the table: nothing to drop
            else:
                owner_drop(a, before)
        return True


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
