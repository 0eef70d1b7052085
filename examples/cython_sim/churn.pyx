# cython: language_level=3
"""Two simulator inner loops over pasid's C-level API (``pasid/_core.pxd``).

A simulator written in Cython cimports the compiled allocator's class and calls
its ``c_*`` methods: C integers and doubles in and out, no Python int created
per call, each call with the same checks, counters and critical section as the
Python method of the same name. A PASID taken through ``c_alloc`` is an
ordinary PASID: ``stats()``, ``state()``, snapshots see it like any other.

* :func:`churn`: the W1 churn pair (SPEC §6), ``c_put(victim)`` then
  ``c_alloc(None, 0, size - 1)``, over an array of victims.
* :func:`lifecycle`: the W6 lifecycle, ``c_alloc``, ``c_bind`` x2, ``c_put``,
  ``c_unbind`` x2, ``c_advance(now + 1)``, on an allocator with a logical
  clock (grace 1 and two devices of drain 0.5 in the benchmark).
* :func:`batch`, :func:`exact`, :func:`generation`, :func:`next_release`,
  :func:`ida_churn`: the batch entry points, ``c_alloc_exact``,
  ``c_generation``, ``c_next_release_time`` and the ``IDA``'s
  ``c_alloc``/``c_free``/``c_exists``.

Build: ``python build.py`` (see README.md in this folder).
"""

from libc.math cimport isnan
from libc.stdint cimport int64_t, uint32_t

from pasid._core cimport IDA, PasidAllocator

from pasid import PasidExhausted

# the values of pasid.State, as C constants
cdef enum:
    FREE = 0
    ACTIVE = 2


def churn(PasidAllocator allocator, const int64_t[::1] victims):
    """For each ``v`` of ``victims``: ``c_put(v)``, then ``c_alloc(None, 0, size - 1)``.

    Every victim must hold a reference when its turn comes (a victim freed
    twice raises StateError, as ``free`` would). Returns the last PASID
    allocated (-1 for no victims); PasidExhausted if an allocation finds
    nothing FREE (with grace 0 and no device bound, the victim just freed is
    FREE, so it never does). O(len(victims) log64 N).
    """
    cdef Py_ssize_t i
    cdef int64_t p = -1
    cdef int64_t hi = (<int64_t>1 << <int>allocator.bits) - 1
    for i in range(victims.shape[0]):
        allocator.c_put(victims[i])
        p = allocator.c_alloc(None, 0, hi)
        if p < 0:
            raise PasidExhausted(f"churn pair {i}: no FREE PASID after freeing {victims[i]}")
    return p


def lifecycle(PasidAllocator allocator, int device0, int device1, Py_ssize_t cycles):
    """``cycles`` x (alloc, bind both devices, put, unbind both, advance the clock by 1).

    ``device0``/``device1`` are the handles ``add_device`` returned; the
    allocator has a logical clock. With grace <= 1 and drains <= 1 each cycle's
    PASID is FREE again after its advance. Returns ``(last PASID, PASIDs the
    advances reclaimed, PASIDs left ACTIVE by the cycles)``: with grace 1 and
    drains 0.5, ``(p, cycles, 0)``. PasidExhausted if an allocation finds
    nothing FREE. O(cycles log64 N).
    """
    cdef Py_ssize_t i
    cdef int64_t p = -1, reclaimed = 0, left_active = 0
    cdef int64_t hi = (<int64_t>1 << <int>allocator.bits) - 1
    cdef double now = allocator.c_now()
    for i in range(cycles):
        p = allocator.c_alloc(None, 0, hi)
        if p < 0:
            raise PasidExhausted(f"lifecycle {i}: no FREE PASID")
        allocator.c_bind(p, device0)
        allocator.c_bind(p, device1)
        if allocator.c_put(p) == ACTIVE:     # the last reference, so never ACTIVE after
            left_active += 1
        allocator.c_unbind(p, device0)
        allocator.c_unbind(p, device1)
        now += 1.0
        reclaimed += allocator.c_advance(now)
    return p, reclaimed, left_active


def counts(PasidAllocator allocator):
    """``c_count`` of each state, FREE..QUARANTINED: a 5-tuple (the stats() counts)."""
    return tuple(allocator.c_count(state) for state in range(5))


def batch(PasidAllocator allocator, uint32_t[::1] out, object owner=None):
    """``c_alloc_many`` into ``out`` (all of it), then ``c_free_many`` of the same IDs
    if ``owner`` is None. Returns what ``c_alloc_many`` returned: ``len(out)``, or
    -1 when fewer were FREE or the owner was at its quota."""
    cdef int64_t n = out.shape[0]
    cdef int64_t got = allocator.c_alloc_many(&out[0] if n else NULL, n, owner)
    if got >= 0 and owner is None:
        allocator.c_free_many(&out[0] if n else NULL, n)
    return got


def free_many(PasidAllocator allocator, uint32_t[::1] ids):
    """``c_free_many`` of ``ids``: as ``free_many``, all or nothing."""
    cdef int64_t n = ids.shape[0]
    return allocator.c_free_many(&ids[0] if n else NULL, n)


def exact(PasidAllocator allocator, int64_t p, object owner=None):
    """``c_alloc_exact(p, owner)``: ``p``, or -1 when ``p`` is not FREE or the owner is
    at its quota."""
    return allocator.c_alloc_exact(p, owner)


def generation(PasidAllocator allocator, int64_t p):
    """``c_generation(p)``: how many times ``p`` has been allocated."""
    return allocator.c_generation(p)


def next_release(PasidAllocator allocator):
    """``c_next_release_time()``, with NaN (nothing QUARANTINED) as None."""
    cdef double t = allocator.c_next_release_time()
    return None if isnan(t) else t


def ida_churn(IDA ida, Py_ssize_t n):
    """``n`` x (``c_alloc(0, 2**31 - 1)``, ``c_free`` of it), then one ``c_alloc`` in
    an empty range: returns (the last ID, whether it still exists, that -1)."""
    cdef Py_ssize_t i
    cdef int64_t p = -1
    for i in range(n):
        p = ida.c_alloc(0, 2147483647)
        ida.c_free(p)
    return p, ida.c_exists(p), ida.c_alloc(5, 4)
