# PasidAllocator: the phases of every operation and the public methods, over
# the ID space (_idspace.pxi), the strategies, and the lifecycle's components:
# the release queue (_release.pxi), owners (_owners.pxi), bindings and devices
# (_bindings.pxi), batches (_batch.pxi), snapshots (_export.pxi), the
# invariant check (_check.pxi). The design (the three phases, threads, the
# layout) is in _core.pyx. Docstrings: the pure twin's (pasid/pure/allocator.py),
# taken at import. The twin of pasid/pure/allocator.py.

from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock,
                               PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_get_thread_ident, PyThread_release_lock)
from cpython.list cimport PyList_GET_SIZE
from cpython.ref cimport PyObject
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcpy


cdef extern from *:
    """
    #ifdef Py_GIL_DISABLED
    #define PASID_GIL_BUILD 0
    #else
    #define PASID_GIL_BUILD 1
    #endif
    """
    const bint GIL_BUILD "PASID_GIL_BUILD"

cdef extern from *:
    """
    /* PasidAllocator._after's test: whether a change left something to drop (an
       owner record gone idle, objects in the graveyard). Always inline: in a module
       this large gcc spends its inline budget before the guests' code, and left
       _after a call of 25 instructions there. */
    static inline __attribute__((always_inline)) int
    pasid_untidy(PyObject* gone, PyObject* graveyard) {
        return gone != Py_None || PyList_GET_SIZE(graveyard) != 0;
    }
    """
    bint untidy "pasid_untidy"(PyObject* gone, PyObject* graveyard) noexcept

cdef extern from "Python.h":
    # no exception: these cannot fail
    Py_ssize_t _refcount "Py_REFCNT" (PyObject* o) noexcept
    Py_ssize_t PyDict_GET_SIZE(object d) noexcept
    int PyGC_Enable() noexcept
    int PyGC_Disable() noexcept
    int _list_append "PyList_Append" (object lst, object item) noexcept
    void PyErr_Clear() noexcept


cdef inline int _gc_pause() noexcept:
    """Pause the garbage collector for a phase 2 that makes Python objects: a
    collection would run finalizers and gc callbacks (Python code) mid-change.
    Returns whether it was enabled, for :func:`_gc_resume`."""
    return PyGC_Disable()


cdef inline void _gc_resume(int was_enabled) noexcept:
    if was_enabled:
        PyGC_Enable()

cdef enum:
    FREE = 0
    RESERVED = 1
    ACTIVE = 2
    DRAINING = 3
    QUARANTINED = 4

# What free and alloc touch at a random PASID is its two-byte Slot: the byte of
# state and flags (Slot.meta) and the low byte of its generation (the high bits
# in _generation_high, touched once in 256 allocations). One cache line in a
# 2 MiB table for 20 bits: with the generation in a 4 MiB array of its own, the
# second miss cost as much as the whole IDA operation.
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

if (FREE, RESERVED, ACTIVE, DRAINING, QUARANTINED) != (
        _state.FREE, _state.RESERVED, _state.ACTIVE, _state.DRAINING, _state.QUARANTINED) or (
        RELEASING in _state.State._value2member_map_):
    raise ImportError("pasid._core: state codes differ from pasid._state")
if sizeof(Slot) != 2:   # _export reads the slots as pairs of bytes
    raise ImportError(f"pasid._core: a Slot is {sizeof(Slot)} bytes, not 2")

cdef uint32_t COUNT_MAX = _args.COUNT_MAX   # refcounts and bind counts refuse to wrap
cdef int MAX_BITS = _args.MAX_BITS          # the widest space, and a device's default width


cdef enum:
    RECENT_DEVICES = 8        # device objects remembered by identity (_device_record)
    RELEASE_MIN = 65536       # a batch of fewer IDs keeps the GIL ("Threads" above)

STRATEGIES = _args.STRATEGIES
_STATE_NAMES = _args.STATE_NAMES
_STATES = tuple(State)


cdef int _compare_int32(const void* a, const void* b) noexcept nogil:
    return (<const int32_t*>a)[0] - (<const int32_t*>b)[0]


@cython.final
cdef class PasidAllocator:
    """PasidAllocator(bits=20, *, reserved=[0], strategy='lowest', grace=0, clock=None, seed=None)
--

    (The signature shows ``reserved=[0]``: CPython's text signatures cannot hold
    the true default, the tuple ``(0,)``.)

    PCIe PASIDs with the lifecycle IOMMU drivers need.

    IDs are ``0 .. 2**bits - 1``; ``reserved`` IDs
    or inclusive ``(lo, hi)`` pairs start RESERVED; the strategy (lowest,
    cyclic, fifo, random) picks which FREE ID an allocation gets; ``grace`` is
    the minimum time from release to reuse, on a logical clock (moved by
    :meth:`advance`) or a callable one. Times are kept as floats.

    Costs: alloc, free, get, put, bind, unbind, queries O(log64 N); the
    ``random`` strategy, and ``fifo`` with a ``min``/``max`` narrower than the
    space, O(64 log64 N). Every error leaves the allocator as it was (a refused
    allocation counts in ``failures``). Every operation is atomic with respect
    to other threads and to user code it runs (a clock, an owner's
    ``__hash__``): see the phases in ``pasid/_allocator.pxi``.

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

    def __cinit__(self, *args, **kwargs):
        # the argument rules of both backends: pasid/_args.py (errors name the class)
        arguments = _args.bind_arguments("PasidAllocator", _args.ALLOCATOR_SIGNATURE, args, kwargs)
        cdef int64_t nbits = _args.as_bits(arguments["bits"])
        cdef int strategy_index = _args.as_strategy(arguments["strategy"])
        cdef double grace_time = _args.as_grace(arguments["grace"])
        cdef uint64_t seed_bits
        cdef int64_t size, p, lo, hi
        clock = arguments["clock"]
        _args.check_callable(clock, "clock", "a zero-argument callable")
        seed_bits = _args.as_seed(arguments["seed"])
        size = (<int64_t>1) << nbits
        ranges = _args.parse_reserved(arguments["reserved"], size)

        self._bits = <int>nbits
        self._size = size
        self._strategy = strategy_index
        self._grace = grace_time
        self._clock = clock
        self._now = 0.0
        self._rng = seed_bits
        self._cursor = 0
        if space_init(&self.space, size) < 0:
            raise MemoryError()
        # zeroed, their pages made as they are first touched; the slots and "random"'s
        # tables on huge pages where the kernel gives them (pasid_table_new in _core.pyx)
        cdef int scattered = strategy_index == RANDOM
        self._slots = <Slot*>pasid_table_new(size, sizeof(Slot), 1)
        self._generation_high = <uint32_t*>pasid_table_new(size, sizeof(uint32_t), scattered)
        self._refcount = <uint32_t*>pasid_table_new(size, sizeof(uint32_t), scattered)
        self._hold = <double*>pasid_table_new(size, sizeof(double), scattered)
        if (self._slots == NULL or self._generation_high == NULL or self._refcount == NULL
                or self._hold == NULL or bindings_init(&self._bindings, size, scattered) < 0
                or release_init(&self._queue, size) < 0
                or owned_init(&self._owned, size, scattered) < 0):
            raise MemoryError()
        if self._strategy == FIFO:
            if fifo_init(&self._fifo, size) < 0:
                raise MemoryError()
        self._data = None                # made at the first data given
        self._bind_data = []
        self._owners = {}
        self._exact_keys = True
        self._quota = {}
        self._devices = {}
        self._device_list = []
        self._recent_devices = [None] * (2 * RECENT_DEVICES)
        self._recent_next = 0
        self._gone = None
        self._graveyard = []
        self._callbacks = 0
        self._registry = PyThread_allocate_lock()
        self._registry_thread = 0
        self._batch = self._waiting = 0
        self._runs = NULL
        self._runs_cap = 0
        self._gate = PyThread_allocate_lock()
        if self._gate == NULL or self._registry == NULL:
            raise MemoryError()
        self._counts[0] = size
        for p in range(1, 5):
            self._counts[p] = 0
        self._allocations = self._releases = self._reclaimed = 0
        self._failures = self._high_water = 0

        if self._strategy == FIFO:
            for p in range(size):
                fifo_push(&self._fifo, p)
        for lo, hi in ranges:
            for p in range(lo, hi + 1):
                if (self._slots[p].meta & STATE_MASK) == FREE:
                    self._take_state(p, RESERVED)
        _fork.register(self)

    def __dealloc__(self):
        if self._gate != NULL:
            PyThread_free_lock(self._gate)
        if self._registry != NULL:
            PyThread_free_lock(self._registry)
        free(self._runs)
        space_destroy(&self.space)
        cdef int scattered = self._strategy == RANDOM
        pasid_table_free(self._slots, self._size, sizeof(Slot), 1)
        pasid_table_free(self._generation_high, self._size, sizeof(uint32_t), scattered)
        pasid_table_free(self._refcount, self._size, sizeof(uint32_t), scattered)
        pasid_table_free(self._hold, self._size, sizeof(double), scattered)
        owned_destroy(&self._owned, self._size, scattered)
        release_destroy(&self._queue)
        bindings_destroy(&self._bindings, self._size, scattered)
        fifo_destroy(&self._fifo)

    # ------------------------------------------------------------ phase 1: prepare

    cdef inline int64_t _check_id(self, object value) except -1:
        cdef int64_t p = as_int64(value, "PASID")
        if p < 0 or p >= self._size:
            raise InvalidPasid(out_of_range(value, self._size))
        return p

    cdef inline int _check_c_id(self, int64_t p) except -1:
        """InvalidPasid unless ``p`` is in the space (inline: one test; the raise is a call)."""
        if p < 0 or p >= self._size:
            return self._out_of_range(p)
        return 0

    cdef int _out_of_range(self, int64_t p) except -1:
        """Raise InvalidPasid for ``p`` (kept out of line: the raise is cold)."""
        raise InvalidPasid(out_of_range(p, self._size))

    cdef inline double _reading(self) except? -1.0:
        """A callable clock's reading (read once per operation, before anything is
        checked), or the logical clock's value (inline: no call)."""
        if self._clock is None:
            return self._now
        return self._read_clock()

    cdef double _read_clock(self) except? -1.0:
        return as_time(self._clock(), "clock()")

    cdef int _refuse_reentry(self) except -1:
        """RuntimeError if this thread holds the registry lock: a __hash__/__eq__
        called back to change the owner or device tables while they change."""
        if self._registry_thread == PyThread_get_thread_ident():
            raise RuntimeError(
                REENTRY)
        return 0

    cdef int _enter_registry(self) except -1:
        """Take the registry lock; refuse a change re-entered from the thread holding it.
        Uncontended, one C call; else it waits without the GIL (the thread holding it
        may be running an owner's __hash__/__eq__, which needs the GIL)."""
        self._refuse_reentry()
        if not PyThread_acquire_lock(self._registry, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self._registry, WAIT_LOCK)
        self._registry_thread = PyThread_get_thread_ident()
        return 0

    cdef void _leave_registry(self) noexcept:
        self._registry_thread = 0
        PyThread_release_lock(self._registry)

    cdef inline void _bury(self, object value) noexcept:
        """Keep a user object the change lets go until phase 3 (its finalizer may
        run Python code). Out of memory, it is dropped here after all."""
        if _list_append(self._graveyard, value) < 0:
            PyErr_Clear()

    # fork() (pasid/_fork.py calls these): the gate held across (_batch.pxi)

    def _fork_prepare(self):
        fork_prepare(self)

    def _fork_parent(self):
        fork_parent(self)

    def _fork_child(self):
        fork_child(self)

    cdef inline int _after(self) except -1:
        """Phase 3 of a change: drop the user objects it let go (finalizers run
        here) and the owner records it left idle. Inline: most changes leave
        nothing, and then this is two tests (``untidy``, which a caller gcc does not
        inline this into may test itself before calling :meth:`_tidy`)."""
        if untidy(<PyObject*>self._gone, <PyObject*>self._graveyard):
            self._tidy()
        return 0

    cdef int _tidy(self) except -1:
        """The body of :meth:`_after`, when there is something to drop."""
        cdef list dropped
        if PyList_GET_SIZE(self._graveyard):
            dropped = self._graveyard
            self._graveyard = []
            dropped = None
        if self._gone is not None:
            drop_gone_owners(self)
        return 0

    # ------------------------------------------------------------ phase 2: act (C only)

    cdef inline double _time(self, double reading) noexcept:
        """The operation's time. A callable clock's reading never moves the
        allocator back (two threads may read it in either order)."""
        if self._clock is not None and reading > self._now:
            self._now = reading
        return self._now

    cdef inline int _settle_time(self, double now) except -1:
        """Reclaim what has expired by ``now``: every operation sees the allocator as of now."""
        if release_due(&self._queue, now):
            reclaim(self, now)
        return 0

    cdef int _take_state(self, int64_t p, int state) except -1:
        """A FREE PASID leaves the FREE set (the one step that may fail: memory)."""
        if space_take(&self.space, p) < 0:
            raise MemoryError()
        self._left_free(p, state)
        return 0

    cdef inline uint32_t _generation_of(self, int64_t p) noexcept nogil:
        """How many times ``p`` has been allocated (the slot's low byte, the high bits)."""
        return (self._generation_high[p] << 8) | self._slots[p].generation_low

    cdef inline bint _generation_full(self, int64_t p) noexcept nogil:
        """True when ``p`` has been allocated COUNT_MAX times (the high bits are read
        only when the low byte is 255: once in 256 allocations)."""
        return self._slots[p].generation_low == 255 and self._generation_of(p) == COUNT_MAX

    cdef inline void _generation_inc(self, int64_t p) noexcept nogil:
        if self._slots[p].generation_low == 255:
            self._slots[p].generation_low = 0
            self._generation_high[p] += 1
        else:
            self._slots[p].generation_low += 1

    cdef inline void _generation_dec(self, int64_t p) noexcept nogil:
        if self._slots[p].generation_low == 0:
            self._slots[p].generation_low = 255
            self._generation_high[p] -= 1
        else:
            self._slots[p].generation_low -= 1

    cdef inline void _generation_set(self, int64_t p, uint32_t generation) noexcept:
        self._slots[p].generation_low = generation & 255
        self._generation_high[p] = generation >> 8

    cdef inline void _left_free(self, int64_t p, int state) noexcept:
        """The tables follow a PASID just taken from the space: FREE -> ``state``."""
        if self._fifo.prev != NULL:
            fifo_remove(&self._fifo, p)
        self._counts[FREE] -= 1
        self._counts[state] += 1
        self._slots[p].meta = state                  # a FREE PASID has no flags

    cdef inline void _freed_plain(self, int64_t p) noexcept:
        """The tables of a plain release: an ACTIVE PASID holding one reference, no
        flags and no hold becomes FREE at once. The caller releases its bit."""
        self._releases += 1
        self._reclaimed += 1
        self._slots[p].meta = FREE
        self._counts[ACTIVE] -= 1
        self._counts[FREE] += 1
        if self._fifo.prev != NULL:
            fifo_push(&self._fifo, p)

    cdef int _ref_inc(self, int64_t p) except -1:
        """One more reference to an ACTIVE PASID; OverflowError at the limit, nothing changed."""
        if self._slots[p].meta & MULTI:
            if self._refcount[p] == COUNT_MAX:
                raise OverflowError(reference_limit(p))
            self._refcount[p] += 1
        else:
            self._slots[p].meta |= MULTI
            self._refcount[p] = 2
        return 0

    cdef inline void _ref_dec(self, int64_t p) noexcept nogil:
        """One reference less to an ACTIVE PASID holding two or more."""
        self._refcount[p] -= 1
        if self._refcount[p] == 1:
            self._slots[p].meta &= ~MULTI

    cdef int64_t _choose(self, int64_t lo, int64_t hi) except -2:
        """The FREE ID the strategy gives in [lo, hi], or -1. Moves nothing but the
        generator; MemoryError (nothing changed) when fifo's index cannot be built."""
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
            p = fifo_first(&self._fifo, lo, hi)
            if p == -2:
                raise MemoryError()
            return p
        else:
            below = space_rank(&self.space, lo)
            count = space_rank(&self.space, hi + 1) - below
            if count == 0:
                return -1
            return space_select(&self.space, below + <int64_t>draw_below(&self._rng, <uint64_t>count))
        return p if 0 <= p <= hi else -1

    cdef inline int64_t _alloc_in(self, _Owner owner, object data, int64_t lo,
                                  int64_t hi) except -2:
        """An allocation in a checked range, the owner's record current, quota passed,
        time settled: the PASID, or -1 (failures += 1) when nothing there is FREE.
        Inline for its common case: by "lowest" from 0, the descent that finds the
        ID takes it; anything else is :meth:`_alloc_chosen`."""
        cdef int64_t p
        if self._strategy == LOWEST and lo == 0:
            p = space_take_lowest(&self.space, hi)
            if p >= 0:
                return self._activate(p, owner, data, self._rng)
            if p == -2:
                self._failures += 1
                return -1
        return self._alloc_chosen(owner, data, lo, hi)

    cdef int64_t _alloc_chosen(self, _Owner owner, object data, int64_t lo,
                               int64_t hi) except -2:
        """:meth:`_alloc_in` by :meth:`_choose`, then ``space_take`` (which may need
        a new node)."""
        cdef uint64_t rng = self._rng
        cdef int64_t p = self._choose(lo, hi)
        if p < 0:
            self._failures += 1
            return -1
        if space_take(&self.space, p) < 0:
            self._rng = rng
            raise MemoryError()
        return self._activate(p, owner, data, rng)

    cdef inline int64_t _activate(self, int64_t p, _Owner owner, object data,
                                  uint64_t rng) except -2:
        """The tables follow ``p``, just taken from the space for an allocation:
        ACTIVE with one reference, generation + 1, counted; ``p``. At the generation
        limit: OverflowError, ``p`` back in the space and the generator at ``rng``."""
        if self._generation_full(p):
            space_release(&self.space, p)
            self._rng = rng
            raise OverflowError(generation_limit(p))
        self._left_free(p, ACTIVE)             # refcount 1: no MULTI
        if data is not None:
            self._data[p] = data               # the table exists (phase 1 made it)
            self._slots[p].meta |= HAS_DATA
        self._generation_inc(p)
        if owner is not None:
            owner_tag(self, p, owner)
        self._allocations += 1
        if self._counts[ACTIVE] > self._high_water:
            self._high_water = self._counts[ACTIVE]
        if self._strategy == CYCLIC:
            self._cursor = p + 1
        return p

    cdef int64_t _alloc_checked(self, object owner, object data, int64_t lo, int64_t hi,
                                bint quota_raises, uint32_t* generation) except -2:
        """The three phases of an allocation in ``lo..hi`` (checked): the PASID, or
        -1 when nothing is FREE there (or the owner is at its quota and not
        ``quota_raises``); QuotaExceeded when it is and ``quota_raises``. The new
        generation goes to ``generation`` when not NULL (a handle's)."""
        cdef _Owner record = None
        cdef double reading
        cdef int64_t p = -1
        cdef bint over = False
        if data is not None and self._data is None:
            self._data = [None] * self._size
        reading = self._reading()
        if owner is not None:
            record = owner_record(self, owner)         # pinned: current until unpinned
        try:
            with cython.critical_section(self):
                wait_batch(self)
                self._settle_time(self._time(reading))
                over = over_quota(record, 1)
                if over:
                    self._failures += 1
                else:
                    p = self._alloc_in(record, data, lo, hi)
                    if generation != NULL and p >= 0:
                        generation[0] = self._generation_of(p)
        finally:
            if record is not None:
                owner_unpin(self, record)
        self._after()
        if over and quota_raises:
            raise QuotaExceeded(at_quota(owner, record.quota))
        return p

    cdef str _exhausted(self, str asked):
        """The message of a refused allocation: with how many PASIDs are only waiting
        (DRAINING, QUARANTINED) and the next release time (pasid._args)."""
        with cython.critical_section(self):
            wait_batch(self)
            draining, quarantined = self._counts[DRAINING], self._counts[QUARANTINED]
            next_release = release_next(&self._queue)
        return _args.exhausted_message(asked, draining, quarantined, next_release)

    # ------------------------------------------------------------ allocation

    def alloc(self, owner=None, *, data=None, min=None, max=None):
        cdef int64_t lo, hi, p = -1
        cdef _Owner record
        cdef bint done = False
        if data is None and min is None and max is None and self._clock is None:
            # the common calls: no user code can run, so the phases are one step. An
            # owner is found this way when it is the last named (the same object, or
            # an equal str or int), or a str or int while the owner table has held
            # nothing else (_owners.pxi), and under its quota; else below
            with cython.critical_section(self):
                wait_batch(self)
                if release_due(&self._queue, self._now):
                    reclaim(self, self._now)
                if owner is None:
                    p = self._alloc_in(None, None, 0, self._size - 1)
                    done = True
                else:
                    record = self._last         # never gone (owner_swap)
                    if record is None or not owner_same(record.key, owner):
                        record = None
                        if self._exact_keys and owner_exact(owner):
                            record = owner_find_exact(self, owner)    # (no user code)
                    if record is not None and not over_quota(record, 1):
                        p = self._alloc_in(record, None, 0, self._size - 1)
                        done = True
            if done:
                self._after()
                if p < 0:
                    raise PasidExhausted(self._exhausted(no_free(0, self._size - 1)))
                return p
        lo = 0 if min is None else self._check_id(min)
        hi = self._size - 1 if max is None else self._check_id(max)
        if lo > hi:
            raise InvalidPasid(empty_range(lo, hi))
        p = self._alloc_checked(owner, data, lo, hi, True, NULL)
        if p < 0:
            raise PasidExhausted(self._exhausted(no_free(lo, hi)))
        return p

    def try_alloc(self, owner=None, *, data=None, min=None, max=None):
        cdef int64_t lo = 0 if min is None else self._check_id(min)
        cdef int64_t hi = self._size - 1 if max is None else self._check_id(max)
        cdef int64_t p
        if lo > hi:
            raise InvalidPasid(empty_range(lo, hi))
        p = self._alloc_checked(owner, data, lo, hi, False, NULL)
        return p if p >= 0 else None

    def alloc_exact(self, pasid, owner=None, *, data=None):
        cdef int64_t p = self._check_id(pasid)
        cdef int64_t quota = -1
        cdef int state = self._alloc_exact_in(p, owner, data, &quota)
        if state != FREE:
            raise StateError(not_free(p, _STATE_NAMES[state]))
        if quota >= 0:
            raise QuotaExceeded(at_quota(owner, quota))
        return p

    cdef int _alloc_exact_in(self, int64_t p, object owner, object data,
                             int64_t* refused_quota) except -1:
        """The three phases of alloc_exact (``p`` checked): the state ``p`` was found
        in. FREE: allocated, unless the owner is at its quota, which then goes to
        ``refused_quota`` (left as is otherwise)."""
        cdef _Owner record = None
        cdef double reading
        cdef bint over = False
        cdef int state = FREE
        if data is not None and self._data is None:
            self._data = [None] * self._size
        reading = self._reading()
        if owner is not None:
            record = owner_record(self, owner)         # pinned: current until unpinned
        try:
            with cython.critical_section(self):
                wait_batch(self)
                self._settle_time(self._time(reading))
                state = self._slots[p].meta & STATE_MASK
                if state == FREE and self._generation_full(p):
                    raise OverflowError(
                        generation_limit(p))
                if state == FREE:
                    over = over_quota(record, 1)
                    if over:
                        self._failures += 1
                    else:
                        self._take_state(p, ACTIVE)
                        if data is not None:
                            self._data[p] = data
                            self._slots[p].meta |= HAS_DATA
                        self._generation_inc(p)
                        if record is not None:
                            owner_tag(self, p, record)
                        self._allocations += 1
                        if self._counts[ACTIVE] > self._high_water:
                            self._high_water = self._counts[ACTIVE]
        finally:
            if record is not None:
                owner_unpin(self, record)
        self._after()
        if over:
            refused_quota[0] = record.quota
        return state

    def open(self, owner=None, *, data=None, min=None, max=None):
        cdef int64_t lo = 0 if min is None else self._check_id(min)
        cdef int64_t hi = self._size - 1 if max is None else self._check_id(max)
        cdef int64_t p
        cdef uint32_t generation = 0
        if lo > hi:
            raise InvalidPasid(empty_range(lo, hi))
        p = self._alloc_checked(owner, data, lo, hi, True, &generation)
        if p < 0:
            raise PasidExhausted(self._exhausted(no_free(lo, hi)))
        return PasidHandle(self, p, generation)

    def alloc_many(self, n, owner=None, *, data=None):
        cdef object asked = _args.as_count(n, "n")
        cdef int64_t count = min(asked, self._size + 1)   # more than can be FREE: refused below
        cdef int64_t quota = -1, free_ids = 0
        out = np.empty(count, dtype=np.uint32)
        cdef uint32_t[::1] ids = out
        if alloc_many_in(self, &ids[0] if count else NULL, count, owner, data,
                               &quota, &free_ids) < 0:
            if quota >= 0:
                raise QuotaExceeded(at_quota(owner, quota))
            raise PasidExhausted(self._exhausted(too_few_free(asked, free_ids)))
        return out

    # ------------------------------------------------------------ references

    def get(self, pasid):
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            if (self._slots[p].meta & STATE_MASK) != ACTIVE:
                raise StateError(not_active("get", p, _STATE_NAMES[(self._slots[p].meta & STATE_MASK)]))
            self._ref_inc(p)

    cdef inline bint _put_plain(self, int64_t p) noexcept:
        """The last reference to a PASID with no side table but its owner, no hold,
        no grace period: FREE at once (True), off its owner's list (a VM's guest
        PASID unmapped) and untagged. Anything else is left alone (False)."""
        cdef uint8_t meta = self._slots[p].meta
        if (meta & ~HAS_OWNER) != ACTIVE or self._grace > 0:
            return False
        if meta & HAS_OWNER:
            owned_unlink(self, p)
            owner_untag(self, p)
        self._freed_plain(p)
        space_release(&self.space, p)
        return True

    cdef inline int _put(self, int64_t p) except -1:
        """Drop one reference to PASID ``p`` (in range); returns its state after. The
        common call inline: with no callable clock no user code can run, so a plain
        release (:meth:`_put_plain`) is one step; anything else goes to :meth:`_put_id`."""
        cdef bint plain = False
        if self._clock is None:
            with cython.critical_section(self):
                wait_batch(self)
                self._settle_time(self._now)
                plain = self._put_plain(p)
            if plain:
                self._after()
                return FREE
        return self._put_id(p, -1)

    cdef int _put_id(self, int64_t p, int64_t generation) except -1:
        """Drop one reference to PASID ``p`` (in range); returns its state after.

        ``generation >= 0``: only if ``p`` is ACTIVE in that generation (a
        handle's close); -2 when it is not, nothing done.
        """
        cdef double reading = self._reading()
        cdef double now
        cdef list teardown = None
        cdef int state
        with cython.critical_section(self):
            wait_batch(self)
            now = self._time(reading)
            self._settle_time(now)
            state = self._slots[p].meta & STATE_MASK
            if generation >= 0 and (state != ACTIVE or self._generation_of(p) != generation):
                return -2
            if state != ACTIVE:
                raise StateError(not_active("free", p, _STATE_NAMES[state]))
            if self._put_plain(p):
                pass                            # FREE at once
            elif self._slots[p].meta & MULTI:
                self._ref_dec(p)
            else:
                release(self, p, now)
                teardown = teardown_of(self, p, None)
            state = self._slots[p].meta & STATE_MASK
        self._after()
        if teardown:
            run_teardown(teardown)
        return state

    def put(self, pasid):
        self._put(self._check_id(pasid))

    def free(self, pasid):
        self._put(self._check_id(pasid))

    def _put_if(self, pasid, generation):
        """Put ``pasid`` if it is ACTIVE in ``generation`` (a handle's close); True if it did."""
        return self._put_id(self._check_id(pasid), as_int64(generation, "generation")) != -2

    def _get_if(self, pasid, generation):
        """Get ``pasid`` if it is ACTIVE in ``generation`` (a handle's dup); True if it did."""
        cdef int64_t p = self._check_id(pasid)
        cdef int64_t expected = as_int64(generation, "generation")
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            if (self._slots[p].meta & STATE_MASK) != ACTIVE or self._generation_of(p) != expected:
                return False
            self._ref_inc(p)
        return True

    def free_many(self, ids):
        array = id_array_of(self, ids)               # a private copy, checked
        cdef const uint32_t[::1] pasids = array
        cdef Py_ssize_t n = pasids.shape[0]
        released = np.zeros(n, dtype=np.uint8)   # 1 where successive frees would release
        cdef uint8_t[::1] last = released
        free_many_in(self, &pasids[0] if n else NULL, n, &last[0] if n else NULL)

    # ------------------------------------------------------------ reservation

    cdef tuple _range(self, lo, hi):
        cdef int64_t first = self._check_id(lo)
        cdef int64_t last = first if hi is None else self._check_id(hi)
        if first > last:
            raise InvalidPasid(empty_range(first, last))
        return first, last

    def reserve(self, lo, hi=None):
        cdef int64_t first, last, p, q
        first, last = self._range(lo, hi)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            for p in range(first, last + 1):
                if (self._slots[p].meta & STATE_MASK) != FREE:
                    raise StateError(
                        cannot_reserve(p, _STATE_NAMES[(self._slots[p].meta & STATE_MASK)]))
            for p in range(first, last + 1):
                if space_take(&self.space, p) < 0:
                    for q in range(p - 1, first - 1, -1):
                        space_release(&self.space, q)
                        if self._fifo.prev != NULL:
                            fifo_push_front(&self._fifo, q)
                        self._slots[q].meta = FREE
                        self._counts[RESERVED] -= 1
                        self._counts[FREE] += 1
                    raise MemoryError()
                self._left_free(p, RESERVED)

    def unreserve(self, lo, hi=None):
        cdef int64_t first, last, p
        first, last = self._range(lo, hi)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            for p in range(first, last + 1):
                if (self._slots[p].meta & STATE_MASK) != RESERVED:
                    raise StateError(
                        cannot_unreserve(p, _STATE_NAMES[(self._slots[p].meta & STATE_MASK)]))
            for p in range(first, last + 1):
                make_free(self, p)

    # ------------------------------------------------------------ devices and bindings

    def add_device(self, device, *, bits=_args.UNSET, drain=_args.UNSET,
                   on_teardown=_args.UNSET):
        cdef int64_t width = -1 if bits is _args.UNSET else _args.as_bits(bits, "device bits")
        cdef double drain_time = -1.0 if drain is _args.UNSET else _args.as_drain(drain)
        cdef bint callback_given = on_teardown is not _args.UNSET
        if callback_given:
            _args.check_callable(on_teardown, "on_teardown")
        return device_settings(self, device, width, drain_time, callback_given, on_teardown)

    def remove_device(self, device):
        device_remove(self, device)
        self._after()

    def bind(self, pasid, device, *, data=None):
        cdef int64_t p = self._check_id(pasid)
        cdef _Device info
        cdef double reading
        cdef bint stale = True
        while stale:
            reading = self._reading()
            info = recent_device(self, device)
            if info is None:
                info = device_record(self, device, False)
            if info is None:
                # declare it only for a bind that can succeed
                with cython.critical_section(self):
                    wait_batch(self)
                    self._settle_time(self._time(reading))
                    if (self._slots[p].meta & STATE_MASK) != ACTIVE:
                        raise StateError(not_active("bind", p, _STATE_NAMES[(self._slots[p].meta & STATE_MASK)]))
                info = device_record(self, device, True)
            with cython.critical_section(self):
                wait_batch(self)
                stale = info.gone
                if not stale:
                    self._settle_time(self._time(reading))
                    bind_in(self, p, info, data)

    def unbind(self, pasid, device):
        cdef int64_t p = self._check_id(pasid)
        cdef _Device info = recent_device(self, device)
        cdef double reading
        if info is None:
            info = device_record(self, device, False)
        reading = self._reading()
        cdef double now
        with cython.critical_section(self):
            wait_batch(self)
            if info is None or info.gone:
                raise StateError(not_bound(p, device))
            now = self._time(reading)
            self._settle_time(now)
            unbind_in(self, p, info, now)
        self._after()

    # ------------------------------------------------------------ virtual machines (_guest.pxi)

    def add_vm(self, vm, *, mode="translated", bits=None, quota=None, min=None, max=None,
               devices=()):
        return add_vm(self, vm, mode, bits, quota, min, max, devices)

    def remove_vm(self, vm):
        return remove_vm(self, vm)

    def vm(self, vm):
        return find_vm(self, vm)

    def vms(self):
        return [] if self._vms is None else [(<GuestSpace>v)._name for v in self._vms.vms]

    def import_vm(self, blob, vm, *, mode=None, bits=None, quota=None, min=None, max=None,
                  devices=None):
        return import_vm(self, blob, vm, mode, bits, quota, min, max, devices)

    # ------------------------------------------------------------ owners

    def exit_owner(self, owner):
        return c_exit_owner(self, owner)

    def set_quota(self, owner, n):
        if owner is None:
            raise ValueError(QUOTA_NONE)
        cdef int64_t quota = _args.as_quota(n)      # -1: no quota
        cdef _Owner record
        if quota >= 0:
            record = owner_record(self, owner)         # pinned: current until unpinned
        else:
            # lifting a quota makes no record: an owner without one has no quota
            record = owner_lookup(self, owner)
            if record is None or not owner_pin(self, record):
                return
        try:
            with cython.critical_section(self):
                wait_batch(self)
                record.quota = quota
                # keyed by record (identity): no user code runs
                if quota >= 0:
                    self._quota[record] = quota
                else:
                    self._quota.pop(record, None)
        finally:
            owner_unpin(self, record)                        # idle with no quota: marked gone
        self._after()

    # ------------------------------------------------------------ time

    @property
    def now(self):
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            return self._time(reading)

    def advance(self, to=None, *, by=None):
        cdef double target, reading, step = 0.0
        cdef int64_t reclaimed
        if to is not None and by is not None:
            raise ValueError(ADVANCE_BOTH)
        if to is None and by is None:
            reading = self._reading()
            with cython.critical_section(self):
                wait_batch(self)
                reclaimed = reclaim(self, self._time(reading))
            self._after()
            return reclaimed
        if self._clock is not None:
            raise ValueError(ADVANCE_CALLABLE)
        if to is not None:
            target = as_time(to, "to")
        else:
            step = as_time(by, "by")
        with cython.critical_section(self):
            wait_batch(self)
            if to is None:
                target = self._now + step
                if step < 0:
                    raise ValueError(clock_back(self._now, target))
            check_time(target, "the clock")
            if target < self._now:
                raise ValueError(clock_back(self._now, target))
            self._now = target
            reclaimed = reclaim(self, target)
        self._after()
        return reclaimed

    def next_release_time(self):
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            return release_next(&self._queue)

    # ------------------------------------------------------------ queries

    def state(self, pasid):
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            return _STATES[(self._slots[p].meta & STATE_MASK)]

    def states(self, ids):
        array = id_array_of(self, ids)               # a private copy, checked
        cdef const uint32_t[::1] pasids = array
        cdef Py_ssize_t i, n = pasids.shape[0]
        out = np.empty(n, dtype=np.uint8)
        cdef uint8_t[::1] view = out
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            for i in range(n):
                view[i] = (self._slots[pasids[i]].meta & STATE_MASK)
        return out

    def owner(self, pasid):
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            if self._slots[p].meta & HAS_OWNER:
                return (<_Owner>self._owned.owner_of[p]).key
            return None

    def data(self, pasid):
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            return self._data[p] if self._slots[p].meta & HAS_DATA else None

    def refcount(self, pasid):
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            if (self._slots[p].meta & STATE_MASK) != ACTIVE:
                return 0
            return self._refcount[p] if self._slots[p].meta & MULTI else 1

    def generation(self, pasid):
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            wait_batch(self)               # a running batch is seen whole or not at all
            return self._generation_of(p)

    def devices(self, pasid):
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        cdef int32_t record
        cdef list found = []
        cdef int was_enabled
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            if self._slots[p].meta & HAS_BINDINGS:
                was_enabled = _gc_pause()
                try:
                    record = self._bindings.first[p]
                    while record >= 0:
                        found.append((<_Device>self._device_list[self._bindings.recs[record].device]).key)
                        record = self._bindings.recs[record].next
                finally:
                    _gc_resume(was_enabled)
        return found

    def binding(self, pasid, device):
        cdef int64_t p = self._check_id(pasid)
        cdef _Device info = device_record(self, device, False)
        cdef double reading = self._reading()
        cdef int32_t record = -1
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            if info is not None and not info.gone:
                record = bind_find(self, p, info.handle)
            if record < 0:
                raise StateError(not_bound(p, device))
            return self._bind_data[record]

    def pending(self, device):
        cdef _Device info = device_record(self, device, False)
        cdef double reading = self._reading()
        cdef int32_t record
        cdef list found = []
        cdef int was_enabled
        with cython.critical_section(self):
            wait_batch(self)
            if info is None or info.gone:
                raise StateError(unknown_device(device))
            self._settle_time(self._time(reading))
            was_enabled = _gc_pause()
            try:
                record = info.first
                while record >= 0:
                    if (self._slots[self._bindings.recs[record].pasid].meta & STATE_MASK) == DRAINING:
                        found.append(self._bindings.recs[record].pasid)
                    record = self._bindings.recs[record].dnext
            finally:
                _gc_resume(was_enabled)
        found.sort()
        return found

    def stats(self):
        cdef double reading = self._reading()
        cdef int64_t c[10]
        with cython.critical_section(self):
            wait_batch(self)
            # read into C, then build the dict: no allocation in the section
            self._settle_time(self._time(reading))
            c[0], c[1], c[2] = self._counts[FREE], self._counts[RESERVED], self._counts[ACTIVE]
            c[3], c[4] = self._counts[DRAINING], self._counts[QUARANTINED]
            c[5], c[6], c[7] = self._allocations, self._releases, self._reclaimed
            c[8], c[9] = self._failures, self._high_water
        return {
            "free": c[0], "reserved": c[1], "active": c[2], "draining": c[3],
            "quarantined": c[4], "allocations": c[5], "releases": c[6], "reclaimed": c[7],
            "failures": c[8], "high_water": c[9],
        }

    @property
    def bits(self):
        return self._bits

    @property
    def strategy(self):
        return STRATEGIES[self._strategy]

    @property
    def grace(self):
        return self._grace

    def __len__(self):
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            return self._counts[ACTIVE]

    def __iter__(self):
        cdef list found = []
        cdef int64_t p
        cdef double reading = self._reading()
        with cython.critical_section(self):
            wait_batch(self)
            self._settle_time(self._time(reading))
            for p in range(self._size):
                if (self._slots[p].meta & STATE_MASK) == ACTIVE:
                    found.append(p)
        return iter(found)

    def __contains__(self, pasid):
        cdef int64_t p
        cdef double reading
        try:
            p = as_int64(pasid, "PASID")
        except TypeError:
            return False
        if p < 0 or p >= self._size:
            return False
        try:
            reading = self._reading()
        except Exception:
            reading = self._now
        with cython.critical_section(self):
            wait_batch(self)
            try:
                self._settle_time(self._time(reading))
            except MemoryError:
                pass
            return (self._slots[p].meta & STATE_MASK) == ACTIVE

    def __repr__(self):
        cdef int64_t active, free_ids
        with cython.critical_section(self):
            wait_batch(self)
            active, free_ids = self._counts[ACTIVE], self._counts[FREE]
        return (f"<pasid.PasidAllocator bits={self._bits} strategy={self.strategy!r} "
                f"active={active} free={free_ids}>")

    # ------------------------------------------------------------ snapshots

    def _export(self):
        """The whole state as the dict of ``pasid._snapshot.FIELDS`` (``pasid/_export.pxi``)."""
        return export_state(self)

    def to_bytes(self):
        return _snapshot.dumps(export_state(self))

    @classmethod
    def from_bytes(cls, data, *, clock=None):
        return _restore(cls, _snapshot.loads(data), clock)

    @classmethod
    def _from_state(cls, state):
        return _restore(cls, _snapshot.check(state), None)

    def __reduce__(self):
        return (type(self)._from_state, (export_state(self),))

    # ------------------------------------------------------------ invariants

    def _check(self):
        """Verify every invariant (``pasid/_check.pxi``); AssertionError on the first that fails."""
        check_allocator(self)

