# The ``fifo`` strategy's queue: FREE IDs in the order they became FREE.
#
# The twin of pasid/pure/fifo.py. The queue is a doubly linked list through
# two int32 arrays, so its head (the whole range's answer), a push and a
# removal cost O(1). An allocation limited to [lo, hi] wants the queue's first
# ID *inside* the range; walking the list to it would pay for every FREE ID
# outside. So on the first such query the queue also numbers its IDs (``seq``:
# the order they joined; EMPTY when not queued) and keeps the smallest number
# of every group of 64 IDs, of every group of 64 groups, and so on up to one.
# The first ID in [lo, hi] is the smallest number in it: the two partial
# groups at each level and the whole groups between them, found one level up;
# O(64 log64 N). A push at the tail gets the largest number yet, so it changes
# a group's minimum only where the group was empty; a removal recomputes the
# minimum of the groups whose minimum it was (64 entries a level).
#
# Every function is noexcept: the caller raises MemoryError when fifo_init or
# fifo_first (which may build the numbers) returns -2, before anything changed.

from libc.stdint cimport INT64_MAX

cdef enum:
    FIFO_MAX_LEVELS = 8        # 64**8 IDs: far more than a PasidAllocator's 2**20
cdef int64_t FIFO_EMPTY = INT64_MAX

# ctypedef struct Fifo (in _core.pxd, where PasidAllocator holds one):
#     int32_t* prev, next      the queue: links through the IDs
#     int32_t head, tail       -1 when empty
#     int64_t capacity
#     int64_t* seq             NULL until the first ranged query; FIFO_EMPTY when not queued
#     int64_t* mins[8]         level k: the minimum of each 64 entries of level k-1
#     int64_t width[9]         entries per level: width[0] = capacity
#     int levels               summary levels (the last has one entry)
#     int64_t next_back        the next number for the tail (increasing)
#     int64_t next_front       the next number for the head (decreasing, below 0)


cdef int fifo_init(Fifo* f, int64_t capacity) noexcept nogil:
    """An empty queue of IDs 0..capacity-1 (no summaries yet); -2 when out of memory."""
    cdef int k
    f.capacity = capacity
    f.head = f.tail = -1
    f.seq = NULL
    f.levels = 0
    for k in range(FIFO_MAX_LEVELS):
        f.mins[k] = NULL
    f.prev = <int32_t*>malloc(capacity * sizeof(int32_t))
    f.next = <int32_t*>malloc(capacity * sizeof(int32_t))
    if f.prev == NULL or f.next == NULL:
        fifo_destroy(f)
        return -2
    return 0


cdef void fifo_destroy(Fifo* f) noexcept nogil:
    free(f.prev)
    free(f.next)
    f.prev = f.next = NULL
    fifo_drop_index(f)


cdef void fifo_drop_index(Fifo* f) noexcept nogil:
    """Forget the numbers and summaries (a load rebuilds them on demand)."""
    cdef int k
    free(f.seq)
    f.seq = NULL
    for k in range(FIFO_MAX_LEVELS):
        free(f.mins[k])
        f.mins[k] = NULL
    f.levels = 0


cdef inline int64_t _fifo_min64(const int64_t* values, int64_t start, int64_t stop) noexcept nogil:
    cdef int64_t best = FIFO_EMPTY, i
    for i in range(start, stop):
        if values[i] < best:
            best = values[i]
    return best


cdef inline int64_t* _fifo_level(Fifo* f, int k) noexcept nogil:
    return f.seq if k == 0 else f.mins[k - 1]


cdef int fifo_build(Fifo* f) noexcept nogil:
    """Number the queued IDs in queue order and compute every summary; -2 when out of memory."""
    cdef int64_t i, g, n = f.capacity, number = 0
    cdef int k = 0
    cdef int32_t p
    f.seq = <int64_t*>malloc(n * sizeof(int64_t))
    if f.seq == NULL:
        return -2
    f.width[0] = n
    while n > 1:
        n = (n + 63) >> 6
        f.mins[k] = <int64_t*>malloc(n * sizeof(int64_t))
        if f.mins[k] == NULL:
            fifo_drop_index(f)
            return -2
        k += 1
        f.width[k] = n
    f.levels = k
    for i in range(f.capacity):
        f.seq[i] = FIFO_EMPTY
    p = f.head
    while p >= 0:
        f.seq[p] = number
        number += 1
        p = f.next[p]
    f.next_back = number
    f.next_front = -1
    for k in range(f.levels):
        for g in range(f.width[k + 1]):
            f.mins[k][g] = _fifo_min64(_fifo_level(f, k), g << 6,
                                       min((g + 1) << 6, f.width[k]))
    return 0


cdef void fifo_push(Fifo* f, int64_t p) noexcept nogil:
    """``p`` joins the tail. O(1); with the summaries, O(log64 N) at most."""
    cdef int64_t number, index = p
    cdef int k
    f.prev[p] = f.tail
    f.next[p] = -1
    if f.tail >= 0:
        f.next[f.tail] = <int32_t>p
    else:
        f.head = <int32_t>p
    f.tail = <int32_t>p
    if f.seq != NULL:
        number = f.next_back
        f.next_back += 1
        f.seq[p] = number
        for k in range(f.levels):
            index >>= 6
            if f.mins[k][index] != FIFO_EMPTY:
                break               # a smaller number is already there, and above
            f.mins[k][index] = number


cdef void fifo_push_front(Fifo* f, int64_t p) noexcept nogil:
    """``p`` joins the head (undoing a removal of the head). O(log64 N) with the summaries."""
    cdef int64_t number, index = p
    cdef int k
    f.prev[p] = -1
    f.next[p] = f.head
    if f.head >= 0:
        f.prev[f.head] = <int32_t>p
    else:
        f.tail = <int32_t>p
    f.head = <int32_t>p
    if f.seq != NULL:
        number = f.next_front
        f.next_front -= 1
        f.seq[p] = number
        for k in range(f.levels):
            index >>= 6
            f.mins[k][index] = number     # the smallest number yet, everywhere above


cdef void fifo_remove(Fifo* f, int64_t p) noexcept nogil:
    """``p`` leaves the queue. O(1); with the summaries, O(64 log64 N) at most."""
    cdef int32_t before = f.prev[p], after = f.next[p]
    cdef int64_t number, index = p
    cdef int k
    if before >= 0:
        f.next[before] = after
    else:
        f.head = after
    if after >= 0:
        f.prev[after] = before
    else:
        f.tail = before
    if f.seq != NULL:
        number = f.seq[p]
        f.seq[p] = FIFO_EMPTY
        for k in range(f.levels):
            index >>= 6
            if f.mins[k][index] != number:
                break
            f.mins[k][index] = _fifo_min64(_fifo_level(f, k), index << 6,
                                           min((index + 1) << 6, f.width[k]))


cdef int64_t fifo_first(Fifo* f, int64_t lo, int64_t hi) noexcept nogil:
    """The first queued ID in [lo, hi]: the ID, -1 if none, -2 when out of memory
    building the numbers (nothing changed). O(1) for the whole range, else O(64 log64 N)."""
    cdef int64_t best = FIFO_EMPTY, index = -1, i, start, stop
    cdef int k = 0, level = 0
    cdef int64_t* values
    if lo == 0 and hi == f.capacity - 1:
        return f.head
    if f.seq == NULL and fifo_build(f) < 0:
        return -2
    while lo <= hi:
        values = _fifo_level(f, k)
        if (lo >> 6) == (hi >> 6) or k == f.levels:
            for i in range(lo, hi + 1):
                if values[i] < best:
                    best, index, level = values[i], i, k
            break
        for i in range(lo, (lo | 63) + 1):            # the partial group on the left
            if values[i] < best:
                best, index, level = values[i], i, k
        for i in range(hi & ~(<int64_t>63), hi + 1):  # the partial group on the right
            if values[i] < best:
                best, index, level = values[i], i, k
        lo = (lo >> 6) + 1                            # the whole groups between: one level up
        hi = (hi >> 6) - 1
        k += 1
    if best == FIFO_EMPTY:
        return -1
    while level > 0:                                  # down to the ID holding that number
        level -= 1
        values = _fifo_level(f, level)
        start = index << 6
        stop = min(start + 64, f.width[level])
        for i in range(start, stop):
            if values[i] == best:
                index = i
                break
    return index


cdef list fifo_order(Fifo* f):
    """The queue, head first, as a list of ints."""
    cdef list order = []
    cdef int32_t p = f.head
    while p >= 0:
        order.append(p)
        p = f.next[p]
    return order


cdef object fifo_check(Fifo* f, set free_ids):
    """What is wrong with the queue (holding ``free_ids``), or None."""
    cdef list order = fifo_order(f)
    cdef int64_t g, i
    cdef int k
    if set(order) != free_ids or len(order) != len(free_ids):
        return "fifo queue != FREE set"
    cdef int64_t before = -1
    for p in order:
        if f.prev[p] != before:
            return "fifo back links disagree"
        before = p
    if f.tail != before:
        return "fifo tail disagrees"
    if f.seq == NULL:
        return None
    numbers = [f.seq[p] for p in order]
    if numbers != sorted(numbers) or any(
            f.seq[i] != FIFO_EMPTY for i in range(f.capacity) if i not in free_ids):
        return "fifo numbers disagree with the queue order"
    for k in range(f.levels):
        for g in range(f.width[k + 1]):
            if f.mins[k][g] != _fifo_min64(_fifo_level(f, k), g << 6,
                                           min((g + 1) << 6, f.width[k])):
                return f"fifo summary level {k + 1} group {g} disagrees"
    return None
