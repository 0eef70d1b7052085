# PasidAllocator: the lifecycle (references, devices, owners, release queue,
# snapshots) over the ID space and the strategies.
# The twin of pasid/pure/allocator.py; included by pasid/_core.pyx.

cdef enum:
    FREE = 0
    RESERVED = 1
    ACTIVE = 2
    DRAINING = 3
    QUARANTINED = 4

# One byte of _meta per PASID: what free and alloc touch at a random PASID, so
# the table stays small enough (1 MiB for 20 bits) to live in cache.
cdef enum:
    STATE_MASK = 7           # bits 0-2: the State
    RELEASING = 5            # a transient state inside free_many: refcount reached 0
    MULTI = 8                # refcount >= 2, kept in _refcount[p]; else an ACTIVE PASID holds 1
    HAS_OWNER = 16           # side tables to consult:
    HAS_DATA = 32
    HAS_BINDINGS = 64
    HAS_HOLD = 128           # _hold[p] holds the PASID's release_at so far
    FLAG_MASK = 240

cdef enum:
    LOWEST = 0
    CYCLIC = 1
    FIFO = 2
    RANDOM = 3

STRATEGIES = ("lowest", "cyclic", "fifo", "random")
_STATE_NAMES = ("FREE", "RESERVED", "ACTIVE", "DRAINING", "QUARANTINED")
_STATES = tuple(State)


@cython.final
cdef class _Device:
    """A declared device: its settings, the PASIDs bound to it (``bound``), the
    device object the user named (``key``) and its handle, its index in
    ``PasidAllocator._device_list``. Attributes are declared in _core.pxd."""

    def __init__(self, bits, drain, on_teardown, key, handle):
        self.bits = bits
        self.drain = drain
        self.on_teardown = on_teardown
        self.bound = set()
        self.key = key
        self.handle = handle


@cython.final
cdef class _Binding:
    """One (PASID, device) binding: its count, the driver's data, and the device itself,
    so releasing and unbinding need no look-up in the device table."""
    cdef uint32_t count
    cdef object data
    cdef _Device device

    def __init__(self, uint32_t count, data, _Device device):
        self.count = count
        self.data = data
        self.device = device


@cython.final
cdef class PasidAllocator:
    """PCIe PASIDs with the lifecycle IOMMU drivers need.

    ``PasidAllocator(bits=20, *, reserved=(0,), strategy="lowest", grace=0,
    clock=None, seed=None)``. IDs are ``0 .. 2**bits - 1``; ``reserved`` IDs
    or inclusive ``(lo, hi)`` pairs start RESERVED; the strategy (lowest,
    cyclic, fifo, random) picks which FREE ID an allocation gets; ``grace`` is
    the minimum time from release to reuse, on a logical clock (moved by
    :meth:`advance`) or a callable one. Times are kept as floats.

    Costs: alloc, free, get, put, bind, unbind, queries O(log64 N); the
    ``random`` strategy O(64 log64 N); ``fifo`` with a narrow ``min``/``max``
    pays for the FREE IDs it skips. Every error leaves the allocator as it
    was (a refused allocation counts in ``failures``).

    >>> from pasid import PasidAllocator
    >>> a = PasidAllocator(bits=8, grace=10)
    >>> p = a.alloc(owner="vm0")
    >>> p, a.state(p).name
    (1, 'ACTIVE')
    >>> a.free(p)
    >>> a.state(p).name, a.next_release_time()
    ('QUARANTINED', 10.0)
    >>> a.advance(by=10), a.state(p).name
    (1, 'FREE')
    """

    def __cinit__(self, bits=20, *, reserved=(0,), strategy="lowest", grace=0,
                  clock=None, seed=None):
        cdef int64_t nbits = as_int64(bits, "bits")
        cdef int64_t size, p, lo, hi
        if not 1 <= nbits <= 20:
            raise ValueError(f"bits must be in 1..20, got {nbits}")
        if strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
            )
        cdef double grace_time = as_time(grace, "grace")
        if grace_time < 0:
            raise ValueError(f"grace must be >= 0, got {grace_time}")
        if clock is not None and not callable(clock):
            raise TypeError("clock must be None or a zero-argument callable")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        elif isinstance(seed, bool):
            raise TypeError("seed must be an integer, not bool")
        else:
            try:
                seed = operator.index(seed)
            except TypeError:
                raise TypeError(f"seed must be an integer, not {type(seed).__name__}") from None
        size = (<int64_t>1) << nbits
        ranges = _parse_reserved(reserved, size)

        self._bits = <int>nbits
        self._size = size
        self._strategy = STRATEGIES.index(strategy)
        self._grace = grace_time
        self._clock = clock
        self._now = 0.0
        self._rng = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
        self._cursor = 0
        if space_init(&self.space, size) < 0:
            raise MemoryError()
        self._meta = <uint8_t*>calloc(size, sizeof(uint8_t))
        self._refcount = <uint32_t*>malloc(size * sizeof(uint32_t))
        self._generation = <uint32_t*>calloc(size, sizeof(uint32_t))
        self._hold = <double*>malloc(size * sizeof(double))
        self._queue_time = <double*>malloc(size * sizeof(double))
        self._queue_pasid = <int32_t*>malloc(size * sizeof(int32_t))
        if self._strategy == FIFO:
            self._fifo_prev = <int32_t*>malloc(size * sizeof(int32_t))
            self._fifo_next = <int32_t*>malloc(size * sizeof(int32_t))
            if self._fifo_prev == NULL or self._fifo_next == NULL:
                raise MemoryError()
        if (self._meta == NULL or self._refcount == NULL or self._generation == NULL
                or self._hold == NULL
                or self._queue_time == NULL or self._queue_pasid == NULL):
            raise MemoryError()
        self._fifo_head = self._fifo_tail = -1
        self._queue_len = 0
        self._owner = {}
        self._data = {}
        self._bindings = {}
        self._devices = {}
        self._device_list = []
        self._owned = {}
        self._use = {}
        self._quota = {}
        self._counts[0] = size
        for p in range(1, 5):
            self._counts[p] = 0
        self._allocations = self._releases = self._reclaimed = 0
        self._failures = self._high_water = 0

        if self._strategy == FIFO:
            for p in range(size):
                self._fifo_push(p)
        for lo, hi in ranges:
            for p in range(lo, hi + 1):
                if (self._meta[p] & STATE_MASK) == FREE:
                    self._take_state(p, RESERVED)

    def __dealloc__(self):
        space_destroy(&self.space)
        free(self._meta)
        free(self._refcount)
        free(self._generation)
        free(self._hold)
        free(self._queue_time)
        free(self._queue_pasid)
        free(self._fifo_prev)
        free(self._fifo_next)

    # ------------------------------------------------------------ helpers

    cdef int64_t _check_id(self, object value) except -1:
        cdef int64_t p = as_int64(value, "PASID")
        if p < 0 or p >= self._size:
            raise InvalidPasid(f"PASID {value} out of range 0..{self._size - 1}")
        return p

    cdef double _read_clock(self) except? -1.0:
        if self._clock is None:
            return self._now
        return as_time(self._clock(), "clock()")

    cdef int _sync(self) except -1:
        """Reclaim what has expired by now (only a callable clock moves by itself)."""
        cdef double now
        if self._clock is not None and self._queue_len:
            now = self._read_clock()
            if self._queue_time[0] <= now:
                self._reclaim(now)
        return 0

    cdef int _take_state(self, int64_t p, int state) except -1:
        """A FREE PASID leaves the FREE set (the one step that may fail: memory)."""
        if space_take(&self.space, p) < 0:
            raise MemoryError()
        self._left_free(p, state)
        return 0

    cdef inline void _left_free(self, int64_t p, int state) noexcept:
        """The tables follow a PASID just taken from the space: FREE -> ``state``."""
        if self._fifo_prev != NULL:
            self._fifo_remove(p)
        self._counts[FREE] -= 1
        self._counts[state] += 1
        self._meta[p] = state                  # a FREE PASID has no flags

    cdef inline void _freed_plain(self, int64_t p) noexcept:
        """The tables of a plain release: an ACTIVE PASID holding one reference, no
        flags and no hold becomes FREE at once. The caller releases its bit."""
        self._releases += 1
        self._reclaimed += 1
        self._meta[p] = FREE
        self._counts[ACTIVE] -= 1
        self._counts[FREE] += 1
        if self._fifo_prev != NULL:
            self._fifo_push(p)

    cdef inline void _ref_inc(self, int64_t p) noexcept:
        """One more reference to an ACTIVE PASID."""
        if self._meta[p] & MULTI:
            self._refcount[p] += 1
        else:
            self._meta[p] |= MULTI
            self._refcount[p] = 2

    cdef inline void _ref_dec(self, int64_t p) noexcept:
        """One reference less to an ACTIVE PASID holding two or more."""
        self._refcount[p] -= 1
        if self._refcount[p] == 1:
            self._meta[p] &= ~MULTI

    cdef int _make_free(self, int64_t p) except -1:
        """A PASID whose release is complete becomes FREE; its tags go."""
        cdef uint8_t flags = self._meta[p] & FLAG_MASK
        self._counts[self._meta[p] & STATE_MASK] -= 1
        self._counts[FREE] += 1
        self._meta[p] = FREE                  # no refcount, no flags
        space_release(&self.space, p)
        if self._fifo_prev != NULL:
            self._fifo_push(p)
        if flags:
            if flags & HAS_DATA:
                del self._data[p]
            if flags & HAS_OWNER:
                owner = self._owner.pop(p)
                use = self._use[owner] - 1
                if use:
                    self._use[owner] = use
                else:
                    del self._use[owner]
        return 0

    cdef int64_t _reclaim(self, double now) except -1:
        """Every QUARANTINED PASID whose release_at <= now becomes FREE, ascending."""
        cdef int64_t n = 0, i
        cdef list expired
        if not self._queue_len or self._queue_time[0] > now:
            return 0
        if self._queue_len == 1 or self._queue_time[1] > now and (
                self._queue_len == 2 or self._queue_time[2] > now):
            # the common case: exactly one expired
            self._make_free(self._queue_pop())
            self._reclaimed += 1
            return 1
        expired = []
        while self._queue_len and self._queue_time[0] <= now:
            expired.append(self._queue_pop())
        expired.sort()
        for p in expired:
            self._make_free(p)
        n = len(expired)
        self._reclaimed += n
        return n

    cdef int _settle(self, int64_t p, double now) except -1:
        """A released PASID with no device bound: QUARANTINED until release_at, or FREE."""
        cdef double release_at = self._hold[p]   # HAS_HOLD: set at release
        if release_at <= now:
            self._make_free(p)
            self._reclaimed += 1
        else:
            self._counts[(self._meta[p] & STATE_MASK)] -= 1
            self._counts[QUARANTINED] += 1
            self._meta[p] = (self._meta[p] & ~STATE_MASK) | QUARANTINED
            self._queue_push(release_at, p)
        return 0

    cdef int _release(self, int64_t p, double now, list teardown) except -1:
        """An ACTIVE PASID is released: DRAINING, QUARANTINED or FREE."""
        cdef uint8_t flags = (self._meta[p] & FLAG_MASK)
        cdef double release_at = now + self._grace
        self._releases += 1
        self._meta[p] &= ~MULTI
        if flags & HAS_OWNER:
            owner = self._owner[p]
            owned = self._owned[owner]
            owned.discard(p)
            if not owned:
                del self._owned[owner]
        if flags & HAS_HOLD and self._hold[p] > release_at:
            release_at = self._hold[p]
        if flags & HAS_BINDINGS:
            self._hold[p] = release_at
            self._meta[p] |= HAS_HOLD
            self._counts[ACTIVE] -= 1
            self._counts[DRAINING] += 1
            self._meta[p] = (self._meta[p] & ~STATE_MASK) | DRAINING
            for entry in (<dict>self._bindings[p]).values():
                callback = (<_Binding>entry).device.on_teardown
                if callback is not None:
                    teardown.append((callback, p))
        elif release_at <= now:
            # no hold at all: FREE at once, the release time need not be kept
            self._make_free(p)
            self._reclaimed += 1
        else:
            self._hold[p] = release_at
            self._meta[p] |= HAS_HOLD
            self._counts[ACTIVE] -= 1
            self._counts[QUARANTINED] += 1
            self._meta[p] = (self._meta[p] & ~STATE_MASK) | QUARANTINED
            self._queue_push(release_at, p)
        return 0

    cdef void _fifo_push(self, int64_t p) noexcept:
        self._fifo_prev[p] = self._fifo_tail
        self._fifo_next[p] = -1
        if self._fifo_tail >= 0:
            self._fifo_next[self._fifo_tail] = <int32_t>p
        else:
            self._fifo_head = <int32_t>p
        self._fifo_tail = <int32_t>p

    cdef void _fifo_remove(self, int64_t p) noexcept:
        cdef int32_t prev = self._fifo_prev[p], nxt = self._fifo_next[p]
        if prev >= 0:
            self._fifo_next[prev] = nxt
        else:
            self._fifo_head = nxt
        if nxt >= 0:
            self._fifo_prev[nxt] = prev
        else:
            self._fifo_tail = prev

    cdef void _queue_push(self, double release_at, int64_t p) noexcept:
        """Push onto the release heap, ordered by (release_at, PASID)."""
        cdef int64_t i = self._queue_len, parent
        self._queue_len += 1
        while i > 0:
            parent = (i - 1) >> 1
            if (self._queue_time[parent] < release_at or
                    (self._queue_time[parent] == release_at and self._queue_pasid[parent] < p)):
                break
            self._queue_time[i] = self._queue_time[parent]
            self._queue_pasid[i] = self._queue_pasid[parent]
            i = parent
        self._queue_time[i] = release_at
        self._queue_pasid[i] = <int32_t>p

    cdef int64_t _queue_pop(self) noexcept:
        """Pop the earliest (release_at, PASID) and return the PASID."""
        cdef int64_t top = self._queue_pasid[0]
        cdef int64_t n = self._queue_len - 1
        cdef double time = self._queue_time[n]
        cdef int32_t pasid = self._queue_pasid[n]
        cdef int64_t i = 0, child
        self._queue_len = n
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and (
                    self._queue_time[child + 1] < self._queue_time[child] or
                    (self._queue_time[child + 1] == self._queue_time[child] and
                     self._queue_pasid[child + 1] < self._queue_pasid[child])):
                child += 1
            if (time < self._queue_time[child] or
                    (time == self._queue_time[child] and pasid < self._queue_pasid[child])):
                break
            self._queue_time[i] = self._queue_time[child]
            self._queue_pasid[i] = self._queue_pasid[child]
            i = child
        if n:
            self._queue_time[i] = time
            self._queue_pasid[i] = pasid
        return top

    cdef int64_t _choose(self, int64_t lo, int64_t hi) noexcept:
        """The FREE ID the strategy gives in [lo, hi], or -1. Moves nothing but the generator."""
        cdef int64_t p, start, below, count
        if self._strategy == LOWEST:
            p = space_find_free(&self.space, lo)
        elif self._strategy == CYCLIC:
            start = self._cursor
            if lo <= start <= hi:
                p = space_find_free(&self.space, start)
                if 0 <= p <= hi:
                    return p
            p = space_find_free(&self.space, lo)
        elif self._strategy == FIFO:
            p = self._fifo_head
            while p >= 0 and not (lo <= p <= hi):
                p = self._fifo_next[p]
            return p
        else:
            below = space_rank(&self.space, lo)
            count = space_rank(&self.space, hi + 1) - below
            if count == 0:
                return -1
            return space_select(&self.space, below + <int64_t>draw_below(&self._rng, <uint64_t>count))
        return p if 0 <= p <= hi else -1

    cdef int _check_quota(self, object owner, int64_t n) except -1:
        """QuotaExceeded (a counted failure) if ``n`` more would pass the owner's quota.

        Also where an unhashable owner raises TypeError, before anything changes.
        """
        if self._over_quota(owner, n):
            raise QuotaExceeded(f"owner {owner!r} is at its quota of {self._quota[owner]} PASIDs")
        return 0

    cdef int _over_quota(self, object owner, int64_t n) except -1:
        """1 (a counted failure) if ``n`` more would pass the owner's quota, else 0."""
        if owner is None:
            return 0
        if not self._quota:
            hash(owner)
            return 0
        quota = self._quota.get(owner)
        if quota is not None and self._use.get(owner, 0) + n > quota:
            self._failures += 1
            return 1
        return 0

    cdef int _activate(self, int64_t p, object owner, object data) except -1:
        """A chosen FREE PASID becomes ACTIVE with refcount 1."""
        self._take_state(p, ACTIVE)             # refcount 1: no MULTI
        return self._activated(p, owner, data)

    cdef int _activated(self, int64_t p, object owner, object data) except -1:
        """The bookkeeping of a new allocation whose ID is already ACTIVE."""
        self._generation[p] += 1
        if owner is not None:
            self._tag_owner(p, owner)
        if data is not None:
            self._meta[p] |= HAS_DATA
            self._data[p] = data
        self._allocations += 1
        if self._counts[ACTIVE] > self._high_water:
            self._high_water = self._counts[ACTIVE]
        return 0

    cdef int _tag_owner(self, int64_t p, object owner) except -1:
        self._meta[p] |= HAS_OWNER
        self._owner[p] = owner
        self._use[owner] = self._use.get(owner, 0) + 1
        owned = self._owned.get(owner)
        if owned is None:
            self._owned[owner] = {p}
        else:
            (<set>owned).add(p)
        return 0

    cdef int64_t _alloc(self, object owner, object data, object min, object max) except -2:
        """Allocate by the strategy; -1 (and failures += 1) when nothing is FREE in range."""
        cdef int64_t lo = 0 if min is None else self._check_id(min)
        cdef int64_t hi = self._size - 1 if max is None else self._check_id(max)
        if lo > hi:
            raise InvalidPasid(f"empty range {lo}..{hi}")
        if self._queue_len:
            self._sync()
        self._check_quota(owner, 1)
        return self._alloc_in(owner, data, lo, hi)

    cdef int64_t _alloc_in(self, object owner, object data, int64_t lo, int64_t hi) except -2:
        """The body of an allocation in a checked range, quota passed, clock synced."""
        cdef int64_t p
        if self._strategy == LOWEST and lo == 0:
            # the common case: find and take the lowest FREE ID in one descent
            p = space_take_lowest(&self.space, hi)
            if p == -2:
                self._failures += 1
                return -1
            if p >= 0:
                self._left_free(p, ACTIVE)
                self._activated(p, owner, data)
                return p
        p = self._choose(lo, hi)
        if p < 0:
            self._failures += 1
            return -1
        self._activate(p, owner, data)
        if self._strategy == CYCLIC:
            self._cursor = p + 1
        return p

    # ------------------------------------------------------------ allocation

    def alloc(self, owner=None, *, data=None, min=None, max=None):
        """Allocate a PASID by the strategy: ACTIVE, refcount 1, generation + 1. O(log64 N).

        ``owner`` is a tag (hashable; None for a PASID without a process);
        ``data`` is kept with the PASID. ``min``/``max`` bound the choice
        (inclusive). Raises PasidExhausted when nothing in range is FREE,
        QuotaExceeded past the owner's quota, InvalidPasid for a bound outside
        the space or ``min > max``.

        >>> a = PasidAllocator(bits=4)
        >>> a.alloc(), a.alloc(min=8), a.alloc(owner="proc", data={"asid": 7})
        (1, 8, 2)
        """
        cdef int64_t p
        with cython.critical_section(self):
            p = self._alloc(owner, data, min, max)
        if p < 0:
            raise PasidExhausted(f"no FREE PASID in {_range_text(self, min, max)}")
        return p

    def try_alloc(self, owner=None, *, data=None, min=None, max=None):
        """Like :meth:`alloc`, but None where alloc raises PasidExhausted (quota included). O(log64 N).

        >>> a = PasidAllocator(bits=1); a.try_alloc(), a.try_alloc()
        (1, None)
        """
        cdef int64_t p
        try:
            with cython.critical_section(self):
                p = self._alloc(owner, data, min, max)
        except QuotaExceeded:
            return None
        return p if p >= 0 else None

    def alloc_exact(self, pasid, owner=None, *, data=None):
        """Allocate exactly ``pasid``. O(log64 N).

        StateError unless it is FREE; the quota applies; the cyclic cursor
        does not move.

        >>> a = PasidAllocator(bits=8); a.alloc_exact(42), a.state(42).name
        (42, 'ACTIVE')
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            self._sync()
            if (self._meta[p] & STATE_MASK) != FREE:
                raise StateError(f"PASID {p} is {_STATE_NAMES[(self._meta[p] & STATE_MASK)]}, not FREE")
            self._check_quota(owner, 1)
            self._activate(p, owner, data)
        return p

    def open(self, owner=None, *, data=None, min=None, max=None):
        """Allocate like :meth:`alloc` and wrap the reference in a :class:`~pasid.PasidHandle`.

        >>> a = PasidAllocator(bits=8)
        >>> with a.open() as h:
        ...     h.pasid, h.valid
        (1, True)
        """
        cdef int64_t p
        with cython.critical_section(self):
            p = self._alloc(owner, data, min, max)
            generation = self._generation[p] if p >= 0 else 0
        if p < 0:
            raise PasidExhausted(f"no FREE PASID in {_range_text(self, min, max)}")
        return PasidHandle(self, p, generation)

    def alloc_many(self, n, owner=None, *, data=None):
        """``n`` PASIDs as a uint32 array: the same IDs as ``n`` calls of :meth:`alloc`.

        All or nothing: PasidExhausted if fewer than ``n`` are FREE,
        QuotaExceeded past the quota; ``n < 0``: ValueError. The loop runs in C:
        O(n + log64 N) for ``lowest``.

        >>> PasidAllocator(bits=8).alloc_many(4)
        array([1, 2, 3, 4], dtype=uint32)
        """
        cdef int64_t count = as_int64(n, "n")
        cdef int64_t i
        if count < 0:
            raise ValueError(f"n must be >= 0, got {count}")
        out = np.empty(count, dtype=np.uint32)
        cdef uint32_t[::1] ids = out
        with cython.critical_section(self):
            self._sync()
            self._check_quota(owner, count)
            if count > self._counts[FREE]:
                self._failures += 1
                raise PasidExhausted(f"{count} PASIDs asked, {self._counts[FREE]} FREE")
            cursor, rng = self._cursor, self._rng
            if self._fill(&ids[0] if count else NULL, count) < 0:
                self._cursor, self._rng = cursor, rng
                raise MemoryError()
            self._allocations += count
            if self._counts[ACTIVE] > self._high_water:
                self._high_water = self._counts[ACTIVE]
            if owner is not None or data is not None:
                for i in range(count):
                    if owner is not None:
                        self._tag_owner(ids[i], owner)
                    if data is not None:
                        self._meta[ids[i]] |= HAS_DATA
                        self._data[ids[i]] = data
        return out

    cdef int64_t _fill(self, uint32_t* out, int64_t n) noexcept:
        """Take ``n`` FREE PASIDs by the strategy into ``out`` (n <= FREE); -1 when out of memory, undone."""
        cdef Node* path[MAX_HEIGHT + 1]
        cdef Node* leaf
        cdef int64_t done = 0, p, base, hi = self._size - 1
        cdef uint64_t word, bits
        cdef int i
        while done < n:
            if self._strategy == LOWEST:
                p = space_find_free(&self.space, 0)
                leaf = space_leaf(&self.space, p, path)
                if leaf == NULL:
                    self._unfill(out, done)
                    return -1
                # peel every free bit of this word before consulting the summaries again
                base = p & ~63
                word = leaf.slot[(p >> 6) & 63]
                bits = 0
                i = 0
                while word and done < n:
                    bits |= word & (0 - word)
                    p = base + ctz64(word)
                    word &= word - 1
                    out[done] = <uint32_t>p
                    self._meta[p] = ACTIVE        # was FREE: no flags; refcount 1
                    self._generation[p] += 1
                    done += 1
                    i += 1
                space_take_bits(&self.space, leaf, path, base, bits, i)
                self._counts[FREE] -= i
                self._counts[ACTIVE] += i
            else:
                p = self._choose(0, hi)
                if space_take(&self.space, p) < 0:
                    self._unfill(out, done)
                    return -1
                if self._fifo_prev != NULL:
                    self._fifo_remove(p)
                self._meta[p] = ACTIVE
                self._generation[p] += 1
                self._counts[FREE] -= 1
                self._counts[ACTIVE] += 1
                if self._strategy == CYCLIC:
                    self._cursor = p + 1
                out[done] = <uint32_t>p
                done += 1
        return 0

    cdef void _unfill(self, uint32_t* out, int64_t done) noexcept:
        """Undo the first ``done`` PASIDs of a failed :meth:`_fill`.

        The fifo queue gets them back at its head in their old order (a full-space
        fill takes from the head); the caller restores the cursor and generator.
        """
        cdef int64_t i, p
        for i in range(done - 1, -1, -1):
            p = out[i]
            space_release(&self.space, p)
            if self._fifo_prev != NULL:
                self._fifo_prev[p] = -1
                self._fifo_next[p] = self._fifo_head
                if self._fifo_head >= 0:
                    self._fifo_prev[self._fifo_head] = <int32_t>p
                else:
                    self._fifo_tail = <int32_t>p
                self._fifo_head = <int32_t>p
            self._meta[p] = FREE
            self._generation[p] -= 1
            self._counts[FREE] += 1
            self._counts[ACTIVE] -= 1

    # ------------------------------------------------------------ references

    def get(self, pasid):
        """Take one more reference to an ACTIVE PASID (StateError otherwise). O(1).

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.get(p); a.refcount(p)
        2
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            if (self._meta[p] & STATE_MASK) != ACTIVE:
                raise StateError(f"get of PASID {p}, which is {_STATE_NAMES[(self._meta[p] & STATE_MASK)]}")
            self._ref_inc(p)

    cdef int _put(self, object pasid) except -1:
        return self._put_id(self._check_id(pasid))

    cdef int _put_id(self, int64_t p) except -1:
        """Drop one reference to PASID ``p`` (in range); returns its state after."""
        cdef list teardown = None
        cdef int state
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            if (self._meta[p] & STATE_MASK) != ACTIVE:
                raise StateError(f"free of PASID {p}, which is {_STATE_NAMES[self._meta[p] & STATE_MASK]}")
            if self._meta[p] == ACTIVE and self._grace <= 0:
                # no extra reference, no side table, no hold: FREE at once
                self._freed_plain(p)
                space_release(&self.space, p)
            elif self._meta[p] & MULTI:
                self._ref_dec(p)
            else:
                if self._meta[p] & HAS_BINDINGS:
                    teardown = []
                self._release(p, self._now if self._clock is None else self._read_clock(), teardown)
            state = self._meta[p] & STATE_MASK
        if teardown:
            run_teardown(teardown)
        return state

    def put(self, pasid):
        """Drop one reference to an ACTIVE PASID; the last put releases it. O(log64 N).

        Released, it is DRAINING while a device is bound, else QUARANTINED
        until ``release_at``, else FREE; bound devices' ``on_teardown`` run
        after the change. StateError unless ACTIVE (a double free).

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.put(p); a.state(p).name
        'FREE'
        """
        self._put(pasid)

    def free(self, pasid):
        """The same as :meth:`put`: drop one reference; the last releases. O(log64 N).

        >>> a = PasidAllocator(bits=8); a.free(a.alloc()); len(a)
        0
        """
        self._put(pasid)

    def free_many(self, ids):
        """As successive :meth:`free` calls over ``ids``, all or nothing. O(len(ids) log64 N).

        A duplicate is a double free unless the refcount allows it.

        >>> a = PasidAllocator(bits=8); a.free_many(a.alloc_many(3)); len(a)
        0
        """
        cdef const uint32_t[::1] pasids = self._id_array(ids)
        cdef Py_ssize_t i, j, n = pasids.shape[0]
        cdef int64_t p, word_base = -1, plain = 0
        cdef uint64_t bits = 0
        cdef int nbits = 0
        cdef double now
        cdef list teardown = []
        # a local copy of the table pointer: writes through a uint8_t* may alias
        # any field of self, so the compiler would reload self._meta every time
        cdef uint8_t* meta = self._meta
        cdef bint no_grace = self._grace <= 0
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            now = self._read_clock()            # a clock that raises does so before any change
            # pass 1: drop the references; the last one marks RELEASING (undone on error)
            for i in range(n):
                p = pasids[i]
                if (meta[p] & STATE_MASK) != ACTIVE:
                    name = ("ACTIVE, already freed" if (meta[p] & STATE_MASK) == RELEASING
                            else _STATE_NAMES[meta[p] & STATE_MASK])
                    for j in range(i - 1, -1, -1):
                        if (meta[pasids[j]] & STATE_MASK) == RELEASING:
                            meta[pasids[j]] ^= RELEASING ^ ACTIVE
                        else:
                            self._ref_inc(pasids[j])
                    raise StateError(f"free of PASID {p}, which is {name}")
                if meta[p] & MULTI:
                    self._ref_dec(p)
                else:
                    meta[p] ^= ACTIVE ^ RELEASING
            # pass 2: release, in order, what reached zero
            for i in range(n):
                p = pasids[i]
                if (meta[p] & STATE_MASK) != RELEASING:
                    continue
                meta[p] ^= RELEASING ^ ACTIVE
                if meta[p] != ACTIVE or not no_grace:
                    self._release(p, now, teardown)
                    continue
                # the plain case, batched: FREE at once (as _freed_plain, with
                # the counters kept in a local), its bit gathered with its
                # word's neighbours for one summary update
                meta[p] = FREE
                plain += 1
                if self._fifo_prev != NULL:
                    self._fifo_push(p)
                if (p & ~63) != word_base:
                    if bits:
                        space_release_bits(&self.space, word_base, bits, nbits)
                    word_base = p & ~63
                    bits = 0
                    nbits = 0
                bits |= (<uint64_t>1) << (p & 63)
                nbits += 1
            if bits:
                space_release_bits(&self.space, word_base, bits, nbits)
            self._releases += plain
            self._reclaimed += plain
            self._counts[ACTIVE] -= plain
            self._counts[FREE] += plain
        if teardown:
            run_teardown(teardown)

    cdef object _id_array(self, object ids):
        """``ids`` as a contiguous uint32 array, every one in range (InvalidPasid, TypeError).

        A uint32 array (what :meth:`alloc_many` returns) is used as it is: one
        C pass checks the range, no copy.
        """
        cdef const uint32_t[::1] view
        cdef Py_ssize_t i
        array = np.asarray(ids)
        if array.dtype == object:
            # Python ints too large for any integer dtype: checked one by one
            for value in array.reshape(-1):
                self._check_id(value)
            array = array.astype(np.int64)
        if array.dtype == np.bool_ or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise TypeError(f"ids must be integers, not {array.dtype}")
        array = np.ascontiguousarray(array.reshape(-1))
        if array.dtype != np.uint32:
            if array.size and (array.min() < 0 or array.max() >= self._size):
                bad = (array < 0) | (array >= self._size)
                raise InvalidPasid(
                    f"PASID {int(array[bad.argmax()])} out of range 0..{self._size - 1}"
                )
            return array.astype(np.uint32)
        view = array
        for i in range(view.shape[0]):
            if view[i] >= self._size:
                raise InvalidPasid(f"PASID {view[i]} out of range 0..{self._size - 1}")
        return array

    # ------------------------------------------------------------ reservation

    cdef tuple _range(self, lo, hi):
        cdef int64_t first = self._check_id(lo)
        cdef int64_t last = first if hi is None else self._check_id(hi)
        if first > last:
            raise InvalidPasid(f"empty range {first}..{last}")
        return first, last

    def reserve(self, lo, hi=None):
        """FREE IDs ``lo..hi`` (inclusive) become RESERVED, all or none. O(range log64 N).

        StateError names the first ID that is not FREE; ``lo > hi``: InvalidPasid.

        >>> a = PasidAllocator(bits=8); a.reserve(1, 3); a.alloc()
        4
        """
        cdef int64_t first, last, p
        first, last = self._range(lo, hi)
        with cython.critical_section(self):
            self._sync()
            for p in range(first, last + 1):
                if (self._meta[p] & STATE_MASK) != FREE:
                    raise StateError(
                        f"cannot reserve PASID {p}: it is {_STATE_NAMES[(self._meta[p] & STATE_MASK)]}")
            for p in range(first, last + 1):
                try:
                    self._take_state(p, RESERVED)
                except MemoryError:
                    for q in range(first, p):
                        self._make_free(q)
                    raise

    def unreserve(self, lo, hi=None):
        """RESERVED IDs ``lo..hi`` (inclusive) become FREE, all or none. O(range log64 N).

        >>> a = PasidAllocator(bits=8); a.unreserve(0); a.alloc()
        0
        """
        cdef int64_t first, last, p
        first, last = self._range(lo, hi)
        with cython.critical_section(self):
            self._sync()
            for p in range(first, last + 1):
                if (self._meta[p] & STATE_MASK) != RESERVED:
                    raise StateError(
                        f"cannot unreserve PASID {p}: it is {_STATE_NAMES[(self._meta[p] & STATE_MASK)]}")
            for p in range(first, last + 1):
                self._make_free(p)

    # ------------------------------------------------------------ devices

    def add_device(self, device, *, bits=20, drain=0, on_teardown=None):
        """Declare ``device`` or update its settings; returns its handle. O(devices bound).

        ``bits``: the device's PASID width (1..20); ``drain``: its quarantine
        time after it unbinds; ``on_teardown(pasid)``: called when a PASID
        bound to it is released. Narrowing below a bound PASID: InvalidPasid.
        The handle is a small int naming the device in the C-level API
        (``c_bind``/``c_unbind``), stable until :meth:`remove_device`, never
        reused by this allocator (a snapshot's devices get 0, 1, ... in
        declaration order).

        >>> a = PasidAllocator(bits=8); a.add_device("gpu", drain=5), a.pending("gpu")
        (0, [])
        """
        cdef int64_t width = as_int64(bits, "bits")
        if not 1 <= width <= 20:
            raise ValueError(f"device bits must be in 1..20, got {width}")
        cdef double drain_time = as_time(drain, "drain")
        if drain_time < 0:
            raise ValueError(f"drain must be >= 0, got {drain_time}")
        if on_teardown is not None and not callable(on_teardown):
            raise TypeError("on_teardown must be None or callable")
        hash(device)
        with cython.critical_section(self):
            info = self._devices.get(device)
            if info is not None and (<_Device>info).bound:
                widest = max((<_Device>info).bound)
                if widest >> width:
                    raise InvalidPasid(
                        f"device {device!r} has PASID {widest} bound, wider than {width} bits")
            if info is None:
                info = self._new_device(device, width, drain_time, on_teardown)
            else:
                (<_Device>info).bits = width
                (<_Device>info).drain = drain_time
                (<_Device>info).on_teardown = on_teardown
            return (<_Device>info).handle

    cdef _Device _new_device(self, object device, int bits, double drain, object on_teardown):
        """Declare a device: its entry in the device table and its handle (never reused)."""
        cdef _Device info = _Device(bits, drain, on_teardown, device, len(self._device_list))
        self._devices[device] = info
        self._device_list.append(info)
        return info

    def remove_device(self, device):
        """Hot-unplug: drop all of ``device``'s bindings at once, no drain hold, no callback.

        Unknown device: StateError. O(bindings of the device).

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "nic"); a.free(p)
        >>> a.state(p).name; a.remove_device("nic"); a.state(p).name
        'DRAINING'
        'FREE'
        """
        cdef double now
        with cython.critical_section(self):
            if device not in self._devices:
                raise StateError(f"unknown device {device!r}")
            self._sync()
            now = self._read_clock()
            for p in sorted((<_Device>self._devices[device]).bound):
                bindings = self._bindings[p]
                del bindings[device]
                if not bindings:
                    del self._bindings[p]
                    self._meta[p] &= ~HAS_BINDINGS
                    if (self._meta[p] & STATE_MASK) == DRAINING:
                        self._settle(p, now)
            self._device_list[(<_Device>self._devices[device]).handle] = None
            del self._devices[device]

    def bind(self, pasid, device, *, data=None):
        """Bind an ACTIVE PASID to ``device``, counted per pair. O(1) dict work.

        ``data`` is the driver's value for this pair (kept from the first bind;
        a later bind with data replaces it). An undeclared device is declared
        with the defaults. StateError unless ACTIVE; InvalidPasid if the PASID
        is wider than the device's bits.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "gpu", data="ctx")
        >>> a.devices(p), a.binding(p, "gpu")
        (['gpu'], 'ctx')
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            self._bind(p, device, None, data)

    cdef int _bind(self, int64_t p, object device, _Device info, object data) except -1:
        """The body of bind (critical section held, clock synced): ``info`` is the
        device's entry when the caller has it, else None (looked up here)."""
        cdef object key = p                   # one int object for every table below
        cdef _Binding entry
        cdef dict bindings
        if (self._meta[p] & STATE_MASK) != ACTIVE:
            raise StateError(f"bind of PASID {p}, which is {_STATE_NAMES[(self._meta[p] & STATE_MASK)]}")
        if info is None:
            info = self._devices.get(device)   # an unhashable device raises here, before any change
        if info is not None and p >> info.bits:
            raise InvalidPasid(f"PASID {p} is wider than device {device!r}'s {info.bits} bits")
        if info is None:
            info = self._new_device(device, 20, 0.0, None)
        if self._meta[p] & HAS_BINDINGS:
            bindings = self._bindings[key]
            entry = bindings.get(info.key)
        else:
            bindings = self._bindings[key] = {}
            self._meta[p] |= HAS_BINDINGS
            entry = None
        if entry is None:
            bindings[info.key] = _Binding(1, data, info)
            info.bound.add(key)
        else:
            entry.count += 1
            if data is not None:
                entry.data = data
        return 0

    def unbind(self, pasid, device):
        """``device`` says it has drained ``pasid`` (ACTIVE or DRAINING). O(log64 N).

        The unbind that drops the pair's count to zero holds the PASID until
        now + the device's drain; the last unbind of a DRAINING PASID sends it
        to QUARANTINED or FREE. StateError if not bound.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "gpu"); a.free(p)
        >>> a.unbind(p, "gpu"); a.state(p).name
        'FREE'
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            self._unbind(p, device)

    cdef int _unbind(self, int64_t p, object device) except -1:
        """The body of unbind (critical section held, clock synced); returns the state after."""
        cdef object key = p
        cdef int state = self._meta[p] & STATE_MASK
        cdef double now, hold
        cdef dict bindings = None
        cdef _Binding entry = None
        if self._meta[p] & HAS_BINDINGS:
            bindings = self._bindings[key]
            entry = bindings.get(device)
        if entry is None:
            raise StateError(f"PASID {p} is not bound to device {device!r}")
        if entry.count > 1:
            entry.count -= 1
            return state
        now = self._read_clock()            # a clock that raises does so before any change
        del bindings[device]
        entry.device.bound.discard(key)
        hold = now + entry.device.drain
        if not ((self._meta[p] & FLAG_MASK) & HAS_HOLD) or hold > self._hold[p]:
            self._hold[p] = hold
            self._meta[p] |= HAS_HOLD
        if not bindings:
            del self._bindings[key]
            self._meta[p] &= ~HAS_BINDINGS
            if state == DRAINING:
                self._settle(p, now)
        return self._meta[p] & STATE_MASK

    # ------------------------------------------------------------ owners

    def exit_owner(self, owner):
        """Release every ACTIVE PASID of ``owner`` at once, whatever its refcount; never waits.

        Returns them ascending; their handles become stale; bound devices'
        ``on_teardown`` run after the change. ``owner=None``: ValueError.
        O(k log k) for k PASIDs.

        >>> a = PasidAllocator(bits=8); h = a.open("proc"); h2 = h.dup()
        >>> a.exit_owner("proc"), h.valid
        ([1], False)
        """
        return self.c_exit_owner(owner)

    def set_quota(self, owner, n):
        """At most ``n`` PASIDs of ``owner`` ACTIVE, DRAINING or QUARANTINED; None lifts it. O(1).

        A quota below current use refuses new allocations until use drops.
        ``owner=None`` or ``n < 0``: ValueError.

        >>> a = PasidAllocator(bits=8); a.set_quota("vm", 1); _ = a.alloc("vm")
        >>> a.try_alloc("vm") is None
        True
        """
        if owner is None:
            raise ValueError("set_quota(None, ...): owner-less PASIDs have no quota")
        cdef int64_t quota = 0
        if n is not None:
            quota = as_int64(n, "quota")
            if quota < 0:
                raise ValueError(f"quota must be >= 0, got {quota}")
        hash(owner)
        with cython.critical_section(self):
            if n is None:
                self._quota.pop(owner, None)
            else:
                self._quota[owner] = quota

    # ------------------------------------------------------------ time

    @property
    def now(self):
        """The current time: the logical clock, or the callable clock's reading (a float)."""
        return self._read_clock()

    def advance(self, to=None, *, by=None):
        """Move the logical clock forward and reclaim; returns how many became FREE.

        Exactly one of ``to`` and ``by``; backwards, or with a callable clock:
        ValueError. O(k log N) for k expired.

        >>> a = PasidAllocator(bits=8, grace=3); a.free(a.alloc()); a.advance(to=3)
        1
        """
        cdef double target
        if self._clock is not None:
            raise ValueError("advance() needs the logical clock; this allocator has a callable clock")
        if (to is None) == (by is None):
            raise ValueError("advance() takes exactly one of to= and by=")
        with cython.critical_section(self):
            if to is not None:
                target = as_time(to, "to")
            else:
                target = self._now + as_time(by, "by")
            if target < self._now:
                raise ValueError(f"the clock cannot go back from {self._now} to {target}")
            self._now = target
            return self._reclaim(target)

    def next_release_time(self):
        """The earliest ``release_at`` waiting, or None. O(1).

        >>> PasidAllocator(bits=8).next_release_time() is None
        True
        """
        with cython.critical_section(self):
            self._sync()
            return self._queue_time[0] if self._queue_len else None

    # ------------------------------------------------------------ queries

    def state(self, pasid):
        """The :class:`~pasid.State` of ``pasid``. O(1).

        >>> PasidAllocator(bits=8).state(0).name
        'RESERVED'
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            return _STATES[(self._meta[p] & STATE_MASK)]

    def states(self, ids):
        """The states of ``ids`` as a uint8 array. O(len(ids)).

        >>> PasidAllocator(bits=8).states([0, 1])
        array([1, 0], dtype=uint8)
        """
        cdef const uint32_t[::1] pasids = self._id_array(ids)
        cdef Py_ssize_t i, n = pasids.shape[0]
        out = np.empty(n, dtype=np.uint8)
        cdef uint8_t[::1] view = out
        with cython.critical_section(self):
            self._sync()
            for i in range(n):
                view[i] = (self._meta[pasids[i]] & STATE_MASK)
        return out

    def owner(self, pasid):
        """The owner tag of ``pasid``, kept until it is FREE (None if owner-less). O(1).

        >>> a = PasidAllocator(bits=8); a.owner(a.alloc("vm1"))
        'vm1'
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            self._sync()
            return self._owner.get(p) if (self._meta[p] & FLAG_MASK) & HAS_OWNER else None

    def data(self, pasid):
        """The data given at allocation, kept until FREE (None if none). O(1).

        >>> a = PasidAllocator(bits=8); a.data(a.alloc(data="ctx"))
        'ctx'
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            self._sync()
            return self._data.get(p) if (self._meta[p] & FLAG_MASK) & HAS_DATA else None

    def refcount(self, pasid):
        """References held on ``pasid`` (0 unless ACTIVE). O(1).

        >>> a = PasidAllocator(bits=8); a.refcount(a.alloc())
        1
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            self._sync()
            state = self._meta[p] & STATE_MASK
            if state != ACTIVE:
                return 0
            return self._refcount[p] if self._meta[p] & MULTI else 1

    def generation(self, pasid):
        """How many times ``pasid`` has been allocated. O(1).

        >>> a = PasidAllocator(bits=8); a.free(a.alloc()); a.generation(1)
        1
        """
        cdef int64_t p = self._check_id(pasid)
        return self._generation[p]

    def devices(self, pasid):
        """The devices ``pasid`` is bound to, in bind order. O(devices).

        >>> PasidAllocator(bits=8).devices(1)
        []
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            self._sync()
            if (self._meta[p] & FLAG_MASK) & HAS_BINDINGS:
                return list(self._bindings[p])
            return []

    def binding(self, pasid, device):
        """The data given to :meth:`bind` for this (PASID, device) pair; StateError if not bound.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, 7); a.binding(p, 7) is None
        True
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            self._sync()
            if not ((self._meta[p] & FLAG_MASK) & HAS_BINDINGS) or device not in self._bindings[p]:
                raise StateError(f"PASID {p} is not bound to device {device!r}")
            return (<_Binding>self._bindings[p][device]).data

    def pending(self, device):
        """The DRAINING PASIDs still bound to ``device``, ascending; unknown device: StateError.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "gpu"); a.free(p)
        >>> a.pending("gpu")
        [1]
        """
        with cython.critical_section(self):
            if device not in self._devices:
                raise StateError(f"unknown device {device!r}")
            self._sync()
            return sorted([p for p in (<_Device>self._devices[device]).bound
                           if (self._meta[p] & STATE_MASK) == DRAINING])

    def stats(self):
        """Counts per state and the counters since construction, as a dict. O(1).

        >>> s = PasidAllocator(bits=8).stats(); s["free"], s["reserved"]
        (255, 1)
        """
        with cython.critical_section(self):
            self._sync()
            return {
                "free": self._counts[FREE],
                "reserved": self._counts[RESERVED],
                "active": self._counts[ACTIVE],
                "draining": self._counts[DRAINING],
                "quarantined": self._counts[QUARANTINED],
                "allocations": self._allocations,
                "releases": self._releases,
                "reclaimed": self._reclaimed,
                "failures": self._failures,
                "high_water": self._high_water,
            }

    @property
    def bits(self):
        """The PASID width: IDs are 0 .. 2**bits - 1."""
        return self._bits

    @property
    def strategy(self):
        """The allocation strategy: lowest, cyclic, fifo or random."""
        return STRATEGIES[self._strategy]

    @property
    def grace(self):
        """The minimum time from release to reuse (a float)."""
        return self._grace

    def __len__(self):
        return self._counts[ACTIVE]

    def __iter__(self):
        """The ACTIVE PASIDs, ascending (a list taken at the call). O(N): a pass over the table."""
        cdef list found = []
        cdef int64_t p
        with cython.critical_section(self):
            for p in range(self._size):
                if (self._meta[p] & STATE_MASK) == ACTIVE:
                    found.append(p)
        return iter(found)

    def __contains__(self, pasid):
        cdef int64_t p
        try:
            p = as_int64(pasid, "PASID")
        except TypeError:
            return False
        if p < 0 or p >= self._size:
            return False
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            return (self._meta[p] & STATE_MASK) == ACTIVE

    def __repr__(self):
        return (f"<pasid.PasidAllocator bits={self._bits} strategy={self.strategy!r} "
                f"active={self._counts[ACTIVE]} free={self._counts[FREE]}>")

    # ------------------------------------------------------------ the C-level API
    #
    # For simulators written in Cython: ``from pasid._core cimport PasidAllocator``.
    # C integers and doubles in and out; each call takes the object's critical
    # section, checks its arguments and keeps the counters exactly like the
    # Python method of the same name. Misuse raises the Python method's
    # exception (``except -1``); an allocation that finds nothing FREE returns
    # -1 instead of raising. Devices are named by the handle add_device returns.

    cdef int _check_c_id(self, int64_t p) except -1:
        if p < 0 or p >= self._size:
            raise InvalidPasid(f"PASID {p} out of range 0..{self._size - 1}")
        return 0

    cdef _Device _device_at(self, int device):
        if device < 0 or device >= len(self._device_list) or self._device_list[device] is None:
            raise StateError(f"no device has handle {device}")
        return <_Device>self._device_list[device]

    cdef int64_t c_alloc(self, object owner, int64_t lo, int64_t hi) except -2:
        """Allocate by the strategy in ``lo..hi``: the PASID, or -1 when nothing
        there is FREE or ``owner`` is at its quota (a counted failure).
        InvalidPasid for a range outside the space or empty."""
        if lo < 0 or hi >= self._size or lo > hi:
            raise InvalidPasid(f"range {lo}..{hi} is empty or outside 0..{self._size - 1}")
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            if self._over_quota(owner, 1):
                return -1
            return self._alloc_in(owner, None, lo, hi)

    cdef int c_get(self, int64_t p) except -1:
        """One more reference to ACTIVE ``p`` (StateError otherwise); returns 0."""
        self._check_c_id(p)
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            if (self._meta[p] & STATE_MASK) != ACTIVE:
                raise StateError(f"get of PASID {p}, which is {_STATE_NAMES[(self._meta[p] & STATE_MASK)]}")
            self._ref_inc(p)
        return 0

    cdef int c_put(self, int64_t p) except -1:
        """Drop one reference (the last releases); returns ``p``'s state after:
        ACTIVE while references remain, else DRAINING, QUARANTINED or FREE."""
        self._check_c_id(p)
        return self._put_id(p)

    cdef int c_bind(self, int64_t p, int device) except -1:
        """Bind ACTIVE ``p`` to the device with that handle (counted per pair); returns 0."""
        self._check_c_id(p)
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            info = self._device_at(device)
            self._bind(p, info.key, info, None)
        return 0

    cdef int c_unbind(self, int64_t p, int device) except -1:
        """The device with that handle has drained ``p``; returns ``p``'s state after."""
        self._check_c_id(p)
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            return self._unbind(p, self._device_at(device).key)

    cdef list c_exit_owner(self, object owner):
        """Release every ACTIVE PASID of ``owner``; returns them ascending (a list)."""
        if owner is None:
            raise ValueError("exit_owner(None): owner-less PASIDs have no owner to exit")
        cdef list teardown = []
        cdef list released
        cdef double now
        with cython.critical_section(self):
            self._sync()
            released = sorted(self._owned.get(owner, ()))
            now = self._read_clock()
            for p in released:
                self._release(p, now, teardown)
        if teardown:
            run_teardown(teardown)
        return released

    cdef int64_t c_advance(self, double to) except -1:
        """Move the logical clock to ``to`` and reclaim; returns how many became FREE."""
        if self._clock is not None:
            raise ValueError("advance() needs the logical clock; this allocator has a callable clock")
        if not isfinite(to):
            raise ValueError(f"to must be finite, got {to}")
        with cython.critical_section(self):
            if to < self._now:
                raise ValueError(f"the clock cannot go back from {self._now} to {to}")
            self._now = to
            return self._reclaim(to)

    cdef double c_now(self) except? -1.0:
        """The current time (the callable clock's reading, if it has one)."""
        return self._read_clock()

    cdef int c_state(self, int64_t p) except -1:
        """``p``'s state, 0..4 (the values of :class:`~pasid.State`)."""
        self._check_c_id(p)
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            return self._meta[p] & STATE_MASK

    cdef int64_t c_generation(self, int64_t p) except -1:
        """How many times ``p`` has been allocated."""
        self._check_c_id(p)
        return self._generation[p]

    cdef int64_t c_count(self, int state) except -1:
        """How many PASIDs are in ``state`` (0..4) now."""
        if state < 0 or state > 4:
            raise ValueError(f"state must be 0..4, got {state}")
        with cython.critical_section(self):
            if self._queue_len:
                self._sync()
            return self._counts[state]

    # ------------------------------------------------------------ snapshots

    def _export(self):
        """The whole state as the dict of ``pasid._snapshot.FIELDS`` (shared with the pure backend)."""
        cdef int64_t size = self._size
        cdef int64_t p
        cdef list fifo
        self._sync()
        meta = np.asarray(<uint8_t[:size]>self._meta).copy()
        state = meta & STATE_MASK
        ids = np.flatnonzero(state)
        multi = np.flatnonzero(meta & MULTI)
        refcount = np.asarray(<uint32_t[:size]>self._refcount)
        generation = np.asarray(<uint32_t[:size]>self._generation)
        generated = np.flatnonzero(generation)
        held = np.flatnonzero(meta & HAS_HOLD)
        hold = np.asarray(<double[:size]>self._hold)
        if self._fifo_prev != NULL:
            fifo = []
            p = self._fifo_head
            while p >= 0:
                fifo.append(p)
                p = self._fifo_next[p]
        return {
            "bits": self._bits,
            "strategy": self.strategy,
            "grace": self._grace,
            "now": self._read_clock(),
            "rng": self._rng,
            "cursor": self._cursor,
            "counters": [self._allocations, self._releases, self._reclaimed,
                         self._failures, self._high_water],
            "states": _snapshot.arrays(ids, state[ids], "u1"),
            "refcounts": _snapshot.arrays(multi, refcount[multi], "<u4"),
            "generations": _snapshot.arrays(generated, generation[generated], "<u4"),
            "holds": _snapshot.arrays(held, hold[held], "<f8"),
            "owners": sorted(self._owner.items()),
            "data": sorted(self._data.items()),
            "bindings": [
                (p, [(device, (<_Binding>entry).count, (<_Binding>entry).data)
                     for device, entry in bindings.items()])
                for p, bindings in sorted(self._bindings.items())
            ],
            "devices": [(device, (<_Device>info).bits, (<_Device>info).drain)
                        for device, info in self._devices.items()],
            "quotas": list(self._quota.items()),
            "fifo": (np.asarray(fifo, dtype="<u4").tobytes()
                     if self._fifo_prev != NULL else None),
        }

    cdef int _load(self, dict snap) except -1:
        """Fill a new, empty allocator from a checked snapshot (``pasid._snapshot.check``)."""
        cdef int64_t p, i
        cdef const int64_t[:] ids
        cdef const uint8_t[:] states
        self._cursor = snap["cursor"]
        (self._allocations, self._releases, self._reclaimed, self._failures,
         self._high_water) = snap["counters"]
        ids, states = snap["states"]
        for i in range(ids.shape[0]):
            p = ids[i]
            self._take_state(p, states[i])
        ref_ids, refcounts = snap["refcounts"]
        for p, count in zip(ref_ids.tolist(), refcounts.tolist()):
            self._meta[p] |= MULTI
            self._refcount[p] = count
        gen_ids, generations = snap["generations"]
        for p, generation in zip(gen_ids.tolist(), generations.tolist()):
            self._generation[p] = generation
        hold_ids, holds = snap["holds"]
        for p, release_at in zip(hold_ids.tolist(), holds.tolist()):
            self._meta[p] |= HAS_HOLD
            self._hold[p] = release_at
            if self._meta[p] & STATE_MASK == QUARANTINED:
                self._queue_push(release_at, p)
        for p, owner in snap["owners"]:
            self._tag_owner(p, owner)
            if self._meta[p] & STATE_MASK != ACTIVE:
                owned = self._owned[owner]
                owned.discard(p)
                if not owned:
                    del self._owned[owner]
        for p, value in snap["data"]:
            self._meta[p] |= HAS_DATA
            self._data[p] = value
        for device, bits, drain in snap["devices"]:
            self._new_device(device, bits, float(drain), None)
        for p, pairs in snap["bindings"]:
            self._meta[p] |= HAS_BINDINGS
            self._bindings[p] = {device: _Binding(count, value, self._devices[device])
                                 for device, count, value in pairs}
            for device, _, _ in pairs:
                (<_Device>self._devices[device]).bound.add(p)
        self._quota = dict(snap["quotas"])
        if self._fifo_prev != NULL:
            self._fifo_head = self._fifo_tail = -1
            for p in snap["fifo"].tolist():
                self._fifo_push(p)
        return 0

    def to_bytes(self):
        """The whole allocator as snapshot bytes: versioned, checksummed, the same on both backends.

        Everything travels but callbacks and a callable clock (its reading
        does). Owners, data and devices must be plain data, else TypeError
        naming the value. O(N).

        >>> a = PasidAllocator(bits=8); p = a.alloc("vm")
        >>> b = PasidAllocator.from_bytes(a.to_bytes()); b.owner(p), b.to_bytes() == a.to_bytes()
        ('vm', True)
        """
        with cython.critical_section(self):
            return _snapshot.dumps(self._export())

    @classmethod
    def from_bytes(cls, data, *, clock=None):
        """An allocator from :meth:`to_bytes` output (of either backend).

        ``clock``: a callable clock; without one, a logical clock at the saved
        time. Corrupt, truncated or unknown bytes: SnapshotError. O(N).
        """
        return _restore(cls, _snapshot.loads(data), clock)

    @classmethod
    def _from_state(cls, state):
        return _restore(cls, _snapshot.check(state), None)

    def __reduce__(self):
        with cython.critical_section(self):
            return (type(self)._from_state, (self._export(),))

    # ------------------------------------------------------------ invariants

    def _check(self):
        """Verify every invariant; raise AssertionError on the first that fails."""
        cdef int64_t p
        with cython.critical_section(self):
            _check_node(self.space.root, self.space.height)
            counts = [0] * 5
            for p in range(self._size):
                s = (self._meta[p] & STATE_MASK)
                counts[s] += 1
                if space_is_free(&self.space, p) != (s == FREE):
                    raise AssertionError(f"PASID {p}: space and state {s} disagree")
                if self._meta[p] & MULTI and (s != ACTIVE or self._refcount[p] < 2):
                    raise AssertionError(f"PASID {p}: refcount {self._refcount[p]} in state {s}")
                if bool((self._meta[p] & FLAG_MASK) & HAS_OWNER) != (p in self._owner):
                    raise AssertionError(f"PASID {p}: owner flag disagrees")
                if bool((self._meta[p] & FLAG_MASK) & HAS_DATA) != (p in self._data):
                    raise AssertionError(f"PASID {p}: data flag disagrees")
                if bool((self._meta[p] & FLAG_MASK) & HAS_BINDINGS) != (p in self._bindings):
                    raise AssertionError(f"PASID {p}: bindings flag disagrees")
                if s == DRAINING and p not in self._bindings:
                    raise AssertionError(f"PASID {p} DRAINING with no device bound")
                if s in (FREE, RESERVED) and (self._meta[p] & FLAG_MASK):
                    raise AssertionError(f"PASID {p}: tags kept in state {s}")
            if counts != [self._counts[i] for i in range(5)]:
                raise AssertionError(f"counts disagree: {counts}")
            queued = sorted(self._queue_pasid[i] for i in range(self._queue_len))
            if queued != [p for p in range(self._size) if (self._meta[p] & STATE_MASK) == QUARANTINED]:
                raise AssertionError("every QUARANTINED PASID needs exactly one queue entry")
            for i in range(self._queue_len):
                if (not ((self._meta[self._queue_pasid[i]] & FLAG_MASK) & HAS_HOLD)
                        or self._queue_time[i] != self._hold[self._queue_pasid[i]]):
                    raise AssertionError("queue time disagrees with release_at")
                if i and (self._queue_time[(i - 1) // 2], self._queue_pasid[(i - 1) // 2]) > (
                        self._queue_time[i], self._queue_pasid[i]):
                    raise AssertionError("release queue is not a heap")
            for p, bindings in self._bindings.items():
                if not bindings or (self._meta[p] & STATE_MASK) not in (ACTIVE, DRAINING):
                    raise AssertionError(f"PASID {p}: bindings in state {(self._meta[p] & STATE_MASK)}")
                for device, entry in bindings.items():
                    if ((<_Binding>entry).count <= 0
                            or (<_Binding>entry).device is not self._devices.get(device)
                            or p not in (<_Binding>entry).device.bound):
                        raise AssertionError(f"PASID {p}: bad binding to {device!r}")
            for device, info in self._devices.items():
                for p in (<_Device>info).bound:
                    if device not in self._bindings.get(p, ()):
                        raise AssertionError(f"device {device!r}: stale PASID {p}")
            use = {}
            owned = {}
            for p, owner in self._owner.items():
                use[owner] = use.get(owner, 0) + 1
                if (self._meta[p] & STATE_MASK) == ACTIVE:
                    owned.setdefault(owner, set()).add(p)
            if use != self._use or owned != self._owned:
                raise AssertionError("owner tables disagree with the PASIDs")
            if self._fifo_prev != NULL:
                order = []
                p = self._fifo_head
                while p >= 0:
                    order.append(p)
                    p = self._fifo_next[p]
                if sorted(order) != [p for p in range(self._size) if (self._meta[p] & STATE_MASK) == FREE]:
                    raise AssertionError("fifo queue != FREE set")


def _restore(cls, dict snap, clock):
    """A new allocator holding a checked snapshot."""
    cdef PasidAllocator a = cls(snap["bits"], reserved=(), strategy=snap["strategy"],
                                grace=snap["grace"], clock=clock, seed=snap["rng"])
    if clock is None:
        a._now = snap["now"]
    a._load(snap)
    return a


def _range_text(allocator, min, max):
    lo = 0 if min is None else min
    hi = (1 << allocator.bits) - 1 if max is None else max
    return f"{lo}..{hi}"


def _parse_reserved(reserved, int64_t size):
    """The ``reserved`` argument as a list of inclusive (lo, hi) pairs, checked."""
    ranges = []
    for item in reserved:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise ValueError(f"a reserved range is a (lo, hi) pair, got {item!r}")
            lo, hi = as_int64(item[0], "PASID"), as_int64(item[1], "PASID")
        else:
            lo = hi = as_int64(item, "PASID")
        for p in (lo, hi):
            if not 0 <= p < size:
                raise InvalidPasid(f"reserved PASID {p} out of range 0..{size - 1}")
        if lo > hi:
            raise InvalidPasid(f"empty reserved range {lo}..{hi}")
        ranges.append((lo, hi))
    return ranges
