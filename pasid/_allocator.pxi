# PasidAllocator: the lifecycle (references, devices, owners, the release
# queue, snapshots) over the ID space and the strategies.
# The twin of pasid/pure/allocator.py; included by pasid/_core.pyx.
#
# Every operation runs in three phases, so that no Python code of the user's
# (a callable clock, an owner's or a device's __hash__/__eq__, a callback) runs
# between a check and the mutation it guards, whether that code calls back
# into this allocator or lets another thread in:
#
# 1. prepare, outside the critical section: convert the arguments, read a
#    callable clock once, look up the owner's and the device's records (their
#    __hash__/__eq__ may run). The owner and device tables change only under
#    the registry lock, which refuses a change re-entered from the same thread
#    (an __eq__ that calls back to declare a device, say).
# 2. act, in the object's critical section, in C: check that the records are
#    still current (one dropped meanwhile sends the operation back to 1),
#    check the state, then change it. The dictionaries touched here are keyed
#    by C integers (PASIDs, binding records), so no user code runs.
# 3. report: build the result and the teardown callbacks from the new state,
#    drop the owner records the operation left idle, run the callbacks.
#
# On the GIL build the critical section is only the GIL, and the GIL passes to
# another thread wherever Python code runs: so phase 2 runs none. The user
# objects a change lets go (a PASID's data, a binding's data) are kept in a
# graveyard until phase 3, since dropping them may run a finalizer; where
# phase 2 builds Python objects (teardown lists, exit_owner's result, lists
# read by queries, a snapshot's tables) the garbage collector is paused, since
# a collection runs finalizers and gc callbacks. Phase 3 hashes owners and
# devices only to tidy the tables: what it raises is swallowed (the change
# stands), and a record left behind is marked gone, which look-ups skip.
#
# Threads. The C loops of a batch (alloc_many's fill, free_many's two passes
# when no Python object is involved) run without the GIL on the GIL build, so
# that threads working on other allocators, or any other Python code, run
# meanwhile. The batch first marks the allocator busy (``_batch``) and takes its
# gate, a lock, both under the GIL; every critical section begins with
# ``_wait_batch``: a thread that finds the allocator busy lets the GIL go and
# waits on the gate; while one waits, batches keep the GIL (so a thread running
# batch after batch cannot shut it out). So the usual call pays one test of a
# flag it reads under the GIL, and a batch's thread never waits for anything.
# Below RELEASE_MIN IDs (65,536) a batch keeps the GIL: taking it back from a
# thread running Python code takes up to a switch interval (5 ms), and two
# threads handing it back and forth lose more than the loop (two threads each
# running batches of 10,000 IDs went slower than one; of 100,000, 1.2-1.6x;
# of 1,000,000, 1.7x). Per-ID calls (the Python methods and the c_* entry
# points alike) keep it for the same reason. The free-threaded build has no
# GIL to let go: its critical section is the object's own lock already.
#
# Layout. Per PASID, C arrays: one byte of state and flags (what every call
# touches), the refcount beyond 1, the generation, the release time so far, the
# owner's record, the links of the owner's ACTIVE list, the first binding.
# Owners: a record per owner object (use, quota, ACTIVE list), found through
# one dict lookup per call that names an owner, dropped when the owner holds
# nothing and has no quota. Bindings: a pool of C records, linked per PASID in
# bind order and per device; the driver's data in a dict only for pairs that
# have some. Devices: a record per device, named in C by its handle.

from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock,
                               PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_get_thread_ident, PyThread_release_lock)
from cpython.list cimport PyList_GET_SIZE
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcpy

import _thread

cdef extern from *:
    """
    #ifdef Py_GIL_DISABLED
    #define PASID_GIL_BUILD 0
    #else
    #define PASID_GIL_BUILD 1
    #endif
    """
    const bint GIL_BUILD "PASID_GIL_BUILD"

cdef extern from "Python.h":
    # no exception: these cannot fail
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

if sizeof(Slot) != 2:   # _export reads the slots as pairs of bytes
    raise ImportError(f"pasid._core: a Slot is {sizeof(Slot)} bytes, not 2")

cdef uint32_t COUNT_MAX = _args.COUNT_MAX   # refcounts and bind counts refuse to wrap


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
cdef enum:
    RECENT_DEVICES = 8        # device objects remembered by identity (_device_record)
    RELEASE_MIN = 65536       # a batch of fewer IDs keeps the GIL ("Threads" above)

STRATEGIES = _args.STRATEGIES
_STATE_NAMES = _args.STATE_NAMES
_STATES = tuple(State)


@cython.final
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
        # calloc: pages of tables that are never touched are never made
        self._slots = <Slot*>calloc(size, sizeof(Slot))
        self._generation_high = <uint32_t*>calloc(size, sizeof(uint32_t))
        self._refcount = <uint32_t*>calloc(size, sizeof(uint32_t))
        self._hold = <double*>calloc(size, sizeof(double))
        self._owner_of = <void**>calloc(size, sizeof(void*))
        self._owned_prev = <int32_t*>calloc(size, sizeof(int32_t))
        self._owned_next = <int32_t*>calloc(size, sizeof(int32_t))
        self._bind_first = <int32_t*>calloc(size, sizeof(int32_t))
        self._queue_time = <double*>calloc(size, sizeof(double))
        self._queue_pasid = <int32_t*>calloc(size, sizeof(int32_t))
        if (self._slots == NULL or self._generation_high == NULL or self._refcount == NULL
                or self._hold == NULL or self._owner_of == NULL or self._owned_prev == NULL
                or self._owned_next == NULL or self._bind_first == NULL
                or self._queue_time == NULL or self._queue_pasid == NULL):
            raise MemoryError()
        if self._strategy == FIFO:
            if fifo_init(&self._fifo, size) < 0:
                raise MemoryError()
        self._queue_len = 0
        self._binds = NULL
        self._binds_cap = self._binds_used = 0
        self._binds_free = -1
        self._data = None                # made at the first data given
        self._bind_data = []
        self._owners = {}
        self._quota = {}
        self._devices = {}
        self._device_list = []
        self._recent_devices = [None] * (2 * RECENT_DEVICES)
        self._recent_next = 0
        self._gone = None
        self._graveyard = []
        self._callbacks = 0
        self._registry = _thread.allocate_lock()
        self._registry_thread = 0
        self._batch = self._waiting = 0
        self._runs = NULL
        self._runs_cap = 0
        self._gate = PyThread_allocate_lock()
        if self._gate == NULL:
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
        free(self._runs)
        space_destroy(&self.space)
        free(self._slots)
        free(self._generation_high)
        free(self._refcount)
        free(self._hold)
        free(self._owner_of)
        free(self._owned_prev)
        free(self._owned_next)
        free(self._bind_first)
        free(self._queue_time)
        free(self._queue_pasid)
        free(self._binds)
        fifo_destroy(&self._fifo)

    # ------------------------------------------------------------ phase 1: prepare

    cdef inline int64_t _check_id(self, object value) except -1:
        cdef int64_t p = as_int64(value, "PASID")
        if p < 0 or p >= self._size:
            raise InvalidPasid(f"PASID {value} out of range 0..{self._size - 1}")
        return p

    cdef inline int _check_c_id(self, int64_t p) except -1:
        """InvalidPasid unless ``p`` is in the space (inline: one test; the raise is a call)."""
        if p < 0 or p >= self._size:
            return self._out_of_range(p)
        return 0

    cdef int _out_of_range(self, int64_t p) except -1:
        """Raise InvalidPasid for ``p`` (kept out of line: the raise is cold)."""
        raise InvalidPasid(f"PASID {p} out of range 0..{self._size - 1}")

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
                "re-entrant call: an owner's or a device's __hash__/__eq__ called back into "
                "the allocator to change its owners or devices while they were changing")
        return 0

    cdef int _enter_registry(self) except -1:
        """Take the registry lock; refuse a change re-entered from the thread holding it."""
        self._refuse_reentry()
        self._registry.acquire()
        self._registry_thread = PyThread_get_thread_ident()
        return 0

    cdef void _leave_registry(self) noexcept:
        self._registry_thread = 0
        _release_lock(self._registry)

    cdef _Owner _owner_lookup(self, object owner):
        """The current record of ``owner``, or None: it holds no PASID and has no quota.
        Its __hash__/__eq__ may run (phase 1); TypeError if it is unhashable."""
        found = self._owners.get(owner)
        if found is None or (<_Owner>found).gone:
            return None
        return <_Owner>found

    cdef _Owner _owner_record(self, object owner):
        """The current record of ``owner``, made if it has none, pinned (phase 1).

        A pinned record is never marked gone, so it stays current through the
        operation's phase 2, and a record made for it is not "idle" to
        :meth:`_check` while the operation is in flight. Every caller unpins it
        in its phase 3 (:meth:`_unpin`, in a ``finally``)."""
        cdef _Owner record = self._owner_lookup(owner)
        if record is not None and self._pin(record):
            return record
        self._enter_registry()
        try:
            found = self._owners.get(owner)
            if found is not None and self._pin(<_Owner>found):
                return <_Owner>found
            record = _Owner(owner)
            record.pins = 1                  # no other thread sees it before the insert
            self._owners[owner] = record
        finally:
            self._leave_registry()
        return record

    cdef bint _pin(self, _Owner record) noexcept:
        """Pin ``record`` unless it is gone; True if pinned."""
        with cython.critical_section(self):
            if record.gone:
                return False
            record.pins += 1
            return True

    cdef int _unpin(self, _Owner record) except -1:
        """Phase 3: the operation lets go of the record it pinned. Left with nothing,
        no quota and no other pin, the record is marked gone (dropped by
        :meth:`_after`). No batch loop touches owner records: no wait for one."""
        with cython.critical_section(self):
            record.pins -= 1
            if record.pins == 0 and record.use == 0 and record.quota < 0 and not record.gone:
                record.gone = 1
                record.next_gone = self._gone
                self._gone = record
        return 0

    cdef int _drop_gone_owners(self) except -1:
        """Phase 3: drop from the owner table the records operations left idle.

        Skipped while this thread is changing the table further up the stack (a
        __hash__/__eq__ that called back): a later operation drops them.
        """
        cdef _Owner record
        if self._gone is None or self._registry_thread == PyThread_get_thread_ident():
            return 0
        # only the owners' __hash__/__eq__ run here, after the change: what they
        # raise is swallowed; the record stays, marked gone (look-ups skip it)
        self._enter_registry()
        try:
            while True:
                with cython.critical_section(self):
                    self._wait_batch()
                    record = self._gone
                    if record is not None:
                        self._gone = record.next_gone
                        record.next_gone = None
                if record is None:
                    break
                try:
                    if self._owners.get(record.key) is record:
                        del self._owners[record.key]
                except Exception:
                    pass
        finally:
            self._leave_registry()
        return 0

    cdef inline void _bury(self, object value) noexcept:
        """Keep a user object the change lets go until phase 3 (its finalizer may
        run Python code). Out of memory, it is dropped here after all."""
        if _list_append(self._graveyard, value) < 0:
            PyErr_Clear()

    cdef inline void _wait_batch(self) noexcept:
        """The first step of every critical section: wait while another thread runs a
        batch without the GIL (only a thread holding the GIL sets the flag, so a
        thread that finds it clear may go on until it lets the GIL go)."""
        if self._batch:
            self._wait_gate()

    cdef void _wait_gate(self) noexcept:
        """Let the GIL go until the batch running without it is done. Counted in
        ``_waiting``: while a thread waits, batches keep the GIL, so a thread that
        runs batch after batch cannot shut the others out."""
        self._waiting += 1
        while self._batch:
            with nogil:
                PyThread_acquire_lock(self._gate, WAIT_LOCK)
                PyThread_release_lock(self._gate)
        self._waiting -= 1

    cdef bint _batch_begin(self, int64_t n) noexcept:
        """In phase 2 of a batch of ``n`` IDs, just before its C loop: whether to run
        the loop without the GIL (then the allocator is busy until :meth:`_batch_end`).
        No: on the free-threaded build, below RELEASE_MIN IDs, and while another
        thread waits to get in (it gets the GIL at the next switch instead)."""
        if not GIL_BUILD or n < RELEASE_MIN or self._waiting:
            return False
        # free: only a batch holds the gate, and none runs (this thread waited)
        if not PyThread_acquire_lock(self._gate, NOWAIT_LOCK):
            return False
        self._batch = 1
        return True

    cdef void _batch_end(self) noexcept:
        """The GIL is back: the allocator is no longer busy."""
        self._batch = 0
        PyThread_release_lock(self._gate)

    # fork() (pasid/_fork.py): a batch running without the GIL in another thread is
    # the one change that can be under way while the forking thread holds the
    # GIL; the gate is held across the fork, so the child gets the tables whole.

    def _fork_prepare(self):
        """Before a fork: wait for a batch running without the GIL, keep new ones out."""
        self._waiting += 1                  # from now on batches keep the GIL
        with nogil:
            PyThread_acquire_lock(self._gate, WAIT_LOCK)

    def _fork_parent(self):
        """After a fork, in the parent: batches may let the GIL go again."""
        self._waiting -= 1
        PyThread_release_lock(self._gate)

    def _fork_child(self):
        """After a fork, in the child: the only thread left is this one. No other
        thread waits for a batch; a registry lock another thread held is
        replaced, and a device it was declaring (in the handle table, not yet in
        the device table) is dropped."""
        self._waiting = 0
        PyThread_release_lock(self._gate)
        # (a thread may have taken the lock and not yet the GIL back: it is not
        # 'locked()' yet, and still it is held; only this thread's own hold is known)
        if self._registry_thread != PyThread_get_thread_ident():
            self._registry = _thread.allocate_lock()
            self._registry_thread = 0
            declared = {id(found) for found in self._devices.values()}
            for handle, found in enumerate(self._device_list):
                if found is not None and id(found) not in declared:
                    (<_Device>found).gone = 1      # being declared: no binding yet
                    self._device_list[handle] = None

    cdef inline int _after(self) except -1:
        """Phase 3 of a change: drop the user objects it let go (finalizers run
        here) and the owner records it left idle. Inline: most changes leave
        nothing, and then this is two tests."""
        if self._gone is not None or PyList_GET_SIZE(self._graveyard):
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
            self._drop_gone_owners()
        return 0

    cdef inline _Device _recent_device(self, object device):
        """The current record of ``device`` if it is among the devices named lately
        (by identity: no __hash__/__eq__, no dict look-up), else None. Inline: the
        common case of bind and unbind costs no call."""
        cdef _Device info
        cdef Py_ssize_t i
        for i in range(0, 2 * RECENT_DEVICES, 2):
            if self._recent_devices[i] is device:
                info = <_Device>self._recent_devices[i + 1]
                if not info.gone:
                    return info
        return None

    cdef _Device _device_record(self, object device, bint declare):
        """The current record of ``device`` (phase 1); None if it is not declared and
        ``declare`` is false, else declared with the defaults."""
        cdef _Device info = self._recent_device(device)
        if info is not None:
            return info
        found = self._devices.get(device)
        if found is not None and not (<_Device>found).gone:
            self._remember_device(device, <_Device>found)
            return <_Device>found
        if not declare:
            return None
        self._enter_registry()
        try:
            found = self._devices.get(device)
            if found is not None and not (<_Device>found).gone:
                return <_Device>found
            info = _Device(device, len(self._device_list), 20, 0.0, None)
            self._device_list.append(info)
            try:
                self._devices[device] = info       # its __hash__/__eq__ may raise
            except BaseException:
                self._device_list.pop()
                raise
        finally:
            self._leave_registry()
        return info

    cdef void _remember_device(self, object device, _Device info) noexcept:
        """Keep ``device`` (the object named) and its record among the recent ones.
        The entries are a cache: a record gone is skipped, and removing a device
        forgets its entries."""
        cdef Py_ssize_t i = 2 * self._recent_next
        self._recent_devices[i] = device
        self._recent_devices[i + 1] = info
        self._recent_next = (self._recent_next + 1) % RECENT_DEVICES

    # ------------------------------------------------------------ phase 2: act (C only)

    cdef inline double _time(self, double reading) noexcept:
        """The operation's time. A callable clock's reading never moves the
        allocator back (two threads may read it in either order)."""
        if self._clock is not None and reading > self._now:
            self._now = reading
        return self._now

    cdef inline int _settle_time(self, double now) except -1:
        """Reclaim what has expired by ``now``: every operation sees the allocator as of now."""
        if self._queue_len and self._queue_time[0] <= now:
            self._reclaim(now)
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
                raise OverflowError(f"PASID {p} holds {COUNT_MAX} references, the limit")
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

    cdef void _owner_tag(self, int64_t p, _Owner owner) noexcept:
        """A new ACTIVE PASID of ``owner`` (a current record): its use and ACTIVE list."""
        self._slots[p].meta |= HAS_OWNER
        self._owner_of[p] = <void*>owner
        owner.use += 1
        owner.active += 1
        self._owned_prev[p] = -1
        self._owned_next[p] = owner.first
        if owner.first >= 0:
            self._owned_prev[owner.first] = <int32_t>p
        owner.first = <int32_t>p

    cdef void _owned_unlink(self, int64_t p) noexcept:
        """A PASID of an owner left ACTIVE: off the owner's ACTIVE list (its use stays)."""
        cdef _Owner owner = <_Owner>self._owner_of[p]
        cdef int32_t before = self._owned_prev[p], after = self._owned_next[p]
        if before >= 0:
            self._owned_next[before] = after
        else:
            owner.first = after
        if after >= 0:
            self._owned_prev[after] = before
        owner.active -= 1

    cdef void _owner_untag(self, int64_t p) noexcept:
        """A PASID of an owner became FREE; an owner left with nothing, no quota and no
        pin is marked gone, to be dropped from the table in phase 3."""
        cdef _Owner owner = <_Owner>self._owner_of[p]
        self._owner_of[p] = NULL
        owner.use -= 1
        if owner.use == 0 and owner.quota < 0 and owner.pins == 0 and not owner.gone:
            owner.gone = 1
            owner.next_gone = self._gone
            self._gone = owner

    cdef void _make_free(self, int64_t p) noexcept:
        """A PASID whose release is complete becomes FREE; its tags go.

        Deleting its data drops the allocator's reference to it: a finalizer of
        that object must not call back into the allocator (documented).
        """
        cdef uint8_t flags = self._slots[p].meta & FLAG_MASK
        self._counts[self._slots[p].meta & STATE_MASK] -= 1
        self._counts[FREE] += 1
        self._slots[p].meta = FREE                  # no refcount, no flags
        space_release(&self.space, p)
        if self._fifo.prev != NULL:
            fifo_push(&self._fifo, p)
        if flags & HAS_OWNER:
            self._owner_untag(p)
        if flags & HAS_DATA:
            self._bury(self._data[p])
            self._data[p] = None

    cdef int64_t _reclaim(self, double now) except -1:
        """Every QUARANTINED PASID whose release_at <= now becomes FREE, ascending.

        The rare case of several at once sorts them in a buffer made before
        anything changes (MemoryError, nothing changed).
        """
        cdef int64_t n = 0, i
        cdef int32_t* expired
        if not self._queue_len or self._queue_time[0] > now:
            return 0
        if self._queue_len == 1 or self._queue_time[1] > now and (
                self._queue_len == 2 or self._queue_time[2] > now):
            # the common case: exactly one expired
            self._make_free(self._queue_pop())
            self._reclaimed += 1
            return 1
        expired = <int32_t*>malloc(self._queue_len * sizeof(int32_t))
        if expired == NULL:
            raise MemoryError()
        while self._queue_len and self._queue_time[0] <= now:
            expired[n] = <int32_t>self._queue_pop()
            n += 1
        qsort(expired, n, sizeof(int32_t), _compare_int32)
        for i in range(n):
            self._make_free(expired[i])
        free(expired)
        self._reclaimed += n
        return n

    cdef void _settle(self, int64_t p, double now) noexcept:
        """A released PASID with no device bound: QUARANTINED until release_at, or FREE."""
        cdef double release_at = self._hold[p]   # HAS_HOLD: set at release
        if release_at <= now:
            self._make_free(p)
            self._reclaimed += 1
        else:
            self._counts[(self._slots[p].meta & STATE_MASK)] -= 1
            self._counts[QUARANTINED] += 1
            self._slots[p].meta = (self._slots[p].meta & ~STATE_MASK) | QUARANTINED
            self._queue_push(release_at, p)

    cdef void _release(self, int64_t p, double now) noexcept:
        """An ACTIVE PASID is released: DRAINING, QUARANTINED or FREE."""
        cdef uint8_t flags = (self._slots[p].meta & FLAG_MASK)
        cdef double release_at = now + self._grace
        self._releases += 1
        self._slots[p].meta &= ~MULTI
        if flags & HAS_OWNER:
            self._owned_unlink(p)
        if flags & HAS_HOLD and self._hold[p] > release_at:
            release_at = self._hold[p]
        if flags & HAS_BINDINGS:
            self._hold[p] = release_at
            self._slots[p].meta |= HAS_HOLD
            self._counts[ACTIVE] -= 1
            self._counts[DRAINING] += 1
            self._slots[p].meta = (self._slots[p].meta & ~STATE_MASK) | DRAINING
        elif release_at <= now:
            # no hold at all: FREE at once, the release time need not be kept
            self._make_free(p)
            self._reclaimed += 1
        else:
            self._hold[p] = release_at
            self._slots[p].meta |= HAS_HOLD
            self._counts[ACTIVE] -= 1
            self._counts[QUARANTINED] += 1
            self._slots[p].meta = (self._slots[p].meta & ~STATE_MASK) | QUARANTINED
            self._queue_push(release_at, p)

    cdef list _teardown_of(self, int64_t p, list teardown):
        """Phase 3: the ``(on_teardown, p)`` of the devices bound to a PASID just
        released, in bind order, appended to ``teardown`` (made when first needed)."""
        cdef int32_t record
        cdef _Device info
        cdef int was_enabled
        if not (self._slots[p].meta & HAS_BINDINGS) or self._callbacks == 0:
            return teardown
        # the common case first: no bound device has a callback, nothing to build
        record = self._bind_first[p]
        while record >= 0:
            if (<_Device>self._device_list[self._binds[record].device]).on_teardown is not None:
                break
            record = self._binds[record].next
        if record < 0:
            return teardown
        was_enabled = _gc_pause()
        try:
            while record >= 0:
                info = <_Device>self._device_list[self._binds[record].device]
                if info.on_teardown is not None:
                    if teardown is None:
                        teardown = []
                    teardown.append((info.on_teardown, p))
                record = self._binds[record].next
        finally:
            _gc_resume(was_enabled)
        return teardown

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

    cdef inline bint _over_quota(self, _Owner owner, int64_t n) noexcept:
        """True if ``n`` more would pass the owner's quota."""
        return owner is not None and owner.quota >= 0 and owner.use + n > owner.quota

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
            raise OverflowError(f"PASID {p} has been allocated {COUNT_MAX} times, the limit")
        self._left_free(p, ACTIVE)             # refcount 1: no MULTI
        if data is not None:
            self._data[p] = data               # the table exists (phase 1 made it)
            self._slots[p].meta |= HAS_DATA
        self._generation_inc(p)
        if owner is not None:
            self._owner_tag(p, owner)
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
            record = self._owner_record(owner)         # pinned: current until unpinned
        try:
            with cython.critical_section(self):
                self._wait_batch()
                self._settle_time(self._time(reading))
                over = self._over_quota(record, 1)
                if over:
                    self._failures += 1
                else:
                    p = self._alloc_in(record, data, lo, hi)
                    if generation != NULL and p >= 0:
                        generation[0] = self._generation_of(p)
        finally:
            if record is not None:
                self._unpin(record)
        self._after()
        if over and quota_raises:
            raise QuotaExceeded(f"owner {owner!r} is at its quota of {record.quota} PASIDs")
        return p

    cdef str _exhausted(self, str asked):
        """The message of a refused allocation: with how many PASIDs are only waiting
        (DRAINING, QUARANTINED) and the next release time (pasid._args)."""
        with cython.critical_section(self):
            self._wait_batch()
            draining, quarantined = self._counts[DRAINING], self._counts[QUARANTINED]
            next_release = self._queue_time[0] if self._queue_len else None
        return _args.exhausted_message(asked, draining, quarantined, next_release)

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
        cdef int64_t lo, hi, p
        if (owner is None and data is None and min is None and max is None
                and self._clock is None):
            # the common call: no user code can run, so the phases are one step
            with cython.critical_section(self):
                self._wait_batch()
                if self._queue_len and self._queue_time[0] <= self._now:
                    self._reclaim(self._now)
                p = self._alloc_in(None, None, 0, self._size - 1)
            self._after()
            if p < 0:
                raise PasidExhausted(self._exhausted(f"no FREE PASID in 0..{self._size - 1}"))
            return p
        lo = 0 if min is None else self._check_id(min)
        hi = self._size - 1 if max is None else self._check_id(max)
        if lo > hi:
            raise InvalidPasid(f"empty range {lo}..{hi}")
        p = self._alloc_checked(owner, data, lo, hi, True, NULL)
        if p < 0:
            raise PasidExhausted(self._exhausted(f"no FREE PASID in {lo}..{hi}"))
        return p

    def try_alloc(self, owner=None, *, data=None, min=None, max=None):
        """Like :meth:`alloc`, but None where alloc raises PasidExhausted (quota included). O(log64 N).

        >>> a = PasidAllocator(bits=1); a.try_alloc(), a.try_alloc()
        (1, None)
        """
        cdef int64_t lo = 0 if min is None else self._check_id(min)
        cdef int64_t hi = self._size - 1 if max is None else self._check_id(max)
        cdef int64_t p
        if lo > hi:
            raise InvalidPasid(f"empty range {lo}..{hi}")
        p = self._alloc_checked(owner, data, lo, hi, False, NULL)
        return p if p >= 0 else None

    def alloc_exact(self, pasid, owner=None, *, data=None):
        """Allocate exactly ``pasid``. O(log64 N).

        StateError unless it is FREE; the quota applies; the cyclic cursor
        does not move.

        >>> a = PasidAllocator(bits=8); a.alloc_exact(42), a.state(42).name
        (42, 'ACTIVE')
        """
        cdef int64_t p = self._check_id(pasid)
        cdef int64_t quota = -1
        cdef int state = self._alloc_exact_in(p, owner, data, &quota)
        if state != FREE:
            raise StateError(f"PASID {p} is {_STATE_NAMES[state]}, not FREE")
        if quota >= 0:
            raise QuotaExceeded(f"owner {owner!r} is at its quota of {quota} PASIDs")
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
            record = self._owner_record(owner)         # pinned: current until unpinned
        try:
            with cython.critical_section(self):
                self._wait_batch()
                self._settle_time(self._time(reading))
                state = self._slots[p].meta & STATE_MASK
                if state == FREE and self._generation_full(p):
                    raise OverflowError(
                        f"PASID {p} has been allocated {COUNT_MAX} times, the limit")
                if state == FREE:
                    over = self._over_quota(record, 1)
                    if over:
                        self._failures += 1
                    else:
                        self._take_state(p, ACTIVE)
                        if data is not None:
                            self._data[p] = data
                            self._slots[p].meta |= HAS_DATA
                        self._generation_inc(p)
                        if record is not None:
                            self._owner_tag(p, record)
                        self._allocations += 1
                        if self._counts[ACTIVE] > self._high_water:
                            self._high_water = self._counts[ACTIVE]
        finally:
            if record is not None:
                self._unpin(record)
        self._after()
        if over:
            refused_quota[0] = record.quota
        return state

    def open(self, owner=None, *, data=None, min=None, max=None):
        """Allocate like :meth:`alloc` and wrap the reference in a :class:`~pasid.PasidHandle`.

        >>> a = PasidAllocator(bits=8)
        >>> with a.open() as h:
        ...     h.pasid, h.valid
        (1, True)
        """
        cdef int64_t lo = 0 if min is None else self._check_id(min)
        cdef int64_t hi = self._size - 1 if max is None else self._check_id(max)
        cdef int64_t p
        cdef uint32_t generation = 0
        if lo > hi:
            raise InvalidPasid(f"empty range {lo}..{hi}")
        p = self._alloc_checked(owner, data, lo, hi, True, &generation)
        if p < 0:
            raise PasidExhausted(self._exhausted(f"no FREE PASID in {lo}..{hi}"))
        return PasidHandle(self, p, generation)

    def alloc_many(self, n, owner=None, *, data=None):
        """``n`` PASIDs as a uint32 array: the same IDs as ``n`` calls of :meth:`alloc`.

        All or nothing: PasidExhausted if fewer than ``n`` are FREE,
        QuotaExceeded past the quota; ``n < 0``: ValueError. The loop runs in C:
        O(n + log64 N) for ``lowest``.

        >>> PasidAllocator(bits=8).alloc_many(4)
        array([1, 2, 3, 4], dtype=uint32)
        """
        cdef object asked = _args.as_count(n, "n")
        cdef int64_t count = min(asked, self._size + 1)   # more than can be FREE: refused below
        cdef int64_t quota = -1, free_ids = 0
        out = np.empty(count, dtype=np.uint32)
        cdef uint32_t[::1] ids = out
        if self._alloc_many_in(&ids[0] if count else NULL, count, owner, data,
                               &quota, &free_ids) < 0:
            if quota >= 0:
                raise QuotaExceeded(f"owner {owner!r} is at its quota of {quota} PASIDs")
            raise PasidExhausted(self._exhausted(f"{asked} PASIDs asked, {free_ids} FREE"))
        return out

    cdef int64_t _alloc_many_in(self, uint32_t* ids, int64_t count, object owner, object data,
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
        if data is not None and self._data is None:
            self._data = [None] * self._size
        reading = self._reading()
        if owner is not None:
            record = self._owner_record(owner)         # pinned: current until unpinned
        try:
            with cython.critical_section(self):
                self._wait_batch()
                self._settle_time(self._time(reading))
                over = self._over_quota(record, count)
                short = count > self._counts[FREE]
                free_ids[0] = self._counts[FREE]
                if over or short:
                    self._failures += 1
                else:
                    rng, cursor = self._rng, self._cursor
                    if self._batch_begin(count):
                        with nogil:
                            filled = self._fill(ids, count)
                        self._batch_end()
                    else:
                        filled = self._fill(ids, count)
                    if filled < 0:
                        self._rng, self._cursor = rng, cursor
                        if filled == -2:
                            raise OverflowError(
                                f"a PASID has been allocated {COUNT_MAX} times, the limit")
                        raise MemoryError()
                    self._allocations += count
                    if self._counts[ACTIVE] > self._high_water:
                        self._high_water = self._counts[ACTIVE]
                    if record is not None:
                        for i in range(count):
                            self._owner_tag(ids[i], record)
                    if data is not None:
                        for i in range(count):
                            self._data[ids[i]] = data
                            self._slots[ids[i]].meta |= HAS_DATA
        finally:
            if record is not None:
                self._unpin(record)
        self._after()
        if short:
            return -1
        if over:
            refused_quota[0] = record.quota
            return -1
        return count

    cdef int64_t _fill(self, uint32_t* out, int64_t n) noexcept nogil:
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
        # a local copy of the table pointer (writes through it may alias self's fields)
        cdef Slot* slots = self._slots
        while done < n:
            if self._strategy == LOWEST:
                # the lowest FREE ID's leaf (4096 IDs): every free ID in it is taken
                # in order, word by word, before the nodes above are updated once
                p = space_find_free(&self.space, 0)
                leaf = space_leaf(&self.space, p, path)
                if leaf == NULL:
                    self._unfill(out, done)
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
                            if self._generation_full(p):
                                status = -2
                                break
                            self._generation_high[p] += 1
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
                space_path_take(&self.space, leaf, path, leaf_base, taken)
                self._counts[FREE] -= taken
                self._counts[ACTIVE] += taken
                if status:
                    self._unfill(out, done)
                    return status
            else:
                p = self._choose_full()
                if self._generation_full(p):
                    self._unfill(out, done)
                    return -2
                if space_take(&self.space, p) < 0:
                    self._unfill(out, done)
                    return -1
                if self._fifo.prev != NULL:
                    fifo_remove(&self._fifo, p)
                self._slots[p].meta = ACTIVE
                self._generation_inc(p)
                self._counts[FREE] -= 1
                self._counts[ACTIVE] += 1
                if self._strategy == CYCLIC:
                    self._cursor = p + 1
                out[done] = <uint32_t>p
                done += 1
        return 0

    cdef int64_t _choose_full(self) noexcept nogil:
        """The FREE ID the strategy gives in the whole space (there is one)."""
        cdef int64_t p
        if self._strategy == FIFO:
            return self._fifo.head
        if self._strategy == CYCLIC:
            p = space_find_free(&self.space, self._cursor)
            if p < self._size:
                return p
            return space_find_free(&self.space, 0)
        if self._strategy == RANDOM:
            return space_select(&self.space, <int64_t>draw_below(
                &self._rng, <uint64_t>space_rank(&self.space, self._size)))
        return space_find_free(&self.space, 0)

    cdef void _unfill(self, uint32_t* out, int64_t done) noexcept nogil:
        """Undo the first ``done`` PASIDs of a failed :meth:`_fill`.

        The fifo queue gets them back at its head in their old order (a full-space
        fill takes from the head); the caller restores the cursor and generator.
        """
        cdef int64_t i, p
        for i in range(done - 1, -1, -1):
            p = out[i]
            space_release(&self.space, p)
            if self._fifo.prev != NULL:
                fifo_push_front(&self._fifo, p)
            self._slots[p].meta = FREE
            self._generation_dec(p)
            self._counts[FREE] += 1
            self._counts[ACTIVE] -= 1

    # ------------------------------------------------------------ references

    def get(self, pasid):
        """Take one more reference to an ACTIVE PASID (StateError otherwise). O(1).

        OverflowError, nothing changed, at 2**32 - 1 references.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.get(p); a.refcount(p)
        2
        """
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            if (self._slots[p].meta & STATE_MASK) != ACTIVE:
                raise StateError(f"get of PASID {p}, which is {_STATE_NAMES[(self._slots[p].meta & STATE_MASK)]}")
            self._ref_inc(p)

    cdef inline bint _put_plain(self, int64_t p) noexcept:
        """The last reference to a PASID with no side table and no hold, no grace
        period: FREE at once (True). Anything else is left alone (False)."""
        if self._slots[p].meta != ACTIVE or self._grace > 0:
            return False
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
                self._wait_batch()
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
            self._wait_batch()
            now = self._time(reading)
            self._settle_time(now)
            state = self._slots[p].meta & STATE_MASK
            if generation >= 0 and (state != ACTIVE or self._generation_of(p) != generation):
                return -2
            if state != ACTIVE:
                raise StateError(f"free of PASID {p}, which is {_STATE_NAMES[state]}")
            if self._put_plain(p):
                pass                            # FREE at once
            elif self._slots[p].meta & MULTI:
                self._ref_dec(p)
            else:
                self._release(p, now)
                teardown = self._teardown_of(p, None)
            state = self._slots[p].meta & STATE_MASK
        self._after()
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
        self._put(self._check_id(pasid))

    def free(self, pasid):
        """The same as :meth:`put`: drop one reference; the last releases. O(log64 N).

        >>> a = PasidAllocator(bits=8); a.free(a.alloc()); len(a)
        0
        """
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
            self._wait_batch()
            self._settle_time(self._time(reading))
            if (self._slots[p].meta & STATE_MASK) != ACTIVE or self._generation_of(p) != expected:
                return False
            self._ref_inc(p)
        return True

    def free_many(self, ids):
        """As successive :meth:`free` calls over ``ids``, all or nothing. O(len(ids) log64 N).

        A duplicate is a double free unless the refcount allows it; PASIDs are
        released in the order successive calls would release them.

        >>> a = PasidAllocator(bits=8); a.free_many(a.alloc_many(3)); len(a)
        0
        """
        array = self._id_array(ids)               # a private copy, checked
        cdef const uint32_t[::1] pasids = array
        cdef Py_ssize_t n = pasids.shape[0]
        released = np.zeros(n, dtype=np.uint8)   # 1 where successive frees would release
        cdef uint8_t[::1] last = released
        self._free_many_in(&pasids[0] if n else NULL, n, &last[0] if n else NULL)

    cdef int _free_many_in(self, const uint32_t* pasids, Py_ssize_t n, uint8_t* last) except -1:
        """The phases of free_many over ``pasids`` (checked, not changed by anyone
        meanwhile); ``last``: ``n`` zeroed bytes of scratch. Both passes run without
        the GIL (``_batch_begin``) when every PASID released becomes FREE at once with
        nothing attached; else the first does, and the second keeps it."""
        cdef Py_ssize_t i, bad, odd = 0
        cdef int64_t p
        cdef uint8_t seen = 0
        cdef double now
        cdef double reading = self._reading()
        cdef list teardown = None
        with cython.critical_section(self):
            self._wait_batch()
            now = self._time(reading)
            self._settle_time(now)
            if self._batch_begin(n):
                with nogil:
                    bad = self._free_passes(pasids, n, last, &odd, &seen)
                self._batch_end()
            else:
                bad = self._free_passes(pasids, n, last, &odd, &seen)
            if bad >= 0:
                name = ("ACTIVE, already freed" if seen == RELEASING else _STATE_NAMES[seen])
                raise StateError(f"free of PASID {pasids[bad]}, which is {name}")
            if odd:
                # pass 2 with the GIL, in the order successive frees would release:
                # runs of plain releases, each other one through _release
                i = self._free_plain(pasids, 0, n, last)
                while i < n:
                    p = pasids[i]
                    self._slots[p].meta ^= RELEASING ^ ACTIVE
                    self._release(p, now)
                    i = self._free_plain(pasids, i + 1, n, last)
                for i in range(n):
                    if last[i]:
                        teardown = self._teardown_of(pasids[i], teardown)
        self._after()
        if teardown:
            run_teardown(teardown)
        return 0

    cdef Py_ssize_t _free_passes(self, const uint32_t* pasids, Py_ssize_t n, uint8_t* last,
                                 Py_ssize_t* odd, uint8_t* seen) noexcept nogil:
        """What free_many does in C: as :meth:`_free_refs` returns, and when it finds
        every PASID released plain, pass 2 as well. The common batch (every PASID
        ACTIVE with one reference and nothing attached, no grace period, not the
        fifo strategy) is first tried in one pass, :meth:`_free_plain_batch`."""
        cdef Py_ssize_t i
        if self._free_plain_batch(pasids, n) == n:
            odd[0] = 0
            return -1
        i = self._free_refs(pasids, n, last, odd, seen)
        if i < 0 and odd[0] == 0:
            self._free_plain(pasids, 0, n, last)
        return i

    cdef Py_ssize_t _free_plain_batch(self, const uint32_t* pasids, Py_ssize_t n) noexcept nogil:
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
        cdef Slot* slots = self._slots          # a local copy, as in _free_refs
        cdef uint64_t* runs
        if self._grace > 0 or self._fifo.prev != NULL:
            return 0
        if self._runs == NULL:
            self._runs_cap = (self._size >> 6) + 1
            self._runs = <uint64_t*>malloc(2 * self._runs_cap * sizeof(uint64_t))
            if self._runs == NULL:
                self._runs_cap = 0
        runs = self._runs
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
                if nruns == self._runs_cap:
                    rest = run_start
                    continue
                runs[2 * nruns] = <uint64_t>(((g.base >> 6) << 7) | g.n)
                runs[2 * nruns + 1] = g.bits
                nruns += 1
            if (p & ~63) != g.base:
                run_start = i
            gather_add(&g, p)
        if rest == n and g.bits:
            if nruns == self._runs_cap:
                rest = run_start
            else:
                runs[2 * nruns] = <uint64_t>(((g.base >> 6) << 7) | g.n)
                runs[2 * nruns + 1] = g.bits
                nruns += 1
        for j in range(nruns):
            space_release_bits(&self.space, <int64_t>(runs[2 * j] >> 7) << 6, runs[2 * j + 1],
                               <int>(runs[2 * j] & 127))
        gather_start(&g)
        for i in range(rest, n):
            space_release_gathered(&self.space, &g, pasids[i])
        space_release_rest(&self.space, &g)
        self._releases += n
        self._reclaimed += n
        self._counts[ACTIVE] -= n
        self._counts[FREE] += n
        return n

    cdef Py_ssize_t _free_refs(self, const uint32_t* pasids, Py_ssize_t n, uint8_t* last,
                               Py_ssize_t* odd, uint8_t* seen) noexcept nogil:
        """Pass 1 of free_many: drop the references; the last one marks the PASID
        RELEASING and sets ``last[i]``. -1, with ``odd`` the number released that
        are not plain (flags or a grace period: :meth:`_free_plain` stops at them);
        or, all undone, the index of the first ID that is not ACTIVE (its state
        in ``seen``: RELEASING for one this call already released)."""
        cdef Py_ssize_t i, j, others = 0
        cdef int64_t p
        # a local copy of the table pointer: writes through it may alias any
        # field of self, so the compiler would reload self._slots every time
        cdef Slot* slots = self._slots
        cdef bint grace = self._grace > 0
        for i in range(n):
            p = pasids[i]
            if (slots[p].meta & STATE_MASK) != ACTIVE:
                seen[0] = slots[p].meta & STATE_MASK
                for j in range(i - 1, -1, -1):
                    if last[j]:
                        slots[pasids[j]].meta ^= RELEASING ^ ACTIVE
                        last[j] = 0
                    elif slots[pasids[j]].meta & MULTI:
                        self._refcount[pasids[j]] += 1
                    else:
                        slots[pasids[j]].meta |= MULTI
                        self._refcount[pasids[j]] = 2
                odd[0] = 0
                return i
            if slots[p].meta & MULTI:
                self._ref_dec(p)
            else:
                slots[p].meta ^= ACTIVE ^ RELEASING
                last[i] = 1
                others += slots[p].meta != RELEASING
        odd[0] = n if grace else others
        return -1

    cdef Py_ssize_t _free_plain(self, const uint32_t* pasids, Py_ssize_t start, Py_ssize_t n,
                                const uint8_t* last) noexcept nogil:
        """Pass 2 of free_many from ``start``: the PASIDs released (``last``) that are
        plain (RELEASING with no flags, no grace period) become FREE, in order (as
        :meth:`_freed_plain`, the counters kept in locals, each word's bits given
        back in one summary update). Stops at the first released one that is not
        plain and returns its index; ``n`` when none is left."""
        cdef Py_ssize_t i
        cdef int64_t p, plain = 0
        cdef Gather g
        cdef Slot* slots = self._slots          # a local copy, as in _free_refs
        cdef bint fifo = self._fifo.prev != NULL
        if self._grace > 0:                     # none is plain: stop at the first released
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
                fifo_push(&self._fifo, p)
            space_release_gathered(&self.space, &g, p)
        else:
            i = n
        space_release_rest(&self.space, &g)
        self._releases += plain
        self._reclaimed += plain
        self._counts[ACTIVE] -= plain
        self._counts[FREE] += plain
        return i

    cdef object _id_array(self, object ids):
        """``ids`` as a new contiguous uint32 array, checked (pasid._args.id_array): a
        private copy, so a caller's array changed meanwhile cannot reach the tables.
        A uint32 array (what alloc_many returns) needs only a copy and its maximum;
        anything else, or an ID out of range, takes the shared rule."""
        if type(ids) is np.ndarray and (<object>ids).dtype == np.uint32 and (<object>ids).ndim == 1:
            copy = (<object>ids).copy()         # contiguous, ours
            if copy.shape[0] == 0 or copy.max() < self._size:
                return copy
        return _args.id_array(ids, self._size)

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
        cdef int64_t first, last, p, q
        first, last = self._range(lo, hi)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            for p in range(first, last + 1):
                if (self._slots[p].meta & STATE_MASK) != FREE:
                    raise StateError(
                        f"cannot reserve PASID {p}: it is {_STATE_NAMES[(self._slots[p].meta & STATE_MASK)]}")
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
        """RESERVED IDs ``lo..hi`` (inclusive) become FREE, all or none. O(range log64 N).

        >>> a = PasidAllocator(bits=8); a.unreserve(0); a.alloc()
        0
        """
        cdef int64_t first, last, p
        first, last = self._range(lo, hi)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            for p in range(first, last + 1):
                if (self._slots[p].meta & STATE_MASK) != RESERVED:
                    raise StateError(
                        f"cannot unreserve PASID {p}: it is {_STATE_NAMES[(self._slots[p].meta & STATE_MASK)]}")
            for p in range(first, last + 1):
                self._make_free(p)

    # ------------------------------------------------------------ devices and bindings

    cdef int _binds_reserve(self) except -1:
        """Room for one more binding record, made before anything changes (MemoryError)."""
        cdef int64_t capacity
        cdef BindRec* grown
        cdef int was_enabled
        if self._binds_free >= 0 or self._binds_used < self._binds_cap:
            return 0
        capacity = 64 if self._binds_cap == 0 else 2 * self._binds_cap
        if capacity > 0x7FFFFFFF:
            raise MemoryError("too many bindings")
        grown = <BindRec*>realloc(self._binds, capacity * sizeof(BindRec))
        if grown == NULL:
            raise MemoryError()
        self._binds = grown
        was_enabled = _gc_pause()          # a new list: no collection in phase 2
        try:
            self._bind_data.extend([None] * (capacity - self._binds_cap))
        finally:
            _gc_resume(was_enabled)
        self._binds_cap = capacity
        return 0

    cdef int32_t _bind_find(self, int64_t p, int handle) noexcept:
        """The record binding ``p`` to the device with that handle, or -1."""
        cdef int32_t record
        if not (self._slots[p].meta & HAS_BINDINGS):
            return -1
        record = self._bind_first[p]
        while record >= 0 and self._binds[record].device != handle:
            record = self._binds[record].next
        return record

    cdef void _bind_unlink(self, int32_t record) noexcept:
        """Take a record off its PASID's list and its device's list; free it."""
        cdef BindRec* rec = &self._binds[record]
        cdef int64_t p = rec.pasid
        cdef int32_t at = self._bind_first[p], before = -1
        cdef _Device info = <_Device>self._device_list[rec.device]
        while at != record:
            before = at
            at = self._binds[at].next
        if before >= 0:
            self._binds[before].next = rec.next
        else:
            self._bind_first[p] = rec.next
            if rec.next < 0:
                self._slots[p].meta &= ~HAS_BINDINGS
        if rec.dprev >= 0:
            self._binds[rec.dprev].dnext = rec.dnext
        else:
            info.first = rec.dnext
        if rec.dnext >= 0:
            self._binds[rec.dnext].dprev = rec.dprev
        info.nbound -= 1
        rec.next = self._binds_free
        self._binds_free = record
        if self._bind_data[record] is not None:
            self._bury(self._bind_data[record])
            self._bind_data[record] = None

    cdef int _bind_in(self, int64_t p, _Device info, object data) except -1:
        """The body of bind (critical section held, time settled, ``info`` current)."""
        cdef int32_t record, tail
        cdef BindRec* rec
        if (self._slots[p].meta & STATE_MASK) != ACTIVE:
            raise StateError(f"bind of PASID {p}, which is {_STATE_NAMES[(self._slots[p].meta & STATE_MASK)]}")
        if p >> info.bits:
            raise InvalidPasid(f"PASID {p} is wider than device {info.key!r}'s {info.bits} bits")
        record = self._bind_find(p, info.handle)
        if record >= 0:
            if self._binds[record].count == COUNT_MAX:
                raise OverflowError(f"PASID {p} is bound {COUNT_MAX} times to device "
                                    f"{info.key!r}, the limit")
            self._binds[record].count += 1
            if data is not None:
                if self._bind_data[record] is not None:
                    self._bury(self._bind_data[record])
                self._bind_data[record] = data
            return 0
        self._bind_link(p, info, data, 1)
        return 0

    cdef int32_t _bind_link(self, int64_t p, _Device info, object data, uint32_t count) except -1:
        """A new binding record of ``p`` to ``info`` (none yet), last in ``p``'s bind order;
        MemoryError, nothing changed, when the pool cannot grow."""
        cdef int32_t record, tail
        cdef BindRec* rec
        self._binds_reserve()
        if self._binds_free >= 0:
            record = self._binds_free
            self._binds_free = self._binds[record].next
        else:
            record = <int32_t>self._binds_used
            self._binds_used += 1
        rec = &self._binds[record]
        rec.pasid = <int32_t>p
        rec.device = info.handle
        rec.count = count
        rec.next = -1
        if data is not None:
            self._bind_data[record] = data
        if self._slots[p].meta & HAS_BINDINGS:       # bind order: append
            tail = self._bind_first[p]
            while self._binds[tail].next >= 0:
                tail = self._binds[tail].next
            self._binds[tail].next = record
        else:
            self._bind_first[p] = record
            self._slots[p].meta |= HAS_BINDINGS
        rec.dprev = -1
        rec.dnext = info.first
        if info.first >= 0:
            self._binds[info.first].dprev = record
        info.first = record
        info.nbound += 1
        return record

    cdef int _unbind_in(self, int64_t p, _Device info, double now) except -1:
        """The body of unbind (critical section held, time settled); the state after."""
        cdef int state = self._slots[p].meta & STATE_MASK
        cdef int32_t record = self._bind_find(p, info.handle)
        cdef double hold
        if record < 0:
            raise StateError(f"PASID {p} is not bound to device {info.key!r}")
        if self._binds[record].count > 1:
            self._binds[record].count -= 1
            return state
        hold = now + info.drain
        if not (self._slots[p].meta & HAS_HOLD) or hold > self._hold[p]:
            self._hold[p] = hold
            self._slots[p].meta |= HAS_HOLD
        self._bind_unlink(record)
        if not (self._slots[p].meta & HAS_BINDINGS) and state == DRAINING:
            self._settle(p, now)
        return self._slots[p].meta & STATE_MASK

    def add_device(self, device, *, bits=_args.UNSET, drain=_args.UNSET,
                   on_teardown=_args.UNSET):
        """Declare ``device`` or update its settings; returns its handle. O(devices bound).

        ``bits``: the device's PASID width (1..20, default 20); ``drain``: its
        quarantine time after it unbinds (default 0); ``on_teardown(pasid)``:
        called when a PASID bound to it is released (default none; None
        removes one). A setting left out keeps its value on a declared device.
        Narrowing below a bound PASID: InvalidPasid, nothing changed.
        The handle is a small int naming the device in the C-level API
        (``c_bind``/``c_unbind``), stable until :meth:`remove_device`, never
        reused by this allocator (a snapshot's devices get 0, 1, ... in
        declaration order).

        >>> a = PasidAllocator(bits=8); a.add_device("gpu", drain=5), a.pending("gpu")
        (0, [])
        """
        cdef int64_t width = -1 if bits is _args.UNSET else _args.as_bits(bits, "device bits")
        cdef double drain_time = -1.0 if drain is _args.UNSET else _args.as_drain(drain)
        cdef bint callback_given = on_teardown is not _args.UNSET
        cdef _Device info
        cdef int32_t record
        cdef int64_t widest
        if callback_given:
            _args.check_callable(on_teardown, "on_teardown")
        while True:
            info = self._device_record(device, True)
            with cython.critical_section(self):
                self._wait_batch()
                if not info.gone:
                    widest = -1
                    record = info.first
                    while record >= 0:
                        if self._binds[record].pasid > widest:
                            widest = self._binds[record].pasid
                        record = self._binds[record].dnext
                    if width >= 0 and widest >= 0 and widest >> width:
                        raise InvalidPasid(f"device {device!r} has PASID {widest} bound, "
                                           f"wider than {width} bits")
                    if width >= 0:
                        info.bits = <int>width
                    if drain_time >= 0:
                        info.drain = drain_time
                    if callback_given:
                        self._callbacks += ((on_teardown is not None)
                                            - (info.on_teardown is not None))
                        info.on_teardown = on_teardown
                    return info.handle

    def remove_device(self, device):
        """Hot-unplug: drop all of ``device``'s bindings at once, no drain hold, no callback.

        Unknown device: StateError. O(bindings of the device).

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "nic"); a.free(p)
        >>> a.state(p).name; a.remove_device("nic"); a.state(p).name
        'DRAINING'
        'FREE'
        """
        cdef _Device info = self._device_record(device, False)
        cdef double reading, now
        cdef int32_t* drained = NULL
        cdef int64_t k = 0, i, p
        cdef int32_t record
        # called from a __hash__/__eq__ while this thread changes the tables, its own
        # table update (phase 3) could not run: refused before anything changes
        self._refuse_reentry()
        if info is None:
            raise StateError(f"unknown device {device!r}")
        reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            if info.gone:
                raise StateError(f"unknown device {device!r}")
            now = self._time(reading)
            self._settle_time(now)
            if info.nbound:
                drained = <int32_t*>malloc(info.nbound * sizeof(int32_t))
                if drained == NULL:
                    raise MemoryError()
            while info.first >= 0:
                record = info.first
                p = self._binds[record].pasid
                self._bind_unlink(record)
                if not (self._slots[p].meta & HAS_BINDINGS) and (self._slots[p].meta & STATE_MASK) == DRAINING:
                    drained[k] = <int32_t>p
                    k += 1
            if k:
                qsort(drained, k, sizeof(int32_t), _compare_int32)
            for i in range(k):
                self._settle(drained[i], now)
            free(drained)
            info.gone = 1
            if info.on_teardown is not None:
                self._callbacks -= 1
            self._device_list[info.handle] = None
            for i in range(1, 2 * RECENT_DEVICES, 2):
                if self._recent_devices[i] is info:
                    self._recent_devices[i - 1] = self._recent_devices[i] = None
        # phase 3: the device's __hash__/__eq__ may raise here, after the change; then
        # its record stays in the table, marked gone (look-ups skip it)
        self._enter_registry()
        try:
            if self._devices.get(device) is info:
                del self._devices[device]
        except Exception:
            pass
        finally:
            self._leave_registry()
        self._after()

    def bind(self, pasid, device, *, data=None):
        """Bind an ACTIVE PASID to ``device``, counted per pair. O(devices bound to the PASID).

        ``data`` is the driver's value for this pair (kept from the first bind;
        a later bind with data replaces it). An undeclared device is declared
        with the defaults. StateError unless ACTIVE; InvalidPasid if the PASID
        is wider than the device's bits; OverflowError at 2**32 - 1 binds.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "gpu", data="ctx")
        >>> a.devices(p), a.binding(p, "gpu")
        (['gpu'], 'ctx')
        """
        cdef int64_t p = self._check_id(pasid)
        cdef _Device info
        cdef double reading
        cdef bint stale = True
        while stale:
            reading = self._reading()
            info = self._recent_device(device)
            if info is None:
                info = self._device_record(device, False)
            if info is None:
                # declare it only for a bind that can succeed
                with cython.critical_section(self):
                    self._wait_batch()
                    self._settle_time(self._time(reading))
                    if (self._slots[p].meta & STATE_MASK) != ACTIVE:
                        raise StateError(f"bind of PASID {p}, which is "
                                         f"{_STATE_NAMES[(self._slots[p].meta & STATE_MASK)]}")
                info = self._device_record(device, True)
            with cython.critical_section(self):
                self._wait_batch()
                stale = info.gone
                if not stale:
                    self._settle_time(self._time(reading))
                    self._bind_in(p, info, data)

    def unbind(self, pasid, device):
        """``device`` says it has drained ``pasid`` (ACTIVE or DRAINING). O(devices bound to it).

        The unbind that drops the pair's count to zero holds the PASID until
        now + the device's drain; the last unbind of a DRAINING PASID sends it
        to QUARANTINED or FREE. StateError if not bound.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "gpu"); a.free(p)
        >>> a.unbind(p, "gpu"); a.state(p).name
        'FREE'
        """
        cdef int64_t p = self._check_id(pasid)
        cdef _Device info = self._recent_device(device)
        cdef double reading
        if info is None:
            info = self._device_record(device, False)
        reading = self._reading()
        cdef double now
        with cython.critical_section(self):
            self._wait_batch()
            if info is None or info.gone:
                raise StateError(f"PASID {p} is not bound to device {device!r}")
            now = self._time(reading)
            self._settle_time(now)
            self._unbind_in(p, info, now)
        self._after()

    # ------------------------------------------------------------ owners

    cdef list _exit_in(self, _Owner owner, double now):
        """The body of exit_owner (critical section held, time settled, ``owner``
        current): release its ACTIVE PASIDs in ascending order; returns them.
        The buffer is made before anything changes (MemoryError)."""
        cdef int64_t k = owner.active, i
        cdef int32_t* pasids
        cdef int32_t p
        if k == 0:
            return []
        pasids = <int32_t*>malloc(k * sizeof(int32_t))
        if pasids == NULL:
            raise MemoryError()
        p = owner.first
        for i in range(k):
            pasids[i] = p
            p = self._owned_next[p]
        qsort(pasids, k, sizeof(int32_t), _compare_int32)
        for i in range(k):
            self._release(pasids[i], now)
        released = [pasids[i] for i in range(k)]
        free(pasids)
        return released

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
        cdef int64_t quota = _args.as_quota(n)      # -1: no quota
        cdef _Owner record
        if quota >= 0:
            record = self._owner_record(owner)         # pinned: current until unpinned
        else:
            # lifting a quota makes no record: an owner without one has no quota
            record = self._owner_lookup(owner)
            if record is None or not self._pin(record):
                return
        try:
            with cython.critical_section(self):
                self._wait_batch()
                record.quota = quota
                # keyed by record (identity): no user code runs
                if quota >= 0:
                    self._quota[record] = quota
                else:
                    self._quota.pop(record, None)
        finally:
            self._unpin(record)                        # idle with no quota: marked gone
        self._after()

    # ------------------------------------------------------------ time

    @property
    def now(self):
        """The current time: the logical clock, or the callable clock's reading (a float;
        a clock that goes back is held at its highest reading)."""
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            return self._time(reading)

    def advance(self, to=None, *, by=None):
        """Move the logical clock forward and reclaim; returns how many became FREE.

        ``to``: the new time; ``by``: how far to move. With neither, reclaim at
        the current time, on both clock kinds (a simulator's "settle now").
        Both, backwards, either with a callable clock, or a time beyond the
        finite range: ValueError. O(k log N) for k expired.

        >>> a = PasidAllocator(bits=8, grace=3); a.free(a.alloc()); a.advance(to=3)
        1
        """
        cdef double target, reading, step = 0.0
        cdef int64_t reclaimed
        if to is not None and by is not None:
            raise ValueError("advance() takes one of to= and by=, not both")
        if to is None and by is None:
            reading = self._reading()
            with cython.critical_section(self):
                self._wait_batch()
                reclaimed = self._reclaim(self._time(reading))
            self._after()
            return reclaimed
        if self._clock is not None:
            raise ValueError("advance(to=, by=) needs the logical clock; this allocator has a "
                             "callable clock (advance() with no argument settles it)")
        if to is not None:
            target = as_time(to, "to")
        else:
            step = as_time(by, "by")
        with cython.critical_section(self):
            self._wait_batch()
            if to is None:
                target = self._now + step
                if step < 0:
                    raise ValueError(f"the clock cannot go back from {self._now} to {target}")
            check_time(target, "the clock")
            if target < self._now:
                raise ValueError(f"the clock cannot go back from {self._now} to {target}")
            self._now = target
            reclaimed = self._reclaim(target)
        self._after()
        return reclaimed

    def next_release_time(self):
        """The earliest ``release_at`` waiting, or None. O(1).

        >>> PasidAllocator(bits=8).next_release_time() is None
        True
        """
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            return self._queue_time[0] if self._queue_len else None

    # ------------------------------------------------------------ queries

    def state(self, pasid):
        """The :class:`~pasid.State` of ``pasid``. O(1).

        >>> PasidAllocator(bits=8).state(0).name
        'RESERVED'
        """
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            return _STATES[(self._slots[p].meta & STATE_MASK)]

    def states(self, ids):
        """The states of ``ids`` as a uint8 array. O(len(ids)).

        >>> PasidAllocator(bits=8).states([0, 1])
        array([1, 0], dtype=uint8)
        """
        array = self._id_array(ids)               # a private copy, checked
        cdef const uint32_t[::1] pasids = array
        cdef Py_ssize_t i, n = pasids.shape[0]
        out = np.empty(n, dtype=np.uint8)
        cdef uint8_t[::1] view = out
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            for i in range(n):
                view[i] = (self._slots[pasids[i]].meta & STATE_MASK)
        return out

    def owner(self, pasid):
        """The owner tag of ``pasid``, kept until it is FREE (None if owner-less). O(1).

        >>> a = PasidAllocator(bits=8); a.owner(a.alloc("vm1"))
        'vm1'
        """
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            if self._slots[p].meta & HAS_OWNER:
                return (<_Owner>self._owner_of[p]).key
            return None

    def data(self, pasid):
        """The data given at allocation, kept until FREE (None if none). O(1).

        >>> a = PasidAllocator(bits=8); a.data(a.alloc(data="ctx"))
        'ctx'
        """
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            return self._data[p] if self._slots[p].meta & HAS_DATA else None

    def refcount(self, pasid):
        """References held on ``pasid`` (0 unless ACTIVE). O(1).

        >>> a = PasidAllocator(bits=8); a.refcount(a.alloc())
        1
        """
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            if (self._slots[p].meta & STATE_MASK) != ACTIVE:
                return 0
            return self._refcount[p] if self._slots[p].meta & MULTI else 1

    def generation(self, pasid):
        """How many times ``pasid`` has been allocated. O(1).

        >>> a = PasidAllocator(bits=8); a.free(a.alloc()); a.generation(1)
        1
        """
        cdef int64_t p = self._check_id(pasid)
        with cython.critical_section(self):
            self._wait_batch()               # a running batch is seen whole or not at all
            return self._generation_of(p)

    def devices(self, pasid):
        """The devices ``pasid`` is bound to, in bind order. O(devices).

        >>> PasidAllocator(bits=8).devices(1)
        []
        """
        cdef int64_t p = self._check_id(pasid)
        cdef double reading = self._reading()
        cdef int32_t record
        cdef list found = []
        cdef int was_enabled
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            if self._slots[p].meta & HAS_BINDINGS:
                was_enabled = _gc_pause()
                try:
                    record = self._bind_first[p]
                    while record >= 0:
                        found.append((<_Device>self._device_list[self._binds[record].device]).key)
                        record = self._binds[record].next
                finally:
                    _gc_resume(was_enabled)
        return found

    def binding(self, pasid, device):
        """The data given to :meth:`bind` for this (PASID, device) pair; StateError if not bound.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, 7); a.binding(p, 7) is None
        True
        """
        cdef int64_t p = self._check_id(pasid)
        cdef _Device info = self._device_record(device, False)
        cdef double reading = self._reading()
        cdef int32_t record = -1
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            if info is not None and not info.gone:
                record = self._bind_find(p, info.handle)
            if record < 0:
                raise StateError(f"PASID {p} is not bound to device {device!r}")
            return self._bind_data[record]

    def pending(self, device):
        """The DRAINING PASIDs still bound to ``device``, ascending; unknown device: StateError.

        O(bindings of the device).

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "gpu"); a.free(p)
        >>> a.pending("gpu")
        [1]
        """
        cdef _Device info = self._device_record(device, False)
        cdef double reading = self._reading()
        cdef int32_t record
        cdef list found = []
        cdef int was_enabled
        with cython.critical_section(self):
            self._wait_batch()
            if info is None or info.gone:
                raise StateError(f"unknown device {device!r}")
            self._settle_time(self._time(reading))
            was_enabled = _gc_pause()
            try:
                record = info.first
                while record >= 0:
                    if (self._slots[self._binds[record].pasid].meta & STATE_MASK) == DRAINING:
                        found.append(self._binds[record].pasid)
                    record = self._binds[record].dnext
            finally:
                _gc_resume(was_enabled)
        found.sort()
        return found

    def stats(self):
        """Counts per state and the counters since construction, as a dict. O(1).

        >>> s = PasidAllocator(bits=8).stats(); s["free"], s["reserved"]
        (255, 1)
        """
        cdef double reading = self._reading()
        cdef int64_t c[10]
        with cython.critical_section(self):
            self._wait_batch()
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
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            return self._counts[ACTIVE]

    def __iter__(self):
        """The ACTIVE PASIDs, ascending (a list taken at the call). O(N): a pass over the table."""
        cdef list found = []
        cdef int64_t p
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            for p in range(self._size):
                if (self._slots[p].meta & STATE_MASK) == ACTIVE:
                    found.append(p)
        return iter(found)

    def __contains__(self, pasid):
        """True only for an ACTIVE PASID; never raises (a clock that raises: the last time)."""
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
            self._wait_batch()
            try:
                self._settle_time(self._time(reading))
            except MemoryError:
                pass
            return (self._slots[p].meta & STATE_MASK) == ACTIVE

    def __repr__(self):
        cdef int64_t active, free_ids
        with cython.critical_section(self):
            self._wait_batch()
            active, free_ids = self._counts[ACTIVE], self._counts[FREE]
        return (f"<pasid.PasidAllocator bits={self._bits} strategy={self.strategy!r} "
                f"active={active} free={free_ids}>")

    # ------------------------------------------------------------ the C-level API
    #
    # For simulators written in Cython: ``from pasid._core cimport PasidAllocator``.
    # C integers and doubles in and out; each call runs the phases of the Python
    # method of the same name (its checks, counters and atomicity). Misuse
    # raises that method's exception (``except -1``); an allocation that finds
    # nothing FREE (or an owner at its quota) returns -1. Devices are named by
    # the handle add_device returns.

    cdef _Device _device_at(self, int device):
        """The current record of the device with that handle; StateError if none."""
        cdef object info = None
        if 0 <= device < len(self._device_list):
            info = self._device_list[device]
        if info is None:
            raise StateError(f"no device has handle {device}")
        return <_Device>info

    cdef int64_t c_alloc(self, object owner, int64_t lo, int64_t hi) except -2:
        """Allocate by the strategy in ``lo..hi``: the PASID, or -1 when nothing
        there is FREE or ``owner`` is at its quota (a counted failure).
        InvalidPasid for a range outside the space or empty."""
        cdef int64_t p
        if lo < 0 or hi >= self._size or lo > hi:
            raise InvalidPasid(f"range {lo}..{hi} is empty or outside 0..{self._size - 1}")
        if owner is None and self._clock is None:
            # no user code can run (as alloc()'s common call): the phases are one step
            with cython.critical_section(self):
                self._wait_batch()
                if self._queue_len and self._queue_time[0] <= self._now:
                    self._reclaim(self._now)
                p = self._alloc_in(None, None, lo, hi)
            self._after()
            return p
        return self._alloc_checked(owner, None, lo, hi, False, NULL)

    cdef int64_t c_alloc_exact(self, int64_t p, object owner) except -2:
        """Allocate exactly ``p``: ``p``, or -1 when it is not FREE or ``owner`` is at
        its quota (the quota refusal counted, as alloc_exact counts it).
        InvalidPasid outside the space."""
        cdef int64_t quota = -1
        self._check_c_id(p)
        if self._alloc_exact_in(p, owner, None, &quota) != FREE or quota >= 0:
            return -1
        return p

    cdef int64_t c_alloc_many(self, uint32_t* out, int64_t n, object owner) except -2:
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
            raise ValueError(f"n must be >= 0, got {n}")
        if n < RELEASE_MIN:
            return self._alloc_many_in(out, n, owner, None, &quota, &free_ids)
        own = <uint32_t*>malloc(n * sizeof(uint32_t))
        if own == NULL:
            raise MemoryError()
        try:
            got = self._alloc_many_in(own, n, owner, None, &quota, &free_ids)
            if got > 0:
                memcpy(out, own, got * sizeof(uint32_t))
        finally:
            free(own)
        return got

    cdef int c_free_many(self, const uint32_t* ids, int64_t n) except -1:
        """As free_many over ``ids[0:n]``: all or nothing, StateError on a double free,
        InvalidPasid for an ID outside the space (nothing changed); returns 0.

        The IDs are copied into memory the allocator owns and the copy is
        checked and freed: the caller's buffer is read once, so a thread writing
        into it meanwhile (while the batch runs without the GIL, say) changes
        nothing here."""
        cdef int64_t i
        cdef uint32_t* copy
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        # the copy, then n + 1 zeroed bytes of scratch for _free_many_in
        copy = <uint32_t*>calloc(n * sizeof(uint32_t) + n + 1, 1)
        if copy == NULL:
            raise MemoryError()
        try:
            if n:
                memcpy(copy, ids, n * sizeof(uint32_t))
            for i in range(n):
                if copy[i] >= self._size:
                    raise InvalidPasid(f"PASID {copy[i]} out of range 0..{self._size - 1}")
            self._free_many_in(copy, n, <uint8_t*>(copy + n))
        finally:
            free(copy)
        return 0

    cdef int c_get(self, int64_t p) except -1:
        """One more reference to ACTIVE ``p`` (StateError otherwise); returns 0."""
        cdef double reading
        self._check_c_id(p)
        reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            if (self._slots[p].meta & STATE_MASK) != ACTIVE:
                raise StateError(f"get of PASID {p}, which is {_STATE_NAMES[(self._slots[p].meta & STATE_MASK)]}")
            self._ref_inc(p)
        return 0

    cdef int c_put(self, int64_t p) except -1:
        """Drop one reference (the last releases); returns ``p``'s state after:
        ACTIVE while references remain, else DRAINING, QUARANTINED or FREE."""
        self._check_c_id(p)
        return self._put(p)

    cdef int c_bind(self, int64_t p, int device) except -1:
        """Bind ACTIVE ``p`` to the device with that handle (counted per pair); returns 0."""
        cdef double reading
        self._check_c_id(p)
        reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            self._bind_in(p, self._device_at(device), None)
        return 0

    cdef int c_unbind(self, int64_t p, int device) except -1:
        """The device with that handle has drained ``p``; returns ``p``'s state after."""
        cdef double reading, now
        cdef int state
        self._check_c_id(p)
        reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            now = self._time(reading)
            self._settle_time(now)
            state = self._unbind_in(p, self._device_at(device), now)
        self._after()
        return state

    cdef list c_exit_owner(self, object owner):
        """Release every ACTIVE PASID of ``owner``; returns them ascending (a list)."""
        cdef _Owner record
        cdef double reading, now
        cdef list released = None, teardown = None
        cdef int was_enabled
        if owner is None:
            raise ValueError("exit_owner(None): owner-less PASIDs have no owner to exit")
        while released is None:
            record = self._owner_lookup(owner)
            reading = self._reading()
            with cython.critical_section(self):
                self._wait_batch()
                was_enabled = _gc_pause()
                try:
                    now = self._time(reading)
                    self._settle_time(now)
                    if record is None or record.gone:
                        # it holds nothing (or was dropped meanwhile: look again)
                        released = [] if record is None else None
                    else:
                        released = self._exit_in(record, now)
                        for p in released:
                            teardown = self._teardown_of(p, teardown)
                finally:
                    _gc_resume(was_enabled)
        self._after()
        if teardown:
            run_teardown(teardown)
        return released

    cdef int64_t c_advance(self, double to) except -1:
        """Move the logical clock to ``to`` and reclaim; returns how many became FREE."""
        cdef int64_t reclaimed
        if self._clock is not None:
            raise ValueError("advance(to=, by=) needs the logical clock; this allocator has a "
                             "callable clock")
        check_time(to, "to")
        with cython.critical_section(self):
            self._wait_batch()
            if to < self._now:
                raise ValueError(f"the clock cannot go back from {self._now} to {to}")
            self._now = to
            reclaimed = self._reclaim(to)
        self._after()
        return reclaimed

    cdef double c_now(self) except? -1.0:
        """The current time (a callable clock's reading, held at its highest)."""
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            return self._time(reading)

    cdef int c_state(self, int64_t p) except -1:
        """``p``'s state, 0..4 (the values of :class:`~pasid.State`)."""
        cdef double reading
        self._check_c_id(p)
        reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            return self._slots[p].meta & STATE_MASK

    cdef int64_t c_generation(self, int64_t p) except -1:
        """How many times ``p`` has been allocated."""
        self._check_c_id(p)
        with cython.critical_section(self):
            self._wait_batch()
            return self._generation_of(p)

    cdef double c_next_release_time(self) except? -1.0:
        """The earliest ``release_at`` waiting, or NaN when nothing is QUARANTINED."""
        cdef double reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            return self._queue_time[0] if self._queue_len else NAN

    cdef int64_t c_count(self, int state) except -1:
        """How many PASIDs are in ``state`` (0..4) now."""
        cdef double reading
        if state < 0 or state > 4:
            raise ValueError(f"state must be 0..4, got {state}")
        reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            self._settle_time(self._time(reading))
            return self._counts[state]

    # ------------------------------------------------------------ snapshots

    def _export(self):
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
        cdef int64_t size = self._size
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
        slots = np.empty(2 * size, dtype=np.uint8)
        generation = np.empty(size, dtype=np.uint32)
        refcount = np.empty(size, dtype=np.uint32)
        hold = np.empty(size, dtype=np.float64)
        owner_code = np.zeros(size, dtype=np.uint32)
        data_ids = np.empty(size, dtype=np.uint32)
        fifo = np.empty(size if self._fifo.prev != NULL else 0, dtype=np.uint32)
        cdef uint8_t[::1] slots_out = slots
        cdef uint32_t[::1] generation_out = generation
        cdef uint32_t[::1] refcount_out = refcount
        cdef double[::1] hold_out = hold
        cdef uint32_t[::1] owner_code_out = owner_code
        cdef uint32_t[::1] data_ids_out = data_ids
        cdef uint32_t[::1] fifo_out = fifo
        cdef uint32_t[:, ::1] bindings_out
        reading = self._reading()
        with cython.critical_section(self):
            self._wait_batch()
            was_enabled = _gc_pause()
            try:
                now = self._time(reading)
                self._settle_time(now)
                memcpy(&slots_out[0], self._slots, size * sizeof(Slot))
                memcpy(&refcount_out[0], self._refcount, size * sizeof(uint32_t))
                memcpy(&hold_out[0], self._hold, size * sizeof(double))
                for p in range(size):
                    generation_out[p] = (self._generation_high[p] << 8) | self._slots[p].generation_low
                room = self._binds_used
                if room:
                    columns = <uint32_t*>malloc(4 * room * sizeof(uint32_t))
                    short_of_memory = columns == NULL
                for p in range(size):
                    meta = self._slots[p].meta
                    if not (meta & (HAS_OWNER | HAS_DATA | HAS_BINDINGS)):
                        continue
                    if meta & HAS_OWNER:
                        owner = <_Owner>self._owner_of[p]
                        if owner.mark == 0:
                            marked.append(owner)
                            owner_keys.append(owner.key)
                            n_keys += 1
                            owner.mark = n_keys
                        owner_code_out[p] = <uint32_t>owner.mark
                    if meta & HAS_DATA:
                        data_ids_out[n_data] = <uint32_t>p
                        n_data += 1
                        data.append(self._data[p])
                    if meta & HAS_BINDINGS and columns != NULL:
                        record = self._bind_first[p]
                        while record >= 0:
                            columns[n_bound] = <uint32_t>p
                            columns[room + n_bound] = <uint32_t>self._binds[record].device
                            columns[2 * room + n_bound] = self._binds[record].count
                            if self._bind_data[record] is not None:
                                columns[3 * room + n_bind_data] = <uint32_t>n_bound
                                n_bind_data += 1
                                bind_data.append(self._bind_data[record])
                            n_bound += 1
                            record = self._binds[record].next
                for found in self._device_list:
                    if found is not None:
                        info = <_Device>found
                        devices.append((info.key, info.bits, info.drain))
                        handles.append(info.handle)
                for found, quota in self._quota.items():
                    quotas.append(((<_Owner>found).key, quota))
                if self._fifo.prev != NULL:
                    q = self._fifo.head
                    while q >= 0:
                        fifo_out[n_fifo] = <uint32_t>q
                        n_fifo += 1
                        q = self._fifo.next[q]
                scalars = (self._rng, self._cursor,
                           [self._allocations, self._releases, self._reclaimed,
                            self._failures, self._high_water])
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
        return {
            "bits": self._bits,
            "strategy": STRATEGIES[self._strategy],
            "grace": self._grace,
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
            "fifo": _snapshot.column(fifo[:n_fifo]) if self._fifo.prev != NULL else None,
        }

    cdef int _load(self, dict snap) except -1:
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
        self._cursor = snap["cursor"]
        (self._allocations, self._releases, self._reclaimed, self._failures,
         self._high_water) = snap["counters"]
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
            leaf = space_leaf(&self.space, p, path)
            if leaf == NULL:
                raise MemoryError()
            space_take_bits(&self.space, leaf, path, p, bits, <int>taken)
        for i in range(n):
            self._left_free(rows[i], states[i])
        ids, values = snap["refcounts"]
        for i in range(ids.shape[0]):
            p = ids[i]
            self._slots[p].meta |= MULTI
            self._refcount[p] = <uint32_t>values[i]
        ids, values = snap["generations"]
        for i in range(ids.shape[0]):
            self._generation_set(ids[i], <uint32_t>values[i])
        ids, times = snap["holds"]
        for i in range(ids.shape[0]):
            p = ids[i]
            self._slots[p].meta |= HAS_HOLD
            self._hold[p] = times[i]
            if self._slots[p].meta & STATE_MASK == QUARANTINED:
                self._queue_push(times[i], p)
        for owner, quota in snap["quotas"]:
            record = _Owner(owner)
            record.quota = quota
            self._owners[owner] = record
            self._quota[record] = quota
        for owner in snap["owner_keys"]:
            found = self._owners.get(owner)
            if found is None:
                found = self._owners[owner] = _Owner(owner)
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
                self._slots[p].meta |= HAS_OWNER
                self._owner_of[p] = record_of[k]
                use[k] += 1
                if self._slots[p].meta & STATE_MASK == ACTIVE:   # as _owner_tag links it
                    active[k] += 1
                    self._owned_prev[p] = -1
                    self._owned_next[p] = first[k]
                    if first[k] >= 0:
                        self._owned_prev[first[k]] = <int32_t>p
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
            self._data = [None] * self._size
        for i in range(ids.shape[0]):
            p = ids[i]
            self._slots[p].meta |= HAS_DATA
            self._data[p] = objects[i]
        for device, width, drain in snap["devices"]:
            info = _Device(device, len(self._device_list), width, float(drain), None)
            self._device_list.append(info)
            self._devices[device] = info
            infos.append(info)
        ids, devices, values = snap["bindings"]
        bound_data = [None] * ids.shape[0]
        rows, objects = snap["binding_data"]
        for i in range(rows.shape[0]):
            bound_data[rows[i]] = objects[i]
        for i in range(ids.shape[0]):
            self._bind_link(ids[i], <_Device>infos[devices[i]], bound_data[i],
                            <uint32_t>values[i])
        if self._fifo.prev != NULL:
            while self._fifo.head >= 0:
                fifo_remove(&self._fifo, self._fifo.head)
            ids = snap["fifo"]
            for i in range(ids.shape[0]):
                fifo_push(&self._fifo, ids[i])
        return 0

    def to_bytes(self):
        """The whole allocator as snapshot bytes: versioned, checksummed, the same on both backends.

        Everything travels but callbacks and a callable clock (its reading
        does, read once). Owners, data and devices must be plain data, else
        TypeError naming the value. O(N).

        >>> a = PasidAllocator(bits=8); p = a.alloc("vm")
        >>> b = PasidAllocator.from_bytes(a.to_bytes()); b.owner(p), b.to_bytes() == a.to_bytes()
        ('vm', True)
        """
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
        return (type(self)._from_state, (self._export(),))

    # ------------------------------------------------------------ invariants

    def _check(self):
        """Verify every invariant; raise AssertionError on the first that fails."""
        cdef int64_t p, i
        cdef int32_t record, at
        cdef _Owner owner
        cdef _Device info
        with cython.critical_section(self):
            self._wait_batch()
            _check_node(self.space.root, self.space.height)
            _check_hint(&self.space)
            # the tables are read by identity: the check runs no __hash__/__eq__
            # (a dict keeps the key object it was first given: keys are not compared)
            current = {id(found) for found in self._owners.values() if not (<_Owner>found).gone}
            declared = {id(found) for found in self._devices.values()
                        if not (<_Device>found).gone}
            counts = [0] * 5
            use = {}
            active = {}
            for p in range(self._size):
                s = (self._slots[p].meta & STATE_MASK)
                counts[s] += 1
                if space_is_free(&self.space, p) != (s == FREE):
                    raise AssertionError(f"PASID {p}: space and state {s} disagree")
                if self._slots[p].meta & MULTI and (s != ACTIVE or self._refcount[p] < 2):
                    raise AssertionError(f"PASID {p}: refcount {self._refcount[p]} in state {s}")
                if s in (FREE, RESERVED) and (self._slots[p].meta & FLAG_MASK):
                    raise AssertionError(f"PASID {p}: tags kept in state {s}")
                if s == DRAINING and not (self._slots[p].meta & HAS_BINDINGS):
                    raise AssertionError(f"PASID {p} DRAINING with no device bound")
                if bool(self._slots[p].meta & HAS_DATA) != (self._data is not None
                                                      and self._data[p] is not None):
                    raise AssertionError(f"PASID {p}: data flag disagrees")
                if self._slots[p].meta & HAS_OWNER:
                    owner = <_Owner>self._owner_of[p]
                    if owner.gone or id(owner) not in current:
                        raise AssertionError(f"PASID {p}: its owner's record is not current")
                    use[id(owner)] = use.get(id(owner), 0) + 1
                    if s == ACTIVE:
                        (<set>active.setdefault(id(owner), set())).add(p)
                elif self._owner_of[p] != NULL:
                    raise AssertionError(f"PASID {p}: an owner without the flag")
            if counts != [self._counts[i] for i in range(5)]:
                raise AssertionError(f"counts disagree: {counts}")
            for found in self._owners.values():
                owner = <_Owner>found
                if owner.gone:
                    continue
                if owner.use != use.get(id(owner), 0) or owner.quota != self._quota.get(owner, -1):
                    raise AssertionError(f"owner {owner.key!r}: use or quota disagrees")
                if owner.pins < 0:
                    raise AssertionError(f"owner {owner.key!r}: unpinned more than pinned")
                if owner.use == 0 and owner.quota < 0 and owner.pins == 0:
                    # (a pinned one is held by an operation in flight, made in its phase 1)
                    raise AssertionError(f"owner {owner.key!r}: an idle record kept")
                listed = set()
                at = owner.first
                while at >= 0:
                    if at in listed or (self._slots[at].meta & STATE_MASK) != ACTIVE:
                        raise AssertionError(f"owner {owner.key!r}: a bad ACTIVE list")
                    listed.add(at)
                    if self._owned_next[at] >= 0 and self._owned_prev[self._owned_next[at]] != at:
                        raise AssertionError(f"owner {owner.key!r}: back links disagree")
                    at = self._owned_next[at]
                if listed != active.get(id(owner), set()) or owner.active != len(listed):
                    raise AssertionError(f"owner {owner.key!r}: ACTIVE list disagrees")
            for found in self._quota:
                if (<_Owner>found).gone or id(found) not in current:
                    raise AssertionError(f"owner {(<_Owner>found).key!r}: a quota without "
                                         "a current record")
            queued = sorted(self._queue_pasid[i] for i in range(self._queue_len))
            if queued != [p for p in range(self._size) if (self._slots[p].meta & STATE_MASK) == QUARANTINED]:
                raise AssertionError("every QUARANTINED PASID needs exactly one queue entry")
            for i in range(self._queue_len):
                if (not ((self._slots[self._queue_pasid[i]].meta & FLAG_MASK) & HAS_HOLD)
                        or self._queue_time[i] != self._hold[self._queue_pasid[i]]):
                    raise AssertionError("queue time disagrees with release_at")
                if i and (self._queue_time[(i - 1) // 2], self._queue_pasid[(i - 1) // 2]) > (
                        self._queue_time[i], self._queue_pasid[i]):
                    raise AssertionError("release queue is not a heap")
            # bindings: per PASID in bind order, per device both ways, each record once
            seen = set()
            for p in range(self._size):
                if not (self._slots[p].meta & HAS_BINDINGS):
                    continue
                if (self._slots[p].meta & STATE_MASK) not in (ACTIVE, DRAINING):
                    raise AssertionError(f"PASID {p}: bindings in state {self._slots[p].meta & STATE_MASK}")
                record = self._bind_first[p]
                handles = set()
                if record < 0:
                    raise AssertionError(f"PASID {p}: the bindings flag without bindings")
                while record >= 0:
                    if record in seen or self._binds[record].pasid != p or self._binds[record].count == 0:
                        raise AssertionError(f"PASID {p}: a bad binding record {record}")
                    if self._binds[record].device in handles:
                        raise AssertionError(f"PASID {p}: a device bound twice")
                    handles.add(self._binds[record].device)
                    info = self._device_list[self._binds[record].device]
                    if info is None or info.gone or p >> info.bits:
                        raise AssertionError(f"PASID {p}: bound to a removed or narrower device")
                    seen.add(record)
                    record = self._binds[record].next
            bound = 0
            for handle, found in enumerate(self._device_list):
                if found is None:
                    continue
                info = <_Device>found
                if info.gone or info.handle != handle or id(info) not in declared:
                    raise AssertionError(f"device {info.key!r}: its table entries disagree")
                record, i, at = info.first, 0, -1
                while record >= 0:
                    if record not in seen or self._binds[record].device != handle \
                            or self._binds[record].dprev != at:
                        raise AssertionError(f"device {info.key!r}: a bad binding list")
                    i += 1
                    at = record
                    record = self._binds[record].dnext
                if i != info.nbound:
                    raise AssertionError(f"device {info.key!r}: {info.nbound} bindings counted, {i} listed")
                bound += i
            if bound != len(seen):
                raise AssertionError("binding records on no device")
            if self._callbacks != sum(1 for found in self._device_list if found is not None
                                      and (<_Device>found).on_teardown is not None):
                raise AssertionError("the count of devices with a callback disagrees")
            for found in self._devices.values():
                if (<_Device>found).gone:   # left by a __hash__/__eq__ that raised in remove_device
                    continue
                if self._device_list[(<_Device>found).handle] is not found:
                    raise AssertionError(f"device {(<_Device>found).key!r} not in the handle table")
            for record in range(self._binds_used):
                if record not in seen and self._bind_data[record] is not None:
                    raise AssertionError(f"free binding record {record} keeps data")
            if self._fifo.prev != NULL:
                problem = fifo_check(&self._fifo, {p for p in range(self._size)
                                                   if (self._slots[p].meta & STATE_MASK) == FREE})
                if problem is not None:
                    raise AssertionError(problem)


def _restore(cls, dict snap, clock):
    """A new allocator holding a checked snapshot."""
    cdef PasidAllocator a = cls(snap["bits"], reserved=(), strategy=snap["strategy"],
                                grace=snap["grace"], clock=clock, seed=snap["rng"])
    if clock is None:
        a._now = snap["now"]
    a._load(snap)
    return a


cdef void _release_lock(object lock) noexcept:
    lock.release()
