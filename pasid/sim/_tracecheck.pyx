"""Checking a trace and its no-quarantine rewrite a chunk at a time, in C.

The twin of ``pasid/sim/tracecheck.py``'s :class:`PyChecker` and
:class:`PyDetacher` (read the rules and the state there): the same classes,
the same results, with the loop over a chunk and the state in C. The rules'
words live in ``_tracerules.py`` only: this module calls there at the start
of a chunk (the column, header and device checks) and on an error, where it
names a kind and the operation's index and ``_tracerules.error`` words it.

The state, owned by each object and freed with it:

- per handle, a :c:type:`HandleState` in one array grown to ``chunk.handles``
  (references, allocated, the width its allocation was limited to, its links
  in its owner's list of live handles and, for the Detacher, its list of
  bound devices in bind order);
- per owner, the head and tail of its live handles, a doubly-linked list
  through the handles' ``live_next``/``live_prev`` (unlinked in O(1) by the
  last put; an exit walks it);
- per bound (handle, device) pair, an entry with its count in a
  :c:type:`BindTable`: an open-addressing hash table (linear probing,
  deletion by backward shift, no tombstones; the count in the slot). A pair
  leaves when its count reaches 0 (or at its handle's release, in the
  Detacher), and the table shrinks as it empties, so its memory follows the
  pairs bound now. The Detacher also keeps each handle's pairs in bind order,
  a list through a pool of entries (the pool keeps its peak size).

No Python object is made inside the loops; the only exceptions raised there
are MemoryError (a table that cannot grow). An object that raised is done:
further feeds raise RuntimeError. Not for sharing between threads: one thread
feeds an object.
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc, qsort, realloc

cdef extern from "<sys/mman.h>" nogil:
    int madvise(void* addr, size_t length, int advice)
    int MADV_DONTNEED

cdef extern from "<unistd.h>" nogil:
    long sysconf(int name)
    int _SC_PAGESIZE

# The handle states live in pages of their own (mmap), grown in place or moved by the
# kernel (mremap: no copy, the pages given back stay given back); elsewhere than Linux,
# malloc's realloc (a move copies, and the pages given back are given back again).
cdef extern from *:
    """
    #include <stdlib.h>
    #include <sys/mman.h>
    static size_t pasid_pages(size_t size) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        return (size + page - 1) / page * page;
    }
    #if defined(__linux__) && defined(MREMAP_MAYMOVE)
    static void* pasid_regrow(void* old, size_t had, size_t want) {
        void* p;
        if (old == NULL)
            p = mmap(NULL, pasid_pages(want), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        else
            p = mremap(old, pasid_pages(had), pasid_pages(want), MREMAP_MAYMOVE);
        return p == MAP_FAILED ? NULL : p;
    }
    static void pasid_unmap(void* p, size_t had) {
        if (p != NULL) munmap(p, pasid_pages(had));
    }
    #else
    static void* pasid_regrow(void* old, size_t had, size_t want) {
        (void)had;
        return realloc(old, want);
    }
    static void pasid_unmap(void* p, size_t had) { (void)had; free(p); }
    #endif
    """
    void* pasid_regrow(void* old, size_t had, size_t want) nogil
    void pasid_unmap(void* p, size_t had) nogil

import numpy as np

from pasid._args import MAX_TIME as _MAX_TIME
from pasid.sim import _tracerules as rules
from pasid.sim.chunk import Chunk

from pasid.sim._opcodes cimport ACCESS, ADVANCE, ALLOC, BIND, EXIT, GET, PUT, UNBIND

# what went wrong at an operation: _tracerules.py's kinds (checked at import)
cdef enum:
    BAD_TIME = 0
    BACKWARDS = 1
    UNKNOWN_OP = 2
    NO_OWNER = 3
    HANDLE_RANGE = 4
    TWICE = 5
    OWNER_RANGE = 6
    DEVICE_RANGE = 7
    BEFORE_ALLOC = 8
    NO_DEVICE = 9
    RELEASED = 10
    TOO_NARROW = 11
    NOT_BOUND = 12
    NOT_BOUND_ACCESS = 13

rules.check_op_codes("pasid.sim._tracecheck", (ALLOC, GET, PUT, BIND, UNBIND, ACCESS, EXIT,
                                                ADVANCE))
if (BAD_TIME, BACKWARDS, UNKNOWN_OP, NO_OWNER, HANDLE_RANGE, TWICE, OWNER_RANGE, DEVICE_RANGE,
        BEFORE_ALLOC, NO_DEVICE, RELEASED, TOO_NARROW, NOT_BOUND, NOT_BOUND_ACCESS) != (
        rules.BAD_TIME, rules.BACKWARDS, rules.UNKNOWN_OP, rules.NO_OWNER, rules.HANDLE_RANGE,
        rules.TWICE, rules.OWNER_RANGE, rules.DEVICE_RANGE, rules.BEFORE_ALLOC, rules.NO_DEVICE,
        rules.RELEASED, rules.TOO_NARROW, rules.NOT_BOUND, rules.NOT_BOUND_ACCESS):
    raise ImportError("pasid.sim._tracecheck: error kinds differ from pasid.sim._tracerules")

cdef double MAX_TIME = 1e300
if MAX_TIME != _MAX_TIME:
    raise ImportError("pasid.sim._tracecheck: the time limit differs from pasid._args")

# ---------------------------------------------------------------- per handle, per owner

ctypedef struct HandleState:
    int64_t refs
    int32_t live_owner      # the owner whose live list holds the handle, or -1
    int32_t live_next       # the owner's live list (handles), -1 at the ends
    int32_t live_prev
    int32_t bind_head       # the Detacher's: the handle's bound pairs (entries), bind order
    int32_t bind_tail
    int32_t pairs           # the Checker's: the (handle, device) pairs bound now
    uint8_t allocated
    uint8_t limit           # the width its allocation was limited to
    uint8_t detached        # the Detacher's: released, its later unbinds dropped

ctypedef struct OwnerList:
    int32_t head            # the owner's live handles, in allocation order; -1: none
    int32_t tail


cdef int grow_handles(HandleState** states, int64_t* have, object wanted) except -1:
    """``*states`` grown to ``wanted`` handles (never shrunk), the new ones empty."""
    cdef int64_t want = wanted
    cdef int64_t i
    cdef HandleState* grown
    if want > 0x7fffffff:
        raise ValueError(f"a trace of {want} handles: at most 2**31 - 1")
    if want <= have[0]:
        return 0
    if have[0]:             # by half at least: few moves
        want = max(want, min(have[0] + (have[0] >> 1), 0x7fffffff))
    grown = <HandleState*>pasid_regrow(states[0], <size_t>have[0] * sizeof(HandleState),
                                       <size_t>want * sizeof(HandleState))
    if grown == NULL:
        raise MemoryError()
    for i in range(have[0], want):
        grown[i].refs = 0
        grown[i].live_owner = grown[i].live_next = grown[i].live_prev = -1
        grown[i].bind_head = grown[i].bind_tail = -1
        grown[i].pairs = 0
        grown[i].allocated = grown[i].limit = grown[i].detached = 0
    states[0] = grown
    have[0] = want
    return 0


cdef int grow_owners(OwnerList** owners, int64_t* have, object wanted) except -1:
    """``*owners`` grown to ``wanted`` owners (never shrunk), the new ones empty."""
    cdef int64_t want = wanted
    cdef int64_t i
    cdef OwnerList* grown
    if want > 0x7fffffff:
        raise ValueError(f"a trace of {want} owners: at most 2**31 - 1")
    if want <= have[0]:
        return 0
    grown = <OwnerList*>realloc(owners[0], <size_t>want * sizeof(OwnerList))
    if grown == NULL:
        raise MemoryError()
    for i in range(have[0], want):
        grown[i].head = grown[i].tail = -1
    owners[0] = grown
    have[0] = want
    return 0


cdef inline void link_live(HandleState* states, OwnerList* owners, int32_t h,
                           int32_t o) noexcept nogil:
    """Handle ``h`` at the tail of owner ``o``'s live list."""
    cdef int32_t tail = owners[o].tail
    states[h].live_owner = o
    states[h].live_prev = tail
    states[h].live_next = -1
    if tail >= 0:
        states[tail].live_next = h
    else:
        owners[o].head = h
    owners[o].tail = h


cdef inline void unlink_live(HandleState* states, OwnerList* owners, int32_t h) noexcept nogil:
    """Handle ``h`` out of its owner's live list (it is in one). O(1)."""
    cdef int32_t prev = states[h].live_prev
    cdef int32_t next = states[h].live_next
    cdef int32_t o = states[h].live_owner
    if prev >= 0:
        states[prev].live_next = next
    else:
        owners[o].head = next
    if next >= 0:
        states[next].live_prev = prev
    else:
        owners[o].tail = prev
    states[h].live_owner = states[h].live_next = states[h].live_prev = -1


# ---------------------------------------------------------------- the dead, given back

# Memory by live state: most handles die (released, nothing bound: every later
# operation on one is an error, or for the Detacher an unbind it drops) long before
# the trace ends, and a dead handle never lives again. The states are counted dead
# by group of GROUP consecutive handles; once a whole group is dead, the pages of the
# array that lie inside it are given back to the system (madvise MADV_DONTNEED: their
# contents gone, the addresses still ours) and the group is marked so: a handle of a
# group given back is taken by the rule for a dead one, its state never read. What
# the states hold then follows the groups with a live handle in them, not the trace's
# length (a handle that lives on keeps its group's pages, GROUP * 40 bytes).

DEF GROUP_SHIFT = 9         # 512 handles: 5 pages of 40-byte states
DEF GROUP = 1 << GROUP_SHIFT

cdef size_t PAGE = <size_t>sysconf(_SC_PAGESIZE)

ctypedef struct Groups:
    int32_t* dead           # per group: its dead handles
    uint8_t* gone           # per group: 1 once its pages are given back
    int64_t n


cdef int groups_grow(Groups* g, int64_t handles) except -1:
    """Room for the groups of ``handles`` handles, the new ones empty."""
    cdef int64_t want = (handles + GROUP - 1) >> GROUP_SHIFT
    cdef int64_t i
    if want <= g.n:
        return 0
    cdef int32_t* dead = <int32_t*>realloc(g.dead, <size_t>want * sizeof(int32_t))
    if dead == NULL:
        raise MemoryError()
    g.dead = dead
    cdef uint8_t* gone = <uint8_t*>realloc(g.gone, <size_t>want)
    if gone == NULL:
        raise MemoryError()
    g.gone = gone
    for i in range(g.n, want):
        g.dead[i] = 0
        g.gone[i] = 0
    g.n = want
    return 0


cdef inline bint given_back(const Groups* g, int32_t h) noexcept nogil:
    return g.gone[h >> GROUP_SHIFT]


cdef inline void died(Groups* g, HandleState* states, int32_t h) noexcept nogil:
    """Handle ``h`` is dead: counted, and its group's pages given back if it was the last."""
    cdef int64_t k = h >> GROUP_SHIFT
    g.dead[k] += 1
    if g.dead[k] == GROUP:
        g.gone[k] = 1
        give_back(states, k)


cdef void regive(const Groups* g, HandleState* states) noexcept nogil:
    """The pages of every group given back, again: after the states moved (a realloc may
    have copied them into pages of its own)."""
    cdef int64_t k
    for k in range(g.n):
        if g.gone[k]:
            give_back(states, k)


cdef inline void give_back(HandleState* states, int64_t k) noexcept nogil:
    """The pages that lie inside group ``k``'s states, back to the system."""
    cdef uintptr_t first = (<uintptr_t>&states[k << GROUP_SHIFT] + PAGE - 1) & ~(<uintptr_t>PAGE - 1)
    cdef uintptr_t last = <uintptr_t>&states[(k + 1) << GROUP_SHIFT] & ~(<uintptr_t>PAGE - 1)
    if last > first:
        madvise(<void*>first, <size_t>(last - first), MADV_DONTNEED)


cdef void groups_free(Groups* g) noexcept:
    free(g.dead)
    free(g.gone)
    g.dead = NULL
    g.gone = NULL
    g.n = 0


# ---------------------------------------------------------------- bound pairs

ctypedef struct Entry:      # the Detacher's: a pair in its handle's list, in bind order
    int32_t handle
    int32_t device
    int32_t next            # the handle's next pair; a free entry: the free list
    int32_t prev

ctypedef struct Slot:
    uint64_t key            # pair_key(handle, device)
    int64_t count           # binds not yet unbound; 0: an empty slot
    int64_t entry           # the pair's Entry (the Detacher's), or -1

ctypedef struct BindTable:
    Slot* slots
    uint64_t mask           # slots - 1 (a power of two)
    int shift               # 64 - log2(slots): a key's home slot is its hash >> shift
    int64_t size            # pairs bound
    Entry* entries
    int64_t capacity        # entries allocated
    int64_t top             # entries handed out so far (the peak of size)
    int64_t free            # the free list of entries below top; -1: none

cdef enum:
    MIN_SLOTS = 64          # the table's least size


cdef extern from *:
    """
    /* gcc 12 at -O2 deletes a __builtin_prefetch under a condition as dead code;
       an asm statement it keeps */
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    #define PASID_PREFETCH(p) __asm__ volatile("prefetcht0 %0" : : "m"(*(const char*)(p)))
    #elif defined(__GNUC__)
    #define PASID_PREFETCH(p) __builtin_prefetch(p)
    #else
    #define PASID_PREFETCH(p) ((void)0)
    #endif
    """
    void prefetch "PASID_PREFETCH"(const void* p) noexcept nogil

# Operations looked ahead: their handle's state and their pair's slot are
# fetched into the cache while the loop works on this one.
cdef enum:
    AHEAD = 8


cdef inline uint64_t pair_key(int32_t h, int32_t d) noexcept nogil:
    return (<uint64_t><uint32_t>h << 32) | <uint32_t>d


cdef inline uint64_t home(const BindTable* t, uint64_t key) noexcept nogil:
    """Fibonacci hashing of the handle (the top bits of it times 2**64 / phi), the
    device mixed in by another odd constant. (The key times one constant would not
    do: the handle's factor would be the constant's low half, here near 2**32 / 2,
    and consecutive handles would pile into two runs.)"""
    cdef uint64_t handle = key >> 32
    cdef uint64_t device = key & 0xFFFFFFFFULL
    return (handle * 0x9E3779B97F4A7C15ULL + device * 0xC2B2AE3D27D4EB4FULL) >> t.shift


cdef int table_resize(BindTable* t, uint64_t nslots) noexcept nogil:
    """Rehash into ``nslots`` slots (a power of two, more than size); -1 (nothing
    changed, no exception set) if the memory is not there."""
    cdef Slot* slots = <Slot*>malloc(nslots * sizeof(Slot))
    cdef Slot* old = t.slots
    cdef uint64_t oldn = t.mask + 1 if old != NULL else 0
    cdef uint64_t i, k
    cdef int shift = 64
    cdef uint64_t n = nslots
    if slots == NULL:
        return -1
    while n > 1:
        n >>= 1
        shift -= 1
    for i in range(nslots):
        slots[i].count = 0
    t.slots = slots
    t.mask = nslots - 1
    t.shift = shift
    for i in range(oldn):
        if old[i].count:
            k = home(t, old[i].key)
            while slots[k].count:
                k = (k + 1) & t.mask
            slots[k] = old[i]
    free(old)
    return 0


cdef int table_init(BindTable* t) except -1:
    t.slots = NULL
    t.entries = NULL
    t.size = t.capacity = t.top = 0
    t.free = -1
    if table_resize(t, MIN_SLOTS) < 0:
        raise MemoryError()
    return 0


cdef void table_free(BindTable* t) noexcept nogil:
    free(t.slots)
    free(t.entries)
    t.slots = NULL
    t.entries = NULL


cdef inline int64_t table_find(const BindTable* t, uint64_t key) noexcept nogil:
    """The slot holding ``key``, or -1."""
    cdef uint64_t i = home(t, key)
    while t.slots[i].count:
        if t.slots[i].key == key:
            return <int64_t>i
        i = (i + 1) & t.mask
    return -1


cdef int64_t table_insert(BindTable* t, int32_t h, int32_t d, HandleState* states) except -1:
    """The slot of a new pair (``h``, ``d``), not in the table, with count 1. ``states``
    (the Detacher's): an Entry for it at the tail of the handle's list of pairs (NULL:
    none). MemoryError (the table unchanged) if it cannot grow."""
    cdef uint64_t key = pair_key(h, d)
    cdef uint64_t i
    cdef int64_t e = -1
    cdef Entry* grown
    cdef int64_t capacity
    if <uint64_t>(t.size + 1) * 2 > t.mask + 1:
        if table_resize(t, (t.mask + 1) * 2) < 0:
            raise MemoryError()
    if states != NULL:
        if t.free < 0 and t.top == t.capacity:
            capacity = t.capacity * 2 if t.capacity else MIN_SLOTS
            grown = <Entry*>realloc(t.entries, <size_t>capacity * sizeof(Entry))
            if grown == NULL:
                raise MemoryError()
            t.entries = grown
            t.capacity = capacity
        if t.free >= 0:
            e = t.free
            t.free = t.entries[e].next
        else:
            e = t.top
            t.top += 1
        t.entries[e].handle = h
        t.entries[e].device = d
        t.entries[e].next = -1
        t.entries[e].prev = states[h].bind_tail
        if states[h].bind_tail >= 0:
            t.entries[states[h].bind_tail].next = <int32_t>e
        else:
            states[h].bind_head = <int32_t>e
        states[h].bind_tail = <int32_t>e
    i = home(t, key)
    while t.slots[i].count:
        i = (i + 1) & t.mask
    t.slots[i].key = key
    t.slots[i].count = 1
    t.slots[i].entry = e
    t.size += 1
    return <int64_t>i


cdef void table_delete(BindTable* t, int64_t slot, HandleState* states) noexcept nogil:
    """Remove the pair in ``slot``, its Entry (if any) back to the free list; ``states``:
    unlink the Entry from its handle's list first (NULL: the caller drops the whole
    list). Shrinks a table gone sparse."""
    cdef uint64_t i = <uint64_t>slot
    cdef uint64_t j = i
    cdef uint64_t k
    cdef int64_t e = t.slots[i].entry
    cdef Entry* entry
    if e >= 0:
        entry = &t.entries[e]
        if states != NULL:
            if entry.prev >= 0:
                t.entries[entry.prev].next = entry.next
            else:
                states[entry.handle].bind_head = entry.next
            if entry.next >= 0:
                t.entries[entry.next].prev = entry.prev
            else:
                states[entry.handle].bind_tail = entry.prev
        entry.next = <int32_t>t.free
        t.free = e
    # backward shift: move each later slot of the run whose home is not in (i, j] into the hole
    while True:
        j = (j + 1) & t.mask
        if not t.slots[j].count:
            break
        k = home(t, t.slots[j].key)
        if (i <= j and (k <= i or k > j)) or (i > j and k <= i and k > j):
            t.slots[i] = t.slots[j]
            i = j
    t.slots[i].count = 0
    t.size -= 1
    if t.mask + 1 > MIN_SLOTS and <uint64_t>t.size * 8 < t.mask + 1:
        table_resize(t, (t.mask + 1) >> 1)       # no memory: stay as large (harmless)


cdef inline void prefetch_op(const HandleState* states, const BindTable* t,
                             const uint8_t* ops, const int32_t* handles,
                             const int32_t* devices, Py_ssize_t j, Py_ssize_t n,
                             int32_t nhandles, bint access) noexcept nogil:
    """Fetch the handle state and the pair's home slot of operation ``j`` (of an access
    too when ``access``: the Checker looks its pair up)."""
    cdef int32_t h
    cdef uint8_t op
    if j < n:
        h = handles[j]
        if 0 <= h < nhandles:
            prefetch(&states[h])
            op = ops[j]
            if op == BIND or op == UNBIND or (access and op == ACCESS):
                prefetch(&t.slots[home(t, pair_key(h, devices[j]))])


cdef inline void prefetch_release(const HandleState* states, const BindTable* t,
                                  const uint8_t* ops, const int32_t* handles, Py_ssize_t j,
                                  Py_ssize_t n, int32_t nhandles, bint slot) noexcept nogil:
    """For a put at ``j`` (its handle's state fetched earlier): fetch the first of the
    handle's pairs, and (``slot``, that pair fetched earlier) its home slot; what the
    Detacher reads if the put releases."""
    cdef int32_t h
    cdef int32_t e
    if j < n and ops[j] == PUT:
        h = handles[j]
        if 0 <= h < nhandles:
            e = states[h].bind_head
            if e >= 0:
                if slot:
                    prefetch(&t.slots[home(t, pair_key(h, t.entries[e].device))])
                else:
                    prefetch(&t.entries[e])


cdef int cmp_handles(const void* a, const void* b) noexcept nogil:
    cdef int32_t x = (<const int32_t*>a)[0]
    cdef int32_t y = (<const int32_t*>b)[0]
    return (x > y) - (x < y)


cdef uint8_t* device_widths(uint8_t* widths, devices) except NULL:
    """The devices' widths as a C array (realloc'd from ``widths``; never NULL)."""
    cdef Py_ssize_t i, n = len(devices)
    cdef uint8_t* grown = <uint8_t*>realloc(widths, <size_t>(n if n else 1))
    if grown == NULL:
        raise MemoryError()
    for i in range(n):
        grown[i] = <uint8_t>min(max(<int>devices[i].bits, 0), 255)
    return grown


# ---------------------------------------------------------------- the checker

@cython.final
cdef class Checker:
    """Check a trace's operations a chunk at a time (see ``pasid.sim.tracecheck``).

    ``Checker(header)``: TraceError if the header's grace or width breaks the
    allocator's rules. ``feed(chunk)``: TraceError at the chunk's first bad
    operation. O(len(chunk)) plus the handles an ``exit`` releases.
    """

    cdef readonly object header
    cdef readonly bint failed
    cdef int bits
    cdef double last            # the time of the last operation fed
    cdef int64_t fed            # operations fed
    cdef Py_ssize_t devices_checked
    cdef HandleState* states
    cdef int64_t nstates
    cdef Groups groups          # the dead, counted by group (see died)
    cdef OwnerList* owners
    cdef int64_t nowners
    cdef uint8_t* widths
    cdef BindTable table
    cdef int kind               # what went wrong, when _run finds a bad operation

    def __cinit__(self, header):
        self.states = NULL
        self.owners = NULL
        self.widths = NULL
        table_init(&self.table)

    def __init__(self, header):
        rules.check_header(header)
        self.header = header
        self.bits = header.bits
        self.last = 0.0

    def __dealloc__(self):
        pasid_unmap(self.states, <size_t>self.nstates * sizeof(HandleState))
        free(self.owners)
        free(self.widths)
        groups_free(&self.groups)
        table_free(&self.table)

    @property
    def bindings(self):
        """How many (handle, device) pairs are bound now."""
        return self.table.size

    def feed(self, chunk):
        """Check ``chunk``'s operations given those fed before; TraceError at the first bad one."""
        r = rules
        if self.failed:
            raise r.done("Checker")
        self.failed = True          # until the chunk is through
        r._expect_start(chunk, self.fed)
        cdef Py_ssize_t n = r.check_columns(chunk)
        self.devices_checked = r.check_devices(chunk.devices, self.devices_checked)
        cdef HandleState* before = self.states
        grow_handles(&self.states, &self.nstates, chunk.handles)
        groups_grow(&self.groups, self.nstates)
        if self.states != before:
            regive(&self.groups, self.states)
        grow_owners(&self.owners, &self.nowners, chunk.owners)
        self.widths = device_widths(self.widths, chunk.devices)
        cdef Py_ssize_t bad = self._feed(chunk, n)
        if bad >= 0:
            raise r.error(self.kind, self.header, chunk, bad, self.last)
        self.fed += n
        self.failed = False

    @property
    def kept(self):
        """How many handle states are kept: those of the groups not given back."""
        return self.nstates - sum(self.groups.gone[k] for k in range(self.groups.n)) * GROUP

    cdef Py_ssize_t _feed(self, chunk, Py_ssize_t n) except -2:
        cdef const double[::1] times = chunk.time
        cdef const uint8_t[::1] ops = chunk.op
        cdef const int32_t[::1] handles = chunk.handle
        cdef const int32_t[::1] owners = chunk.owner
        cdef const int32_t[::1] devices = chunk.device
        if n == 0:
            return -1
        return self._run(&times[0], &ops[0], &handles[0], &owners[0], &devices[0], n,
                         <int32_t>min(max(chunk.handles, 0), self.nstates),
                         <int32_t>min(max(chunk.owners, 0), self.nowners),
                         <int32_t>len(chunk.devices))

    cdef Py_ssize_t _run(self, const double* times, const uint8_t* ops, const int32_t* handles,
                         const int32_t* owner_ids, const int32_t* device_ids, Py_ssize_t n,
                         int32_t nhandles, int32_t nowners, int32_t ndev) except -2:
        """The index of the first bad operation (its kind in self.kind), or -1."""
        cdef HandleState* states = self.states
        cdef HandleState* s
        cdef OwnerList* owners = self.owners
        cdef const uint8_t* widths = self.widths
        cdef BindTable* table = &self.table
        cdef double last = self.last
        cdef Groups* groups = &self.groups
        cdef double t
        cdef Py_ssize_t j
        cdef int64_t slot
        cdef int32_t h, o, d, v, next
        cdef uint8_t op
        for j in range(n):
            prefetch_op(states, table, ops, handles, device_ids, j + AHEAD, n, nhandles, True)
            t = times[j]
            if not (0.0 <= t <= MAX_TIME):
                self.kind = BAD_TIME
                break
            if t < last:
                self.kind = BACKWARDS
                break
            last = t
            op = ops[j]
            if op > ADVANCE:
                self.kind = UNKNOWN_OP
                break
            if op == EXIT:
                o = owner_ids[j]
                if not 0 <= o < nowners:
                    self.kind = NO_OWNER
                    break
                v = owners[o].head
                while v >= 0:
                    next = states[v].live_next
                    states[v].refs = 0
                    states[v].live_owner = states[v].live_next = states[v].live_prev = -1
                    if states[v].pairs == 0:
                        died(groups, states, v)
                    v = next
                owners[o].head = owners[o].tail = -1
                continue
            if op == ADVANCE:
                continue
            h = handles[j]
            if not 0 <= h < nhandles:
                self.kind = HANDLE_RANGE
                break
            if given_back(groups, h):   # dead: allocated, released, nothing bound
                if op == ALLOC:
                    self.kind = TWICE
                    break
                d = device_ids[j]
                if op >= BIND and not 0 <= d < ndev:
                    self.kind = NO_DEVICE
                    break
                if op <= BIND:
                    self.kind = RELEASED
                    break
                if op == UNBIND:
                    self.kind = NOT_BOUND
                    break
                self.kind = NOT_BOUND_ACCESS    # an access: nothing is bound to a dead handle
                break
            s = &states[h]
            if op == ALLOC:
                if s.allocated:
                    self.kind = TWICE
                    break
                o = owner_ids[j]
                d = device_ids[j]
                if o >= nowners:
                    self.kind = OWNER_RANGE
                    break
                if d >= ndev:
                    self.kind = DEVICE_RANGE
                    break
                s.allocated = 1
                s.refs = 1
                s.limit = <uint8_t>self.bits
                if d >= 0 and widths[d] < s.limit:
                    s.limit = widths[d]
                if o >= 0:
                    link_live(states, owners, h, o)
                continue
            if not s.allocated:
                self.kind = BEFORE_ALLOC
                break
            d = device_ids[j]
            if op >= BIND and not 0 <= d < ndev:        # bind, unbind, access
                self.kind = NO_DEVICE
                break
            if op <= BIND:                              # get, put, bind
                if s.refs == 0:
                    self.kind = RELEASED
                    break
                if op == GET:
                    s.refs += 1
                elif op == PUT:
                    s.refs -= 1
                    if s.refs == 0:
                        if s.live_owner >= 0:
                            unlink_live(states, owners, h)
                        if s.pairs == 0:
                            died(groups, states, h)
                else:
                    if widths[d] < s.limit:
                        self.kind = TOO_NARROW
                        break
                    slot = table_find(table, pair_key(h, d))
                    if slot >= 0:
                        table.slots[slot].count += 1
                    else:
                        table_insert(table, h, d, NULL)
                        s.pairs += 1
            elif op == UNBIND:
                slot = table_find(table, pair_key(h, d))
                if slot < 0:
                    self.kind = NOT_BOUND
                    break
                table.slots[slot].count -= 1
                if table.slots[slot].count == 0:
                    table_delete(table, slot, NULL)
                    s.pairs -= 1
                    if s.pairs == 0 and s.refs == 0:
                        died(groups, states, h)
            elif table_find(table, pair_key(h, d)) < 0:   # an access
                self.kind = NOT_BOUND_ACCESS
                break
        else:
            self.last = last
            return -1
        self.last = last
        return j


# ---------------------------------------------------------------- the rewrite

@cython.final
cdef class Detacher:
    """Rewrite a trace without device quarantine a chunk at a time (see
    ``pasid.sim.tracecheck``).

    ``Detacher(header=None)``: the header names handles in errors (without one,
    by number). ``feed(chunk)``: the rewritten chunk. O(len(chunk)) plus the
    handles an ``exit`` releases (sorted: O(k log k) if they were not
    allocated in handle order) and the unbinds inserted.
    """

    cdef readonly object header
    cdef readonly bint failed
    cdef int64_t fed            # operations fed
    cdef int64_t out            # operations written
    cdef int64_t live_binds     # binds not yet unbound or detached: the unbinds pending
    cdef HandleState* states
    cdef int64_t nstates
    cdef Groups groups          # the dead, counted by group (see died)
    cdef OwnerList* owners
    cdef int64_t nowners
    cdef int32_t* victims       # an exit's live handles, sorted
    cdef int64_t nvictims
    cdef BindTable table
    cdef object devices         # the last chunk's devices, and with drains 0
    cdef object zero
    cdef int kind

    def __cinit__(self, header=None):
        self.states = NULL
        self.owners = NULL
        self.victims = NULL
        table_init(&self.table)

    def __init__(self, header=None):
        self.header = header if header is not None else rules._NUMBERED

    def __dealloc__(self):
        pasid_unmap(self.states, <size_t>self.nstates * sizeof(HandleState))
        free(self.owners)
        free(self.victims)
        groups_free(&self.groups)
        table_free(&self.table)

    @property
    def bindings(self):
        """How many (handle, device) pairs are bound now."""
        return self.table.size

    @property
    def kept(self):
        """How many handle states are kept: those of the groups not given back."""
        return self.nstates - sum(self.groups.gone[k] for k in range(self.groups.n)) * GROUP

    def feed(self, chunk):
        """The rewrite of ``chunk`` given the chunks fed before (see ``pasid.sim.tracecheck``)."""
        r = rules
        if self.failed:
            raise r.done("Detacher")
        self.failed = True
        r._expect_start(chunk, self.fed)
        cdef Py_ssize_t n = r.check_columns(chunk)
        cdef HandleState* before = self.states
        grow_handles(&self.states, &self.nstates, chunk.handles)
        groups_grow(&self.groups, self.nstates)
        if self.states != before:
            regive(&self.groups, self.states)
        grow_owners(&self.owners, &self.nowners, chunk.owners)
        cdef const uint8_t[::1] ops = chunk.op
        cdef Py_ssize_t j, binds = 0
        for j in range(n):
            binds += ops[j] == BIND
        # each operation is kept or dropped; an unbind is inserted per bind pending
        cdef Py_ssize_t room = n + self.live_binds + binds
        time = np.empty(room, dtype=np.float64)
        op = np.empty(room, dtype=np.uint8)
        handle = np.empty(room, dtype=np.int32)
        owner = np.empty(room, dtype=np.int32)
        device = np.empty(room, dtype=np.int32)
        lines = None if chunk.lines is None else np.empty(room, dtype=np.int64)
        cdef Py_ssize_t written = 0
        cdef Py_ssize_t bad = self._feed(chunk, n, time, op, handle, owner, device, lines,
                                         &written)
        if bad >= 0:
            raise r.error(self.kind, self.header, chunk, bad, 0.0)
        for column in (time, op, handle, owner, device, lines):
            if column is not None:
                column.resize(written, refcheck=False)    # ours alone: shrunk in place
        if chunk.devices is not self.devices:
            self.devices, self.zero = chunk.devices, r.zero_drains(chunk.devices)
        result = Chunk(time=time, op=op, handle=handle, owner=owner, device=device, lines=lines,
                       start=self.out, handles=chunk.handles, owners=chunk.owners,
                       devices=self.zero)
        self.fed += n
        self.out += written
        self.failed = False
        return result

    cdef Py_ssize_t _feed(self, chunk, Py_ssize_t n, double[::1] time, uint8_t[::1] op,
                          int32_t[::1] handle, int32_t[::1] owner, int32_t[::1] device,
                          lines, Py_ssize_t* written) except -2:
        cdef const double[::1] times = chunk.time
        cdef const uint8_t[::1] ops = chunk.op
        cdef const int32_t[::1] handles = chunk.handle
        cdef const int32_t[::1] owners = chunk.owner
        cdef const int32_t[::1] devices = chunk.device
        cdef const int64_t[::1] line_in
        cdef int64_t[::1] line_out
        cdef const int64_t* lines_in = NULL
        cdef int64_t* lines_out = NULL
        if n == 0:
            return -1
        if lines is not None:
            line_in = chunk.lines
            line_out = lines
            lines_in = &line_in[0]
            lines_out = &line_out[0]
        return self._run(&times[0], &ops[0], &handles[0], &owners[0], &devices[0], lines_in, n,
                         <int32_t>min(max(chunk.handles, 0), self.nstates),
                         <int32_t>min(max(chunk.owners, 0), self.nowners),
                         <int32_t>len(chunk.devices),
                         &time[0], &op[0], &handle[0], &owner[0], &device[0], lines_out, written)

    cdef Py_ssize_t _run(self, const double* times, const uint8_t* ops, const int32_t* handles,
                         const int32_t* owner_ids, const int32_t* device_ids,
                         const int64_t* lines, Py_ssize_t n,
                         int32_t nhandles, int32_t nowners, int32_t ndev,
                         double* time_out, uint8_t* op_out, int32_t* handle_out,
                         int32_t* owner_out, int32_t* device_out, int64_t* lines_out,
                         Py_ssize_t* written) except -2:
        """The index of the first operation the tables cannot take (its kind in
        self.kind), or -1; the operations written so far in ``*written``."""
        cdef HandleState* states = self.states
        cdef HandleState* s
        cdef OwnerList* owners = self.owners
        cdef BindTable* table = &self.table
        cdef Groups* groups = &self.groups
        cdef Py_ssize_t j, k = 0
        cdef int64_t slot, victims, i
        cdef int32_t h, o, d, v
        cdef uint8_t op
        cdef bint ordered
        cdef int32_t* grown
        for j in range(n):
            # three steps ahead: the state, then a put's first pair, then its slot
            prefetch_op(states, table, ops, handles, device_ids, j + 3 * AHEAD, n, nhandles,
                        False)
            prefetch_release(states, table, ops, handles, j + 2 * AHEAD, n, nhandles, False)
            prefetch_release(states, table, ops, handles, j + AHEAD, n, nhandles, True)
            op = ops[j]
            if op > ADVANCE:
                self.kind = UNKNOWN_OP
                break
            if op == EXIT:
                o = owner_ids[j]
                if not 0 <= o < nowners:
                    self.kind = NO_OWNER
                    break
                victims = 0
                v = owners[o].head
                while v >= 0:
                    victims += 1
                    v = states[v].live_next
                if victims > self.nvictims:
                    grown = <int32_t*>realloc(self.victims, <size_t>victims * sizeof(int32_t))
                    if grown == NULL:
                        raise MemoryError()
                    self.victims = grown
                    self.nvictims = victims
                ordered = True
                v = owners[o].head
                for i in range(victims):
                    self.victims[i] = v
                    if i and v < self.victims[i - 1]:
                        ordered = False
                    v = states[v].live_next
                if not ordered:
                    qsort(self.victims, <size_t>victims, sizeof(int32_t), cmp_handles)
                for i in range(victims):
                    v = self.victims[i]
                    states[v].refs = 0
                    states[v].live_owner = states[v].live_next = states[v].live_prev = -1
                    k = self._detach(v, times[j], lines[j] if lines != NULL else 0, k,
                                     time_out, op_out, handle_out, owner_out, device_out,
                                     lines_out)
                owners[o].head = owners[o].tail = -1
            elif op != ADVANCE:
                h = handles[j]
                if not 0 <= h < nhandles:
                    self.kind = HANDLE_RANGE
                    break
                if given_back(groups, h):   # dead: detached at its release
                    if op == ALLOC:
                        self.kind = TWICE
                        break
                    if op == BIND or op == UNBIND:
                        d = device_ids[j]
                        if not 0 <= d < ndev:
                            self.kind = NO_DEVICE
                            break
                    if op == UNBIND:
                        continue        # dropped, as a detached handle's unbinds are
                    if op != ACCESS:
                        self.kind = RELEASED
                        break
                    s = NULL            # an access: kept
                else:
                    s = &states[h]
                if s == NULL:
                    pass
                elif op == ALLOC:
                    if s.allocated:
                        self.kind = TWICE
                        break
                    o = owner_ids[j]
                    if o >= nowners:
                        self.kind = OWNER_RANGE
                        break
                    s.allocated = 1
                    s.refs = 1
                    if o >= 0:
                        link_live(states, owners, h, o)
                elif op == GET:
                    s.refs += 1
                elif op == PUT:
                    s.refs -= 1
                    if s.refs == 0:
                        k = self._detach(h, times[j], lines[j] if lines != NULL else 0, k,
                                         time_out, op_out, handle_out, owner_out, device_out,
                                         lines_out)
                        if s.live_owner >= 0:
                            unlink_live(states, owners, h)
                elif op == BIND or op == UNBIND:
                    d = device_ids[j]
                    if not 0 <= d < ndev:
                        self.kind = NO_DEVICE
                        break
                    if op == BIND:
                        slot = table_find(table, pair_key(h, d))
                        if slot >= 0:
                            table.slots[slot].count += 1
                        else:
                            table_insert(table, h, d, states)
                        self.live_binds += 1
                    else:
                        if s.detached:
                            continue        # dropped: the handle was detached at its release
                        slot = table_find(table, pair_key(h, d))
                        if slot < 0:
                            self.kind = NOT_BOUND
                            break
                        table.slots[slot].count -= 1
                        self.live_binds -= 1
                        if table.slots[slot].count == 0:
                            table_delete(table, slot, states)
            time_out[k] = times[j]
            op_out[k] = op
            handle_out[k] = handles[j]
            owner_out[k] = owner_ids[j]
            device_out[k] = device_ids[j]
            if lines_out != NULL:
                lines_out[k] = lines[j]
            k += 1
        else:
            written[0] = k
            return -1
        written[0] = k
        return j

    cdef Py_ssize_t _detach(self, int32_t h, double t, int64_t line, Py_ssize_t k,
                            double* time_out, uint8_t* op_out, int32_t* handle_out,
                            int32_t* owner_out, int32_t* device_out,
                            int64_t* lines_out) noexcept:
        """Handle ``h`` released at time ``t`` (``line``): an unbind written at ``k`` for
        each bind pending, in bind order; its pairs leave the table and its later
        unbinds will be dropped. Returns the next ``k``."""
        cdef BindTable* table = &self.table
        cdef int64_t e = self.states[h].bind_head
        cdef int64_t next, count, c, slot
        cdef int32_t d
        while e >= 0:
            next = table.entries[e].next
            d = table.entries[e].device
            slot = table_find(table, pair_key(h, d))
            count = table.slots[slot].count
            for c in range(count):
                time_out[k] = t
                op_out[k] = UNBIND
                handle_out[k] = h
                owner_out[k] = -1
                device_out[k] = d
                if lines_out != NULL:
                    lines_out[k] = line
                k += 1
            self.live_binds -= count
            table_delete(table, slot, NULL)
            e = next
        self.states[h].bind_head = self.states[h].bind_tail = -1
        self.states[h].detached = 1
        died(&self.groups, self.states, h)
        return k
