# cython: language_level=3
"""Two simulator inner loops over pasid's C-level API (``pasid/capi.pxd``).

A simulator written in Cython cimports the table's declarations from
``pasid.capi``, fetches the table once when it loads, and calls its entries: C
integers and doubles in and out, no Python int created per call, each call with
the same checks, counters and critical section as the Python method of the same
name. A PASID taken through ``api.alloc`` is an ordinary PASID: ``stats()``,
``state()``, snapshots see it like any other. Nothing of the allocator's class
is cimported, so this module keeps working when pasid is rebuilt with fields or
methods added to it (only an older pasid's table is refused, at import).

* :func:`churn`: the W1 churn pair (SPEC §6), ``put(victim)`` then
  ``alloc(None, 0, size - 1)``, over an array of victims.
* :func:`lifecycle`: the W6 lifecycle, ``alloc``, ``bind`` x2, ``put``,
  ``unbind`` x2, ``advance(now + 1)``, on an allocator with a logical clock
  (grace 1 and two devices of drain 0.5 in the benchmark).
* :func:`vcmd_churn`: a guest driver's virtual command loop on a VM (a
  ``GuestSpace``, SPEC §7): ALLOC, then FREE of the PASID the response carries,
  through ``api.vcmd``, the response decoded with the register layout's fields.
* :func:`guest_churn`: a VM's PASIDs through ``guest_alloc``/``guest_free``, each
  translated both ways (``guest_to_host``, ``host_to_guest``) while held.
* :func:`batch`, :func:`exact`, :func:`generation`, :func:`next_release`,
  :func:`ida_churn`, :func:`alloc_put`, :func:`prefetch` and the guests' one-call
  functions: the other entry points (``alloc_exact``, ``generation``,
  ``next_release_time``, the ``IDA``'s ``ida_alloc``/``ida_free``/``ida_exists``, ...).

Every function takes the allocator (or IDA, or GuestSpace) as a Python object
and asks the table for its handle first: TypeError unless it is the compiled class.

Build: ``python build.py`` (see README.md in this folder).
"""

from libc.math cimport isnan
from libc.stdint cimport int64_t, uint32_t, uint64_t

from pasid.capi cimport (PASID_VCMD_31, PASID_VCMD_33, import_pasid_capi, pasid_allocator_t,
                         pasid_capi_t, pasid_guest_t, pasid_ida_t)

from pasid import PasidExhausted

# the values of pasid.State, as C constants
cdef enum:
    FREE = 0
    ACTIVE = 2

# pasid's table, fetched once (ImportError here if the pasid imported is too old)
cdef const pasid_capi_t* api = import_pasid_capi()


def churn(allocator, const int64_t[::1] victims):
    """For each ``v`` of ``victims``: ``put(v)``, then ``alloc(None, 0, size - 1)``.

    Every victim must hold a reference when its turn comes (a victim freed
    twice raises StateError, as ``free`` would). Returns the last PASID
    allocated (-1 for no victims); PasidExhausted if an allocation finds
    nothing FREE (with grace 0 and no device bound, the victim just freed is
    FREE, so it never does). O(len(victims) log64 N).
    """
    cdef pasid_allocator_t* a = api.allocator(allocator)
    cdef Py_ssize_t i
    cdef int64_t p = -1
    cdef int64_t hi = (<int64_t>1 << <int>allocator.bits) - 1
    for i in range(victims.shape[0]):
        api.put(a, victims[i])
        p = api.alloc(a, None, 0, hi)
        if p < 0:
            raise PasidExhausted(f"churn pair {i}: no FREE PASID after freeing {victims[i]}")
    return p


def lifecycle(allocator, int device0, int device1, Py_ssize_t cycles):
    """``cycles`` x (alloc, bind both devices, put, unbind both, advance the clock by 1).

    ``device0``/``device1`` are the handles ``add_device`` returned; the
    allocator has a logical clock. With grace <= 1 and drains <= 1 each cycle's
    PASID is FREE again after its advance. Returns ``(last PASID, PASIDs the
    advances reclaimed, PASIDs left ACTIVE by the cycles)``: with grace 1 and
    drains 0.5, ``(p, cycles, 0)``. PasidExhausted if an allocation finds
    nothing FREE. O(cycles log64 N).
    """
    cdef pasid_allocator_t* a = api.allocator(allocator)
    cdef Py_ssize_t i
    cdef int64_t p = -1, reclaimed = 0, left_active = 0
    cdef int64_t hi = (<int64_t>1 << <int>allocator.bits) - 1
    cdef double now = api.now(a)
    for i in range(cycles):
        p = api.alloc(a, None, 0, hi)
        if p < 0:
            raise PasidExhausted(f"lifecycle {i}: no FREE PASID")
        api.bind(a, p, device0)
        api.bind(a, p, device1)
        if api.put(a, p) == ACTIVE:     # the last reference, so never ACTIVE after
            left_active += 1
        api.unbind(a, p, device0)
        api.unbind(a, p, device1)
        now += 1.0
        reclaimed += api.advance(a, now)
    return p, reclaimed, left_active


def counts(allocator):
    """``count`` of each state, FREE..QUARANTINED: a 5-tuple (the stats() counts)."""
    cdef pasid_allocator_t* a = api.allocator(allocator)
    return tuple(api.count(a, state) for state in range(5))


def batch(allocator, uint32_t[::1] out, object owner=None):
    """``alloc_many`` into ``out`` (all of it), then ``free_many`` of the same IDs
    if ``owner`` is None. Returns what ``alloc_many`` returned: ``len(out)``, or
    -1 when fewer were FREE or the owner was at its quota."""
    cdef pasid_allocator_t* a = api.allocator(allocator)
    cdef int64_t n = out.shape[0]
    cdef int64_t got = api.alloc_many(a, &out[0] if n else NULL, n, owner)
    if got >= 0 and owner is None:
        api.free_many(a, &out[0] if n else NULL, n)
    return got


def free_many(allocator, uint32_t[::1] ids):
    """``free_many`` of ``ids``: as the Python method, all or nothing."""
    cdef pasid_allocator_t* a = api.allocator(allocator)
    cdef int64_t n = ids.shape[0]
    return api.free_many(a, &ids[0] if n else NULL, n)


def exact(allocator, int64_t p, object owner=None):
    """``alloc_exact(p, owner)``: ``p``, or -1 when ``p`` is not FREE or the owner is
    at its quota."""
    return api.alloc_exact(api.allocator(allocator), p, owner)


def generation(allocator, int64_t p):
    """``generation(p)``: how many times ``p`` has been allocated."""
    return api.generation(api.allocator(allocator), p)


def next_release(allocator):
    """``next_release_time()``, with NaN (nothing QUARANTINED) as None."""
    cdef double t = api.next_release_time(api.allocator(allocator))
    return None if isnan(t) else t


def ida_churn(ida_object, Py_ssize_t n):
    """``n`` x (``ida_alloc(0, 2**31 - 1)``, ``ida_free`` of it), then one ``ida_alloc``
    in an empty range: returns (the last ID, whether it still exists, that -1)."""
    cdef pasid_ida_t* ida = api.ida(ida_object)
    cdef Py_ssize_t i
    cdef int64_t p = -1
    for i in range(n):
        p = api.ida_alloc(ida, 0, 2147483647)
        api.ida_free(ida, p)
    return p, api.ida_exists(ida, p), api.ida_alloc(ida, 5, 4)


def alloc_put(allocator, Py_ssize_t n):
    """``n`` x (``alloc(None, 0, size - 1)``, ``put`` of it): the host's own pair, the
    baseline of :func:`vcmd_churn`. Returns the last PASID (-1 for ``n`` = 0);
    PasidExhausted if an allocation finds nothing FREE."""
    cdef pasid_allocator_t* a = api.allocator(allocator)
    cdef Py_ssize_t i
    cdef int64_t p = -1
    cdef int64_t hi = (<int64_t>1 << <int>allocator.bits) - 1
    for i in range(n):
        p = api.alloc(a, None, 0, hi)
        if p < 0:
            raise PasidExhausted(f"pair {i}: no FREE PASID")
        api.put(a, p)
    return p


# ---------------------------------------------------------------- guests (version 2)

# The virtual command register as the guest's driver knows it: the command word's
# fields and the response's, in the two VT-d layouts (pasid._vcmd.LAYOUTS has them
# and cites the Linux driver's VCMD_* macros; the table only says which layout).
cdef enum:
    VCMD_ALLOC = 1                  # VCMD_CMD_ALLOC
    VCMD_FREE = 2                   # VCMD_CMD_FREE
    VCMD_IN_PROGRESS = 0x1          # VCMD_VRSP_IP
    VCMD_PASID_MASK = 0xFFFFF       # the operand and the result: 20 bits

cdef struct Layout:
    int operand_shift               # VCMD_CMD_OPERAND
    int status_shift                # VCMD_VRSP_SC
    uint64_t status_mask
    int result_shift                # VCMD_VRSP_RESULT_PASID
    uint64_t success                # the status code of a success

cdef Layout LAYOUT_31 = Layout(8, 1, 0x3, 8, 0)
cdef Layout LAYOUT_33 = Layout(16, 1, 0x7F, 16, 0)


cdef inline uint64_t status_of(uint64_t response, const Layout* layout) noexcept:
    return (response >> layout.status_shift) & layout.status_mask


def vcmd_churn(vm, Py_ssize_t n, int encoding=PASID_VCMD_33):
    """``n`` x (ALLOC through the virtual command; FREE of the guest PASID its
    response carries), in the layout ``encoding`` (PASID_VCMD_31 = 0 or
    PASID_VCMD_33 = 1; ValueError from the first call otherwise).

    An ALLOC answered "no PASID available" is counted and its FREE skipped.
    Returns ``(the last guest PASID freed or -1, ALLOCs refused)``;
    RuntimeError if a FREE is not answered with success (it always is: the
    PASID was just given). O(n log64 N).
    """
    cdef pasid_guest_t* g = api.guest(vm)
    cdef const Layout* layout = &LAYOUT_33 if encoding == PASID_VCMD_33 else &LAYOUT_31
    cdef Py_ssize_t i
    cdef uint64_t response
    cdef int64_t pasid, last = -1, refused = 0
    for i in range(n):
        response = api.vcmd(g, VCMD_ALLOC, encoding)
        if (response & VCMD_IN_PROGRESS) or status_of(response, layout) != layout.success:
            refused += 1
            continue
        pasid = <int64_t>((response >> layout.result_shift) & VCMD_PASID_MASK)
        response = api.vcmd(g, VCMD_FREE | (<uint64_t>pasid << layout.operand_shift), encoding)
        if (response & VCMD_IN_PROGRESS) or status_of(response, layout) != layout.success:
            raise RuntimeError(f"FREE of guest PASID {pasid} answered {response:#x}")
        last = pasid
    return last, refused


def guest_churn(vm, Py_ssize_t n, Py_ssize_t hold=8, object owner=None):
    """``n`` x ``guest_alloc(vm, owner)``, keeping the last ``hold`` (1..64) guest
    PASIDs: once ``hold`` are held, each new one frees the oldest
    (``guest_free``). Each is translated to its host PASID and back
    (``guest_to_host``, ``host_to_guest``; RuntimeError if that is not the same
    PASID). An allocation answered -1 (the VM's quota, nothing FREE) is counted.

    Returns ``(the last guest PASID allocated or -1, allocations refused, the
    sum of the host PASIDs seen)``; the last ``hold`` stay allocated.
    O(n log64 N).
    """
    cdef pasid_guest_t* g = api.guest(vm)
    cdef int64_t ring[64]
    cdef Py_ssize_t i, held = 0, oldest = 0
    cdef int64_t pasid, host, last = -1, refused = 0, host_sum = 0
    if not 1 <= hold <= 64:
        raise ValueError(f"hold must be in 1..64, not {hold}")
    for i in range(n):
        pasid = api.guest_alloc(g, owner)
        if pasid < 0:
            refused += 1
            continue
        host = api.guest_to_host(g, pasid)
        if host < 0 or api.host_to_guest(g, host) != pasid:
            raise RuntimeError(f"guest PASID {pasid} does not translate back through {host}")
        host_sum += host
        last = pasid
        if held == hold:
            api.guest_free(g, ring[oldest])
            ring[oldest] = pasid
            oldest = (oldest + 1) % hold
        else:
            ring[held] = pasid
            held += 1
    return last, refused, host_sum


def vcmd(vm, uint64_t word, int encoding=PASID_VCMD_33):
    """One ``api.vcmd``: the response word."""
    return api.vcmd(api.guest(vm), word, encoding)


def guest_alloc(vm, object owner=None):
    """One ``api.guest_alloc``: the guest PASID, or -1."""
    return api.guest_alloc(api.guest(vm), owner)


def guest_free(vm, int64_t pasid):
    """One ``api.guest_free``: 0."""
    return api.guest_free(api.guest(vm), pasid)


def guest_to_host(vm, int64_t pasid):
    """One ``api.guest_to_host``: the host PASID, or -1."""
    return api.guest_to_host(api.guest(vm), pasid)


def host_to_guest(vm, int64_t pasid):
    """One ``api.host_to_guest``: the guest PASID, or -1."""
    return api.host_to_guest(api.guest(vm), pasid)


def prefetch(allocator, int64_t pasid):
    """One ``api.prefetch`` (version 3): a hint, nothing changed; None."""
    api.prefetch(api.allocator(allocator), pasid)
