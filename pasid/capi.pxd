# pasid's public C-level API, for simulators written in Cython: a versioned table of
# functions, found at import, that promises functions and never the class layout.
#
#     from pasid.capi cimport pasid_capi_t, pasid_allocator_t, import_pasid_capi
#
#     cdef const pasid_capi_t* api = import_pasid_capi()   # once, when the module loads
#
#     def churn(allocator, const int64_t[::1] victims):
#         cdef pasid_allocator_t* a = api.allocator(allocator)   # TypeError unless compiled
#         ...
#         api.put(a, victims[i])
#         p = api.alloc(a, None, 0, hi)
#
# As CPython's datetime C API and numpy.random's bit generators do: the compiled core,
# pasid._core, fills one struct of function pointers and exports it in a capsule,
# ``pasid._core._C_API``; this file declares the struct and the helper that fetches
# and checks it. A module built against this file cimports nothing of pasid._core,
# so pasid may add fields and private methods to its classes without breaking it.
#
# The version rule. ``PASID_CAPI_VERSION`` below is the version of the table this
# file declares. A release that adds entries appends them to the end of the struct
# and raises the version; no entry is ever removed, reordered, or changed in its
# signature or meaning. The table carries the version and the size (sizeof) of the
# struct it was built with; ``import_pasid_capi`` refuses (ImportError) a table older
# or smaller than the one the caller was built against, and takes a newer one as it
# is (the caller reads only the entries it knows). A change that cannot keep the
# rule would export a capsule of another name, so that modules built against this
# one stop at import with a clear error instead of calling the wrong function.
#
# Each entry does what the Python method of the same name does (its checks, its
# counters, its critical section), in C integers and doubles; the error convention
# of each is in its declaration, and Cython propagates it with no extra code in the
# caller:
#   ``except -1`` / ``except -2``: that value means an exception is set (misuse:
#       StateError, InvalidPasid, ValueError as the Python method raises them);
#   ``except? -1.0``: -1.0 with an exception set (the caller checks PyErr_Occurred);
#   ``except NULL`` and ``object`` returns: NULL with an exception set.
# The allocations answer like the VT-d virtual command: the PASID (or ``n``), or -1
# when no PASID is available (nothing FREE in the range, ``p`` taken, the owner at
# its quota); -1 there is a result, not an error (hence ``except -2``).
#
# The GIL. Every entry must be called with the GIL held (none is ``nogil``, unlike
# numpy's bitgen_t): they may raise, take owners (any hashable Python object, None
# for none) and may run user code (a callable clock, an owner's ``__eq__``, teardown
# callbacks). ``alloc_many`` and ``free_many`` let the GIL go inside for their C
# loops from 65,536 IDs on, holding the allocator's gate meanwhile (any other call on
# that allocator waits).
#
# The handles. ``api.allocator(obj)``, ``api.ida(obj)`` and ``api.guest(obj)`` check
# that ``obj`` is the compiled class (TypeError otherwise: the pure backend's objects
# have no C API) and return it as an opaque pointer. The pointer borrows the object: keep ``obj``
# alive while it is used (an argument of the running function is). Devices are named
# by the int ``add_device`` returns. States are the values of ``pasid.State``:
# FREE 0, RESERVED 1, ACTIVE 2, DRAINING 3, QUARANTINED 4.

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef extern from *:
    """
    /* Opaque: a compiled pasid.PasidAllocator / IDA / GuestSpace object, borrowed. The tags
       are the structs Cython gives these objects in pasid._core, where they are
       complete: there each entry's type is exactly that of the method it points to.
       Here they stay incomplete; only pasid._core reads what they point to. */
    typedef struct __pyx_obj_5pasid_5_core_PasidAllocator pasid_allocator_t;
    typedef struct __pyx_obj_5pasid_5_core_IDA pasid_ida_t;
    typedef struct __pyx_obj_5pasid_5_core_GuestSpace pasid_guest_t;
    """
    ctypedef struct pasid_allocator_t
    ctypedef struct pasid_ida_t
    ctypedef struct pasid_guest_t

cdef enum:
    PASID_CAPI_VERSION = 3     # the table declared below; appended entries raise it

# ``vcmd``'s ``encoding``: the register layout, the index of pasid._vcmd.LAYOUTS[name]
# (whose docstring has each layout's fields and the Linux driver's macros they come from)
cdef enum:
    PASID_VCMD_31 = 0          # "3.1": VT-d 3.1's layout (Linux v5.7-v5.14)
    PASID_VCMD_33 = 1          # "3.3": VT-d 3.3's layout (Linux v5.15-v6.3)

ctypedef struct pasid_capi_t:
    # ---- version 1
    int64_t version            # the PASID_CAPI_VERSION the exporting pasid was built with
    int64_t size               # sizeof(pasid_capi_t) there: no entry lies beyond it

    # the handles: TypeError unless ``obj`` is the compiled class
    pasid_allocator_t* (*allocator)(object obj) except NULL
    pasid_ida_t* (*ida)(object obj) except NULL

    # PasidAllocator, as the Python method of the same name:
    # by the strategy in lo..hi: the PASID; -1 when nothing there is FREE or the owner
    # is at its quota (a counted failure). InvalidPasid for a range empty or outside.
    int64_t (*alloc)(pasid_allocator_t* a, object owner, int64_t lo, int64_t hi) except -2
    # exactly p: p; -1 when p is not FREE or the owner is at its quota (that refusal
    # counted, as alloc_exact counts it). InvalidPasid outside the space.
    int64_t (*alloc_exact)(pasid_allocator_t* a, int64_t p, object owner) except -2
    # n PASIDs into out[0:n], all or nothing: n; -1 (a counted failure, nothing taken)
    # when fewer are FREE or past the quota. ValueError for n < 0.
    int64_t (*alloc_many)(pasid_allocator_t* a, uint32_t* out, int64_t n,
                          object owner) except -2
    # free ids[0:n], all or nothing: 0. StateError on a double free, InvalidPasid for
    # an ID outside the space (nothing changed).
    int (*free_many)(pasid_allocator_t* a, const uint32_t* ids, int64_t n) except -1
    # one more reference to ACTIVE p: 0. StateError otherwise.
    int (*get)(pasid_allocator_t* a, int64_t p) except -1
    # drop one reference (``free``; the last releases): p's state after, ACTIVE while
    # references remain, else DRAINING, QUARANTINED or FREE. StateError if not ACTIVE.
    int (*put)(pasid_allocator_t* a, int64_t p) except -1
    # bind ACTIVE p to the device with that handle (counted per pair): 0. StateError.
    int (*bind)(pasid_allocator_t* a, int64_t p, int device) except -1
    # the device with that handle has drained p: p's state after. StateError.
    int (*unbind)(pasid_allocator_t* a, int64_t p, int device) except -1
    # release every ACTIVE PASID of owner: a list of them, ascending. ValueError for None.
    object (*exit_owner)(pasid_allocator_t* a, object owner)
    # the logical clock to ``to``, reclaiming: how many became FREE. ValueError for a
    # callable clock or a time in the past.
    int64_t (*advance)(pasid_allocator_t* a, double to) except -1
    # the current time (a callable clock's reading, held at its highest)
    double (*now)(pasid_allocator_t* a) except? -1.0
    # the earliest release_at waiting; NaN when nothing is QUARANTINED
    double (*next_release_time)(pasid_allocator_t* a) except? -1.0
    # p's state, 0..4
    int (*state)(pasid_allocator_t* a, int64_t p) except -1
    # how many times p has been allocated
    int64_t (*generation)(pasid_allocator_t* a, int64_t p) except -1
    # how many PASIDs are in ``state`` (0..4; ValueError otherwise)
    int64_t (*count)(pasid_allocator_t* a, int state) except -1

    # IDA: the lowest free ID in lo..hi (hi capped at 2**31 - 1), taken; -1 when there
    # is none. InvalidPasid for a negative bound.
    int64_t (*ida_alloc)(pasid_ida_t* ida, int64_t lo, int64_t hi) except -2
    # free an allocated ID: 0. StateError if not allocated, InvalidPasid outside.
    int (*ida_free)(pasid_ida_t* ida, int64_t id) except -1
    # whether ``id`` (any int64) is allocated; never fails
    bint (*ida_exists)(pasid_ida_t* ida, int64_t id) noexcept

    # ---- version 2: guests (pasid.GuestSpace, SPEC §7), as the GuestSpace method of the
    # same meaning. A removed VM: StateError from each, as from its methods.

    # the handle: TypeError unless ``obj`` is the compiled GuestSpace
    pasid_guest_t* (*guest)(object obj) except NULL
    # the virtual command register (``vcmd``): the response word to ``word`` in the
    # layout ``encoding`` (PASID_VCMD_31 / PASID_VCMD_33; ValueError otherwise). A bad
    # word is answered with a status and changes nothing: never an exception for it.
    uint64_t (*vcmd)(pasid_guest_t* vm, uint64_t word, int encoding) except? 0xFFFFFFFFFFFFFFFF
    # a guest PASID tagged ``owner`` (``try_alloc``): -1 when none is available (nothing
    # FREE in the guest or its host range, or the VM at its quota: a counted failure)
    int64_t (*guest_alloc)(pasid_guest_t* vm, object owner) except -2
    # drop one reference to guest PASID g (``free``; the last releases its host PASID):
    # 0. StateError unless ACTIVE in the guest, InvalidPasid outside 0 .. 2**bits - 1.
    int (*guest_free)(pasid_guest_t* vm, int64_t g) except -1
    # the host PASID behind guest PASID g (``host_pasid``): -1 when g is not ACTIVE in
    # the guest (no exception). InvalidPasid outside 0 .. 2**bits - 1.
    int64_t (*guest_to_host)(pasid_guest_t* vm, int64_t g) except -2
    # the guest PASID of host PASID h (``guest_pasid``): -1 when h is not one of the
    # VM's ACTIVE host PASIDs (no exception). InvalidPasid outside the host's space.
    int64_t (*host_to_guest)(pasid_guest_t* vm, int64_t h) except -2

    # ---- version 3
    # a hint that an operation on p comes soon: the lines of p's per-PASID tables (its
    # slot, owner links, bindings, hold time) asked of the memory now, as the CPU's
    # prefetch instruction asks (nothing read into the caller, nothing changed, no
    # error: a p outside the space is ignored). A simulator that knows its next
    # operations (a trace, a queue) calls it a few operations ahead, so that the misses
    # of a PASID spread over a large space overlap with work (pasid/sim/_replay.pyx:
    # eight ahead). Costs a call and up to six prefetches; worth it only where p's
    # lines are out of cache.
    void (*prefetch)(pasid_allocator_t* a, int64_t p) noexcept

    # ---- version 4 and later: appended here


cdef inline const pasid_capi_t* import_pasid_capi() except NULL:
    """The table of the pasid this process imports: ImportError if there is none
    (no compiled core) or it is older or smaller than the one this module was built
    against. Call it once, when the module loads; the table lives as long as the
    process (it is static data of pasid._core, which is never unloaded)."""
    cdef const pasid_capi_t* api
    try:
        from pasid import _core
        capsule = _core._C_API
    except (ImportError, AttributeError) as error:
        raise ImportError(f"pasid's C API (pasid._core._C_API) is not available: {error}. "
                          f"It needs the compiled core of pasid 0.2 or later.") from error
    api = <const pasid_capi_t*>PyCapsule_GetPointer(capsule, "pasid._core._C_API")
    if api.version < PASID_CAPI_VERSION or api.size < <int64_t>sizeof(pasid_capi_t):
        raise ImportError(
            f"pasid's C API is version {api.version} ({api.size} bytes), older than the "
            f"version {<int>PASID_CAPI_VERSION} ({sizeof(pasid_capi_t)} bytes) this module "
            f"was built against: upgrade pasid, or rebuild the module against this one")
    return api
