# The compiled core's declarations: internal, for pasid._core itself. Not a
# promise: fields and methods change between versions, and a module cimporting
# this file would have to be rebuilt with every pasid (Cython checks the object's
# size at import, and calls through vtable slots). Nothing else in pasid does.
#
# The public C-level API is pasid/capi.pxd: a versioned table of functions in the
# capsule pasid._core._C_API, which a simulator written in Cython cimports
# instead. Its entries are the module-level ``c_*`` functions of _capi.pxi (for
# PasidAllocator) and the ``c_*`` methods of IDA below; their signatures are the
# table's entries' (a change to one is a compile error in _capi.pxi until the
# other follows, by the version rule of pasid/capi.pxd).

from cpython.pythread cimport PyThread_type_lock
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
    Node* low_leaf           # a hint (_idspace.pxi): a leaf with every ID below it taken, or NULL
    int64_t low_base         # that leaf's first ID
    Node* low_path[5]        # its ancestors by height (1 .. height; MAX_HEIGHT + 1 entries)

cimport cython


# ---- internal layout (not a promise)

ctypedef struct Slot:        # what every call touches at a PASID: two bytes, one cache line
    uint8_t meta             # state | MULTI | flags (_allocator.pxi)
    uint8_t generation_low   # times allocated, mod 256 (the rest in _generation_high)

ctypedef struct BindRec:     # one (PASID, device) binding
    int32_t pasid
    int32_t device           # the device's handle
    uint32_t count           # binds not yet unbound
    int32_t next             # the PASID's next binding (bind order); the free list's next
    int32_t dprev            # the device's bindings: a doubly linked list
    int32_t dnext

ctypedef struct Bindings:        # the bindings' pool (_bindings.pxi)
    BindRec* recs
    int64_t cap
    int64_t used
    int32_t free
    int32_t* first

ctypedef struct Owned:           # owners' links (_owners.pxi)
    void** owner_of
    int32_t* prev
    int32_t* next

ctypedef struct ReleaseQueue:    # the release queue (_release.pxi)
    double* time
    int32_t* pasid
    int64_t len

ctypedef struct Fifo:        # the fifo strategy's queue (_fifo.pxi)
    int32_t* prev
    int32_t* next
    int32_t head
    int32_t tail
    int64_t capacity
    int64_t* seq
    int64_t* mins[8]
    int64_t width[9]
    int levels
    int64_t next_back
    int64_t next_front


ctypedef struct GuestMap:        # guest PASID -> host PASID, in pages made on demand (_guest.pxi)
    int32_t** pages
    int64_t npages


cdef class GuestSpace


@cython.final
cdef class _Owner:
    cdef object key              # the owner object the user named
    cdef int64_t use             # its PASIDs ACTIVE, DRAINING or QUARANTINED
    cdef int64_t quota           # -1: none
    cdef int64_t active          # its ACTIVE PASIDs, linked from ``first``
    cdef int32_t first
    cdef int gone                # dropped (or about to be) from the owner table
    cdef int64_t pins            # operations between their phase 1 and phase 3 holding it:
                                 # never marked gone while pinned
    cdef _Owner next_gone        # the list of records to drop after the operation
    cdef int64_t mark            # inside _export's pass: 1 + its index in the snapshot's
                                 # owner keys once met; 0 otherwise
    cdef object guest            # a VM's record: its GuestSpace (_guest.pxi); else None
    cdef int pending             # the last named, kept out of the owner table (_owners.pxi)


@cython.final
cdef class _Device:
    cdef object key              # the device object the user named
    cdef int handle              # its index in PasidAllocator._device_list
    cdef int bits
    cdef double drain
    cdef object on_teardown
    cdef int gone                # removed
    cdef int32_t first           # its bindings: the head of a list through BindRec.dnext
    cdef int64_t nbound


@cython.final
cdef class IDA:
    cdef Space space
    cdef int64_t count

    cdef int64_t c_alloc(self, int64_t lo, int64_t hi) except -2
    cdef int c_free(self, int64_t id) except -1
    cdef bint c_exists(self, int64_t id) noexcept
    cdef int64_t _alloc(self, int64_t lo, int64_t hi) except -1


@cython.final
cdef class _VMTable:             # a host's VMs (_guest.pxi)
    cdef list vms                # GuestSpace, in the order added
    cdef dict assigned           # device record -> its GuestSpace
    cdef int32_t* guest_of       # host PASID -> guest PASID while mapped; -1


@cython.final
cdef class PasidAllocator:
    # ---- internal layout (not a promise)
    # configuration
    cdef int _bits
    cdef int64_t _size
    cdef int _strategy
    cdef double _grace
    cdef object _clock
    cdef double _now             # the logical clock; with a callable clock, its highest reading
    cdef uint64_t _rng
    cdef int64_t _cursor
    # the ID space and the per-PASID tables (C arrays owned by the instance)
    cdef Space space
    cdef Slot* _slots            # per PASID: state | MULTI | flags, and the generation's low byte
    cdef uint32_t* _generation_high   # per PASID: the generation >> 8
    cdef uint32_t* _refcount     # meaningful while MULTI: refcount >= 2
    cdef double* _hold           # meaningful while HAS_HOLD: release_at so far
    cdef Owned _owned            # per PASID: its owner's record, the owner's ACTIVE list
    cdef Fifo _fifo              # only with the fifo strategy
    cdef ReleaseQueue _queue     # the QUARANTINED PASIDs by release_at (_release.pxi)
    cdef Bindings _bindings      # the (PASID, device) bindings (_bindings.pxi)
    # side tables (Python objects, consulted only when a flag says so)
    cdef list _data              # PASID -> data (None until the first data given)
    cdef list _bind_data         # binding record -> the driver's data for the pair
    cdef dict _owners            # owner object -> _Owner
    cdef dict _quota             # owner record -> quota, in the order quotas were set
    cdef dict _devices           # device object -> _Device
    cdef list _device_list       # handle -> _Device (None once removed)
    cdef int64_t _callbacks       # devices declared with an on_teardown callback
    cdef list _recent_devices    # (device object, _Device) pairs lately named, by identity
    cdef int _recent_next
    cdef _VMTable _vms           # its VMs, from the first add_vm (_guest.pxi); else None
    cdef _Owner _gone            # owner records to drop from _owners after the operation
    cdef _Owner _last            # the last owner record named: kept while idle (_owners.pxi)
    cdef bint _exact_keys        # every key the owner table has held an exact str or int
    cdef list _graveyard         # user objects let go by a change, dropped in its phase 3
    cdef PyThread_type_lock _registry  # held while the owner and device tables change
    cdef long _registry_thread   # the thread holding it, or 0
    cdef int _batch              # a batch runs without the GIL; its thread holds _gate
    cdef PyThread_type_lock _gate     # held by the thread of a batch running without the GIL
    cdef int _waiting            # threads waiting for such a batch to end
    cdef uint64_t* _runs         # free_many's scratch: (word, bits) runs (_free_plain_batch)
    cdef int64_t _runs_cap
    # counters
    cdef int64_t _counts[5]
    cdef int64_t _allocations
    cdef int64_t _releases
    cdef int64_t _reclaimed
    cdef int64_t _failures
    cdef int64_t _high_water
    cdef object __weakref__      # pasid/_fork.py keeps the live allocators in a WeakSet

    # helpers (see _allocator.pxi)
    cdef inline int64_t _check_id(self, object value) except -1
    cdef inline int _check_c_id(self, int64_t p) except -1
    cdef int _out_of_range(self, int64_t p) except -1
    cdef inline double _reading(self) except? -1.0
    cdef double _read_clock(self) except? -1.0
    cdef inline double _time(self, double reading) noexcept
    cdef inline int _settle_time(self, double now) except -1
    cdef int _refuse_reentry(self) except -1
    cdef int _enter_registry(self) except -1
    cdef void _leave_registry(self) noexcept
    cdef inline void _bury(self, object value) noexcept
    cdef inline int _after(self) except -1
    cdef int _tidy(self) except -1
    cdef str _exhausted(self, str asked)
    cdef int _take_state(self, int64_t p, int state) except -1
    cdef inline uint32_t _generation_of(self, int64_t p) noexcept nogil
    cdef inline bint _generation_full(self, int64_t p) noexcept nogil
    cdef inline void _generation_inc(self, int64_t p) noexcept nogil
    cdef inline void _generation_dec(self, int64_t p) noexcept nogil
    cdef inline void _generation_set(self, int64_t p, uint32_t generation) noexcept
    cdef inline void _left_free(self, int64_t p, int state) noexcept
    cdef inline void _freed_plain(self, int64_t p) noexcept
    cdef int _ref_inc(self, int64_t p) except -1
    cdef inline void _ref_dec(self, int64_t p) noexcept nogil
    cdef int64_t _choose(self, int64_t lo, int64_t hi) except -2
    cdef inline int64_t _alloc_in(self, _Owner owner, object data, int64_t lo,
                                  int64_t hi) except -2
    cdef int64_t _alloc_chosen(self, _Owner owner, object data, int64_t lo,
                               int64_t hi) except -2
    cdef inline int64_t _activate(self, int64_t p, _Owner owner, object data,
                                  uint64_t rng) except -2
    cdef int64_t _alloc_checked(self, object owner, object data, int64_t lo, int64_t hi,
                                bint quota_raises, uint32_t* generation) except -2
    cdef int _alloc_exact_in(self, int64_t p, object owner, object data,
                             int64_t* refused_quota) except -1
    cdef inline bint _put_plain(self, int64_t p) noexcept
    cdef inline int _put(self, int64_t p) except -1
    cdef int _put_id(self, int64_t p, int64_t generation) except -1
    cdef tuple _range(self, lo, hi)


@cython.final
cdef class GuestSpace:
    cdef PasidAllocator _host
    cdef object _name            # the VM's name: its owner key on the host
    cdef int _mode               # an index in _args.VM_MODES
    cdef bint _translated
    cdef int _bits               # the guest's width
    cdef int64_t _lo, _hi        # the host PASIDs it may take
    cdef _Owner _record          # its owner record on the host, pinned
    cdef list _devices           # its device records, in the order given
    cdef Space _space            # translated: its guest numbers (0 taken)
    cdef GuestMap _map           # translated: guest -> host
    cdef int32_t* _guest_of      # the host's table's host -> guest (_VMTable.guest_of)
    cdef list _tags              # guest PASID -> owner tag (None until the first tag)
    cdef int _removed
    cdef int64_t _active
    cdef int64_t _allocations
    cdef int64_t _failures

    cdef inline int64_t _check_guest(self, object value) except -1
    cdef inline int64_t _check_guest_id(self, int64_t g) except -1
    cdef inline int64_t _host_of(self, int64_t g) noexcept
    cdef inline int64_t _host_lo(self) noexcept
    cdef inline int64_t _to_host(self, int64_t g) except -2
    cdef inline int64_t _to_guest(self, int64_t h) except -2
    cdef int64_t _mapped(self, str what, int64_t g) except -1
    cdef int64_t _alloc_in(self, int64_t g, object owner, object data) except -3
    cdef int64_t _alloc(self, int64_t g, object owner, object data) except -1
    cdef int _refused(self, int64_t got) except -1
    cdef int64_t _try_alloc(self, object owner, object data) except -2
    cdef int _put(self, int64_t g) except -1
    cdef int _put_id(self, int64_t g) except -1
    cdef inline bint _put_plain(self, int64_t g, int64_t h) noexcept
    cdef _Device _device(self, object device)
    cdef int _state_in(self, int64_t g) noexcept
    cdef uint64_t _vcmd(self, uint64_t word, int encoding) except? 0xFFFFFFFFFFFFFFFF
    cdef uint64_t _vcmd_id(self, uint64_t word, int64_t encoding) except? 0xFFFFFFFFFFFFFFFF
    cdef list _guests(self)
