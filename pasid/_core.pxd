# The compiled core's declarations, for simulators written in Cython:
#     from pasid._core cimport PasidAllocator
#
# The public C-level API is the ``c_*`` methods of PasidAllocator (first below):
# C integers and doubles in and out, each in the object's critical section,
# with the checks and counters of the Python method of the same name. Misuse
# raises that method's exception (``except -1``); ``c_alloc`` returns -1 when
# nothing in range is FREE or the owner is at its quota. Devices are named by
# the small int that ``add_device`` returns.
#
# Everything else declared here (structs, attributes, ``_`` methods) is the
# internal layout: Cython needs it to lay out the classes, but it is not a
# promise and changes between versions.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

ctypedef struct Node:
    uint64_t free_mask       # bit i: slot i has a free ID below it
    uint64_t used_mask       # bit i: slot i has a taken ID below it
    uint64_t nfree           # free IDs under this node
    uint64_t slot[64]        # leaf: bitmap words (1 = free); inner: Node* (NULL = all free)

ctypedef struct Space:
    Node* root
    int height               # the root covers 2**(12 + 6*height) IDs
    int64_t capacity         # IDs 0 .. capacity-1 are addressable
    int64_t nodes            # nodes allocated (memory accounting)

cimport cython


@cython.final
cdef class _Device:
    cdef int bits
    cdef double drain
    cdef object on_teardown
    cdef set bound
    cdef object key
    cdef int handle


@cython.final
cdef class IDA:
    cdef Space space
    cdef int64_t count

    cdef int64_t _alloc(self, int64_t lo, int64_t hi) except -1


@cython.final
cdef class PasidAllocator:
    # ---- the public C-level API
    cdef int64_t c_alloc(self, object owner, int64_t lo, int64_t hi) except -2
    cdef int c_get(self, int64_t p) except -1
    cdef int c_put(self, int64_t p) except -1
    cdef int c_bind(self, int64_t p, int device) except -1
    cdef int c_unbind(self, int64_t p, int device) except -1
    cdef list c_exit_owner(self, object owner)
    cdef int64_t c_advance(self, double to) except -1
    cdef double c_now(self) except? -1.0
    cdef int c_state(self, int64_t p) except -1
    cdef int64_t c_generation(self, int64_t p) except -1
    cdef int64_t c_count(self, int state) except -1

    # ---- internal layout (not a promise)
    # configuration
    cdef int _bits
    cdef int64_t _size
    cdef int _strategy
    cdef double _grace
    cdef object _clock
    cdef double _now
    cdef uint64_t _rng
    cdef int64_t _cursor
    # the ID space and the per-PASID tables (C arrays owned by the instance)
    cdef Space space
    cdef uint8_t* _meta          # state | MULTI | flags, one byte per PASID
    cdef uint32_t* _refcount     # meaningful while MULTI: refcount >= 2
    cdef uint32_t* _generation
    cdef double* _hold
    cdef int32_t* _fifo_prev
    cdef int32_t* _fifo_next
    cdef int32_t _fifo_head
    cdef int32_t _fifo_tail
    # the release queue: a binary heap of (release_at, PASID)
    cdef double* _queue_time
    cdef int32_t* _queue_pasid
    cdef int64_t _queue_len
    # side tables (Python objects, consulted only when a flag says so)
    cdef dict _owner
    cdef dict _data
    cdef dict _bindings
    cdef dict _devices
    cdef list _device_list       # handle -> _Device (None once removed)
    cdef dict _owned
    cdef dict _use
    cdef dict _quota
    # counters
    cdef int64_t _counts[5]
    cdef int64_t _allocations
    cdef int64_t _releases
    cdef int64_t _reclaimed
    cdef int64_t _failures
    cdef int64_t _high_water

    cdef int64_t _check_id(self, object value) except -1
    cdef double _read_clock(self) except? -1.0
    cdef int _sync(self) except -1
    cdef int _take_state(self, int64_t p, int state) except -1
    cdef void _freed_plain(self, int64_t p) noexcept
    cdef void _ref_inc(self, int64_t p) noexcept
    cdef void _ref_dec(self, int64_t p) noexcept
    cdef int _make_free(self, int64_t p) except -1
    cdef int64_t _reclaim(self, double now) except -1
    cdef int _settle(self, int64_t p, double now) except -1
    cdef int _put(self, object pasid) except -1
    cdef int _release(self, int64_t p, double now, list teardown) except -1
    cdef void _fifo_push(self, int64_t p) noexcept
    cdef void _fifo_remove(self, int64_t p) noexcept
    cdef void _queue_push(self, double release_at, int64_t p) noexcept
    cdef int64_t _queue_pop(self) noexcept
    cdef int64_t _choose(self, int64_t lo, int64_t hi) noexcept
    cdef int _check_quota(self, object owner, int64_t n) except -1
    cdef int _over_quota(self, object owner, int64_t n) except -1
    cdef void _left_free(self, int64_t p, int state) noexcept
    cdef int _activate(self, int64_t p, object owner, object data) except -1
    cdef int _activated(self, int64_t p, object owner, object data) except -1
    cdef int _tag_owner(self, int64_t p, object owner) except -1
    cdef int64_t _alloc(self, object owner, object data, object min, object max) except -2
    cdef int64_t _alloc_in(self, object owner, object data, int64_t lo, int64_t hi) except -2
    cdef int _put_id(self, int64_t p) except -1
    cdef int _bind(self, int64_t p, object device, _Device info, object data) except -1
    cdef int _unbind(self, int64_t p, object device) except -1
    cdef _Device _new_device(self, object device, int bits, double drain, object on_teardown)
    cdef _Device _device_at(self, int device)
    cdef int _check_c_id(self, int64_t p) except -1
    cdef int64_t _fill(self, uint32_t* out, int64_t n) noexcept
    cdef void _unfill(self, uint32_t* out, int64_t done) noexcept
    cdef object _id_array(self, object ids)
    cdef tuple _range(self, lo, hi)
    cdef int _load(self, dict snap) except -1
