# Batches of PasidAllocator: the C loops of alloc_many and free_many, and the
# gate that lets them run without the GIL. The loops touch only the
# allocator's own tables and the buffer they are given (which the callers make
# sure is the allocator's own: see c_alloc_many and c_free_many), never a
# Python object. The twin of pasid/pure/batch.py.
#
# The gate ("Threads" in _allocator.pxi): a batch of RELEASE_MIN IDs or more
# marks the allocator busy (``_batch``) and holds ``_gate`` while its loop runs
# without the GIL; every critical section begins with wait_batch, which lets
# the GIL go and waits on the gate while a batch runs; while a thread waits
# (``_waiting``), batches keep the GIL. fork() holds the gate across (the
# allocator's _fork_* methods).


cdef uint64_t _slots_as_word(uint8_t meta, uint8_t generation_low) noexcept:
    """Four Slots of these bytes, read as one 64-bit word (whatever the byte order)."""
    cdef Slot four[4]
    cdef uint64_t word
    cdef int i
    for i in range(4):
        four[i].meta = meta
        four[i].generation_low = generation_low
    memcpy(&word, four, 8)
    return word

# alloc_many writes the Slots of a whole FREE word of 64 PASIDs 4 at a time (the
# Slots of 4 PASIDs are a 64-bit word), and one Slot as a 16-bit word (_fill)
cdef uint64_t _GENERATION_BYTES = _slots_as_word(0, 0xFF)
cdef uint64_t _META_BYTES = _slots_as_word(0xFF, 0)
cdef uint64_t _FREE_TO_ACTIVE = _slots_as_word(ACTIVE, 1)   # FREE (0, no flags) -> ACTIVE, + 1
cdef uint64_t _BYTE_ONES = _slots_as_word(1, 1)
cdef uint64_t _BYTE_HIGH_BITS = _slots_as_word(0x80, 0x80)
cdef uint16_t _SLOT_GENERATION = <uint16_t>_GENERATION_BYTES       # one Slot's share
cdef uint16_t _SLOT_FREE_TO_ACTIVE = <uint16_t>_FREE_TO_ACTIVE
cdef uint16_t _SLOT_ACTIVE = <uint16_t>_slots_as_word(ACTIVE, 0)


cdef inline bint _take_free_slots(Slot* slots) noexcept nogil:
    """The 64 Slots from ``slots``, all FREE (so with no flags): ACTIVE with their
    generation + 1, 8 bytes at a time (no byte carries into the next). False,
    nothing changed, when a generation's low byte is 255 (its high bits must
    change too)."""
    cdef uint64_t y, carry = 0
    cdef uint64_t words[16]
    cdef int i
    memcpy(words, slots, 128)
    for i in range(16):
        # a zero byte in y: a generation byte of 0xFF (the meta bytes are set)
        y = (~words[i] & _GENERATION_BYTES) | _META_BYTES
        carry |= (y - _BYTE_ONES) & ~y & _BYTE_HIGH_BITS
    if carry:
        return False
    for i in range(16):
        words[i] += _FREE_TO_ACTIVE
    memcpy(slots, words, 128)
    return True


# ---------------------------------------------------------------- the gate


cdef void wait_gate(PasidAllocator a) noexcept:
    """Let the GIL go until the batch running without it is done. Counted in
    ``_waiting``: while a thread waits, batches keep the GIL, so a thread that
    runs batch after batch cannot shut the others out."""
    a._waiting += 1
    while a._batch:
        with nogil:
            PyThread_acquire_lock(a._gate, WAIT_LOCK)
            PyThread_release_lock(a._gate)
    a._waiting -= 1


cdef bint batch_begin(PasidAllocator a, int64_t n) noexcept:
    """In phase 2 of a batch of ``n`` IDs, just before its C loop: whether to run
    the loop without the GIL (then the allocator is busy until :meth:`_batch_end`).
    No: on the free-threaded build, below RELEASE_MIN IDs, and while another
    thread waits to get in (it gets the GIL at the next switch instead)."""
    if not GIL_BUILD or n < RELEASE_MIN or a._waiting:
        return False
    # free: only a batch holds the gate, and none runs (this thread waited)
    if not PyThread_acquire_lock(a._gate, NOWAIT_LOCK):
        return False
    a._batch = 1
    return True


cdef void batch_end(PasidAllocator a) noexcept:
    """The GIL is back: the allocator is no longer busy."""
    a._batch = 0
    PyThread_release_lock(a._gate)


cdef inline void wait_batch(PasidAllocator a) noexcept:
    """The first step of every critical section: wait while another thread runs a
    batch without the GIL (only a thread holding the GIL sets the flag, so a
    thread that finds it clear may go on until it lets the GIL go)."""
    if a._batch:
        wait_gate(a)


# fork() (pasid/_fork.py, through the allocator's _fork_* methods): a batch running
# without the GIL in another thread is the one change that can be under way while
# the forking thread holds the GIL; the gate is held across, so the child gets the
# tables whole.


cdef void fork_prepare(PasidAllocator a) noexcept:
    """Before a fork: wait for a batch running without the GIL, keep new ones out."""
    a._waiting += 1                  # from now on batches keep the GIL
    with nogil:
        PyThread_acquire_lock(a._gate, WAIT_LOCK)


cdef void fork_parent(PasidAllocator a) noexcept:
    """After a fork, in the parent: batches may let the GIL go again."""
    a._waiting -= 1
    PyThread_release_lock(a._gate)


cdef int fork_child(PasidAllocator a) except -1:
    """After a fork, in the child: the only thread left is this one. No other
    thread waits for a batch; a registry lock another thread held is
    replaced, and a device it was declaring (in the handle table, not yet in
    the device table) is dropped."""
    cdef PyThread_type_lock registry
    a._waiting = 0
    PyThread_release_lock(a._gate)
    # (a thread may have taken the lock and not yet the GIL back: it is not
    # 'locked()' yet, and still it is held; only this thread's own hold is known)
    if a._registry_thread != PyThread_get_thread_ident():
        # (the old lock is left as it is: freeing a lock another thread held is not
        # defined everywhere; one lock, once per fork that caught a change)
        registry = PyThread_allocate_lock()
        if registry == NULL:
            raise MemoryError()
        a._registry = registry
        a._registry_thread = 0
        declared = {id(found) for found in a._devices.values()}
        for handle, found in enumerate(a._device_list):
            if found is not None and id(found) not in declared:
                (<_Device>found).gone = 1      # being declared: no binding yet
                a._device_list[handle] = None
    return 0


# ---------------------------------------------------------------- the loops


cdef int64_t batch_fill(PasidAllocator a, uint32_t* out, int64_t n) noexcept nogil:
    """Take ``n`` FREE PASIDs by the strategy into ``out`` (n <= FREE); undone and -1
    when out of memory, -2 when one has been allocated COUNT_MAX times."""
    cdef Node* path[MAX_HEIGHT + 1]
    cdef Node* leaf
    cdef int64_t done = 0, p, base, leaf_base, taken
    cdef uint64_t word, bits
    cdef int i, w, got, status
    cdef uint16_t slot
    cdef uint32_t* o
    cdef Slot* sp
    # a local copy of the table pointer (writes through it may alias a's fields)
    cdef Slot* slots = a._slots
    while done < n:
        if a._strategy == LOWEST:
            # the lowest FREE ID's leaf (4096 IDs): every free ID in it is taken
            # in order, word by word, before the nodes above are updated once
            p = space_find_free(&a.space, 0)
            leaf = space_leaf(&a.space, p, path)
            if leaf == NULL:
                batch_unfill(a, out, done)
                return -1
            leaf_base = p & ~4095
            taken = 0
            status = 0
            while leaf.free_mask and done < n and not status:
                w = ctz64(leaf.free_mask)
                base = leaf_base + (w << 6)
                word = leaf.slot[w]
                if word == ALL and n - done >= 64 and _take_free_slots(&slots[base]):
                    # a whole FREE word: 64 IDs in a row, their Slots 4 at a time
                    # (no generation's low byte about to carry)
                    for i in range(64):
                        out[done + i] = <uint32_t>(base + i)
                    leaf_take_bits(leaf, w, ALL, 64)
                    taken += 64
                    done += 64
                    continue
                # peel the word's free bits; those taken are the bits cleared
                bits = word
                got = <int>done
                if n - done >= 64:
                    # room for all of them: no count to test per ID (the loop
                    # below finishes the word from a generation about to carry)
                    sp = slots + base
                    o = out + done
                    while word:
                        i = ctz64(word)
                        memcpy(&slot, &sp[i], 2)
                        if (slot & _SLOT_GENERATION) == _SLOT_GENERATION:
                            break
                        slot += _SLOT_FREE_TO_ACTIVE
                        memcpy(&sp[i], &slot, 2)
                        o[0] = <uint32_t>(base + i)
                        o += 1
                        word &= word - 1
                    done = o - out
                while word and done < n:
                    p = base + ctz64(word)
                    # the Slot as one 16-bit word: FREE (no flags) -> ACTIVE
                    # (refcount 1), the generation's low byte + 1 (mod 256)
                    memcpy(&slot, &slots[p], 2)
                    if (slot & _SLOT_GENERATION) == _SLOT_GENERATION:
                        if a._generation_full(p):
                            status = -2
                            break
                        a._generation_high[p] += 1
                        slot = _SLOT_ACTIVE                 # the low byte wraps to 0
                    else:
                        slot += _SLOT_FREE_TO_ACTIVE
                    memcpy(&slots[p], &slot, 2)
                    out[done] = <uint32_t>p
                    done += 1
                    word &= word - 1
                got = <int>done - got
                leaf_take_bits(leaf, w, bits ^ word, got)
                taken += got
            space_path_take(&a.space, leaf, path, leaf_base, taken)
            a._counts[FREE] -= taken
            a._counts[ACTIVE] += taken
            if status:
                batch_unfill(a, out, done)
                return status
        else:
            p = choose_full(a)
            if a._generation_full(p):
                batch_unfill(a, out, done)
                return -2
            if space_take(&a.space, p) < 0:
                batch_unfill(a, out, done)
                return -1
            if a._fifo.prev != NULL:
                fifo_remove(&a._fifo, p)
            a._slots[p].meta = ACTIVE
            a._generation_inc(p)
            a._counts[FREE] -= 1
            a._counts[ACTIVE] += 1
            if a._strategy == CYCLIC:
                a._cursor = p + 1
            out[done] = <uint32_t>p
            done += 1
    return 0


cdef int64_t choose_full(PasidAllocator a) noexcept nogil:
    """The FREE ID the strategy gives in the whole space (there is one)."""
    cdef int64_t p
    if a._strategy == FIFO:
        return a._fifo.head
    if a._strategy == CYCLIC:
        p = space_find_free(&a.space, a._cursor)
        if p < a._size:
            return p
        return space_find_free(&a.space, 0)
    if a._strategy == RANDOM:
        return space_select(&a.space, <int64_t>draw_below(
            &a._rng, <uint64_t>space_rank(&a.space, a._size)))
    return space_find_free(&a.space, 0)


cdef void batch_unfill(PasidAllocator a, uint32_t* out, int64_t done) noexcept nogil:
    """Undo the first ``done`` PASIDs of a failed :meth:`_fill`.

    The fifo queue gets them back at its head in their old order (a full-space
    fill takes from the head); the caller restores the cursor and generator.
    """
    cdef int64_t i, p
    for i in range(done - 1, -1, -1):
        p = out[i]
        space_release(&a.space, p)
        if a._fifo.prev != NULL:
            fifo_push_front(&a._fifo, p)
        a._slots[p].meta = FREE
        a._generation_dec(p)
        a._counts[FREE] += 1
        a._counts[ACTIVE] -= 1


cdef Py_ssize_t free_passes(PasidAllocator a, const uint32_t* pasids, Py_ssize_t n, uint8_t* last,
                             Py_ssize_t* odd, uint8_t* seen) noexcept nogil:
    """What free_many does in C: as :meth:`_free_refs` returns, and when it finds
    every PASID released plain, pass 2 as well. The common batch (every PASID
    ACTIVE with one reference and nothing attached, no grace period, not the
    fifo strategy) is first tried in one pass, :meth:`_free_plain_batch`."""
    cdef Py_ssize_t i
    if free_plain_batch(a, pasids, n) == n:
        odd[0] = 0
        return -1
    i = free_refs(a, pasids, n, last, odd, seen)
    if i < 0 and odd[0] == 0:
        free_plain(a, pasids, 0, n, last)
    return i


cdef Py_ssize_t free_plain_batch(PasidAllocator a, const uint32_t* pasids, Py_ssize_t n) noexcept nogil:
    """free_many in one pass over the Slots when every PASID is ACTIVE with one
    reference and nothing attached (meta exactly ACTIVE), with no grace period
    and not by fifo: each becomes FREE as it is checked, its bit gathered into
    a run of its word; the runs go back to the space only after the last
    check. ``n`` when done; else nothing is changed (the first PASID that is
    not such, a duplicate included, undoes the pass) and the index where it
    stopped. The runs are kept in ``_runs`` (made at the first use, one per
    word of the space at most); past that, the IDs from the first run not kept
    go back in a second pass over the IDs alone."""
    cdef Py_ssize_t i, j, run_start = 0, rest = n
    cdef int64_t p, nruns = 0
    cdef Gather g
    cdef Slot* slots = a._slots          # a local copy, as in _free_refs
    cdef uint64_t* runs
    if a._grace > 0 or a._fifo.prev != NULL:
        return 0
    if a._runs == NULL:
        a._runs_cap = (a._size >> 6) + 1
        a._runs = <uint64_t*>malloc(2 * a._runs_cap * sizeof(uint64_t))
        if a._runs == NULL:
            a._runs_cap = 0
    runs = a._runs
    gather_start(&g)
    for i in range(n):
        p = pasids[i]
        if slots[p].meta != ACTIVE:
            for j in range(i - 1, -1, -1):
                slots[pasids[j]].meta = ACTIVE
            return i
        slots[p].meta = FREE
        if rest < n:
            continue                        # the second pass gives these back
        if gather_full(&g, p):
            if nruns == a._runs_cap:
                rest = run_start
                continue
            runs[2 * nruns] = <uint64_t>(((g.base >> 6) << 7) | g.n)
            runs[2 * nruns + 1] = g.bits
            nruns += 1
        if (p & ~63) != g.base:
            run_start = i
        gather_add(&g, p)
    if rest == n and g.bits:
        if nruns == a._runs_cap:
            rest = run_start
        else:
            runs[2 * nruns] = <uint64_t>(((g.base >> 6) << 7) | g.n)
            runs[2 * nruns + 1] = g.bits
            nruns += 1
    for j in range(nruns):
        space_release_bits(&a.space, <int64_t>(runs[2 * j] >> 7) << 6, runs[2 * j + 1],
                           <int>(runs[2 * j] & 127))
    gather_start(&g)
    for i in range(rest, n):
        space_release_gathered(&a.space, &g, pasids[i])
    space_release_rest(&a.space, &g)
    a._releases += n
    a._reclaimed += n
    a._counts[ACTIVE] -= n
    a._counts[FREE] += n
    return n


cdef Py_ssize_t free_refs(PasidAllocator a, const uint32_t* pasids, Py_ssize_t n, uint8_t* last,
                           Py_ssize_t* odd, uint8_t* seen) noexcept nogil:
    """Pass 1 of free_many: drop the references; the last one marks the PASID
    RELEASING and sets ``last[i]``. -1, with ``odd`` the number released that
    are not plain (flags or a grace period: :meth:`_free_plain` stops at them);
    or, all undone, the index of the first ID that is not ACTIVE (its state
    in ``seen``: RELEASING for one this call already released)."""
    cdef Py_ssize_t i, j, others = 0
    cdef int64_t p
    # a local copy of the table pointer: writes through it may alias any
    # field of a, so the compiler would reload a._slots every time
    cdef Slot* slots = a._slots
    cdef bint grace = a._grace > 0
    for i in range(n):
        p = pasids[i]
        if (slots[p].meta & STATE_MASK) != ACTIVE:
            seen[0] = slots[p].meta & STATE_MASK
            for j in range(i - 1, -1, -1):
                if last[j]:
                    slots[pasids[j]].meta ^= RELEASING ^ ACTIVE
                    last[j] = 0
                elif slots[pasids[j]].meta & MULTI:
                    a._refcount[pasids[j]] += 1
                else:
                    slots[pasids[j]].meta |= MULTI
                    a._refcount[pasids[j]] = 2
            odd[0] = 0
            return i
        if slots[p].meta & MULTI:
            a._ref_dec(p)
        else:
            slots[p].meta ^= ACTIVE ^ RELEASING
            last[i] = 1
            others += slots[p].meta != RELEASING
    odd[0] = n if grace else others
    return -1


cdef Py_ssize_t free_plain(PasidAllocator a, const uint32_t* pasids, Py_ssize_t start, Py_ssize_t n,
                            const uint8_t* last) noexcept nogil:
    """Pass 2 of free_many from ``start``: the PASIDs released (``last``) that are
    plain (RELEASING with no flags, no grace period) become FREE, in order (as
    :meth:`_freed_plain`, the counters kept in locals, each word's bits given
    back in one summary update). Stops at the first released one that is not
    plain and returns its index; ``n`` when none is left."""
    cdef Py_ssize_t i
    cdef int64_t p, plain = 0
    cdef Gather g
    cdef Slot* slots = a._slots          # a local copy, as in _free_refs
    cdef bint fifo = a._fifo.prev != NULL
    if a._grace > 0:                     # none is plain: stop at the first released
        for i in range(start, n):
            if last[i]:
                return i
        return n
    gather_start(&g)
    for i in range(start, n):
        if not last[i]:
            continue
        p = pasids[i]
        if slots[p].meta != RELEASING:
            break
        slots[p].meta = FREE
        plain += 1
        if fifo:
            fifo_push(&a._fifo, p)
        space_release_gathered(&a.space, &g, p)
    else:
        i = n
    space_release_rest(&a.space, &g)
    a._releases += plain
    a._reclaimed += plain
    a._counts[ACTIVE] -= plain
    a._counts[FREE] += plain
    return i


# ---------------------------------------------------------------- the phases of a batch


cdef int64_t alloc_many_in(PasidAllocator a, uint32_t* ids, int64_t count, object owner, object data,
                            int64_t* refused_quota, int64_t* free_ids) except -2:
    """The three phases of alloc_many into ``ids`` (room for ``count``): ``count``,
    or -1 (a counted failure) when fewer are FREE (how many: ``free_ids``) or
    the owner is at its quota (``refused_quota``); all or nothing."""
    cdef int64_t i
    cdef _Owner record = None
    cdef double reading
    cdef bint over = False, short = False
    cdef uint64_t rng
    cdef int64_t cursor, filled
    if data is not None and a._data is None:
        a._data = [None] * a._size
    reading = a._reading()
    if owner is not None:
        record = owner_record(a, owner)         # pinned: current until unpinned
    try:
        with cython.critical_section(a):
            wait_batch(a)
            a._settle_time(a._time(reading))
            over = over_quota(record, count)
            short = count > a._counts[FREE]
            free_ids[0] = a._counts[FREE]
            if over or short:
                a._failures += 1
            else:
                rng, cursor = a._rng, a._cursor
                if batch_begin(a, count):
                    with nogil:
                        filled = batch_fill(a, ids, count)
                    batch_end(a)
                else:
                    filled = batch_fill(a, ids, count)
                if filled < 0:
                    a._rng, a._cursor = rng, cursor
                    if filled == -2:
                        raise OverflowError(
                            generation_limit())
                    raise MemoryError()
                a._allocations += count
                if a._counts[ACTIVE] > a._high_water:
                    a._high_water = a._counts[ACTIVE]
                if record is not None:
                    for i in range(count):
                        owner_tag(a, ids[i], record)
                if data is not None:
                    for i in range(count):
                        a._data[ids[i]] = data
                        a._slots[ids[i]].meta |= HAS_DATA
    finally:
        if record is not None:
            owner_unpin(a, record)
    a._after()
    if short:
        return -1
    if over:
        refused_quota[0] = record.quota
        return -1
    return count


cdef int free_many_in(PasidAllocator a, const uint32_t* pasids, Py_ssize_t n, uint8_t* last) except -1:
    """The phases of free_many over ``pasids`` (checked, not changed by anyone
    meanwhile); ``last``: ``n`` zeroed bytes of scratch. Both passes run without
    the GIL (``_batch_begin``) when every PASID released becomes FREE at once with
    nothing attached; else the first does, and the second keeps it."""
    cdef Py_ssize_t i, bad, odd = 0
    cdef int64_t p
    cdef uint8_t seen = 0
    cdef double now
    cdef double reading = a._reading()
    cdef list teardown = None
    with cython.critical_section(a):
        wait_batch(a)
        now = a._time(reading)
        a._settle_time(now)
        if batch_begin(a, n):
            with nogil:
                bad = free_passes(a, pasids, n, last, &odd, &seen)
            batch_end(a)
        else:
            bad = free_passes(a, pasids, n, last, &odd, &seen)
        if bad >= 0:
            name = ("ACTIVE, already freed" if seen == RELEASING else _STATE_NAMES[seen])
            raise StateError(not_active("free", pasids[bad], name))
        if odd:
            # pass 2 with the GIL, in the order successive frees would release:
            # runs of plain releases, each other one through _release
            i = free_plain(a, pasids, 0, n, last)
            while i < n:
                p = pasids[i]
                a._slots[p].meta ^= RELEASING ^ ACTIVE
                release(a, p, now)
                i = free_plain(a, pasids, i + 1, n, last)
            for i in range(n):
                if last[i]:
                    teardown = teardown_of(a, pasids[i], teardown)
    a._after()
    if teardown:
        run_teardown(teardown)
    return 0


cdef object id_array_of(PasidAllocator a, object ids):
    """``ids`` as a new contiguous uint32 array, checked (pasid._args.id_array): a
    private copy, so a caller's array changed meanwhile cannot reach the tables.
    A uint32 array (what alloc_many returns) needs only a copy and its maximum;
    anything else, or an ID out of range, takes the shared rule."""
    if type(ids) is np.ndarray and (<object>ids).dtype == np.uint32 and (<object>ids).ndim == 1:
        copy = (<object>ids).copy()         # contiguous, ours
        if copy.shape[0] == 0 or copy.max() < a._size:
            return copy
    return _args.id_array(ids, a._size)
