"""The replay loop in C, over the compiled allocator's C-level API.

The twin of ``pasid/sim/_replay_py.py``: the same walk over a trace and the
same bookkeeping (see there), with the loop, the trace columns and the
bookkeeping arrays in C and one call through pasid's table of functions per
operation (``pasid/capi.pxd``, as any simulator in Cython uses it: each
entry takes the allocator's critical section and keeps its counters like the
Python methods). The ACTIVE and DRAINING + QUARANTINED counts are read from
the allocator itself. It also looks ahead: the PASID of the operation eight
on (when that operation names an allocated handle) is prefetched, its lines
in cache when its turn comes (a hint: nothing read or changed).
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t

from pasid.capi cimport import_pasid_capi, pasid_allocator_t, pasid_capi_t

from pasid import _state
from pasid.sim import trace as _trace

# the state codes of pasid/_state.py, as C constants (checked at import)
cdef enum:
    FREE = 0
    ACTIVE = 2
    DRAINING = 3
    QUARANTINED = 4

from pasid.sim._opcodes cimport ACCESS, ADVANCE, ALLOC, BIND, EXIT, GET, PUT, UNBIND

from pasid.sim import _tracerules as _rules

_rules.check_op_codes("pasid.sim._replay", (ALLOC, GET, PUT, BIND, UNBIND, ACCESS, EXIT, ADVANCE))
if (FREE, ACTIVE, DRAINING, QUARANTINED) != (
        _state.FREE, _state.ACTIVE, _state.DRAINING, _state.QUARANTINED):
    raise ImportError("pasid.sim._replay: state codes differ from pasid._state")

cdef const pasid_capi_t* api = import_pasid_capi()

cdef extern from *:
    """
    #define REPLAY_PREFETCH(p) __builtin_prefetch((const void*)(p), 1, 3)
    """
    void REPLAY_PREFETCH(const void* p) noexcept nogil

# How many operations ahead the loop asks for a PASID's lines (``api.prefetch`` and its own
# ``last_release``): a PASID of the random strategy lies anywhere in the space, its lines
# out of cache; eight operations (about a microsecond) cover a miss to memory.
cdef enum:
    LOOKAHEAD = 8


def run(allocator, trace, st, Py_ssize_t start, Py_ssize_t stop):
    """Replay operations ``start..stop-1`` of ``trace`` on ``allocator`` (the compiled
    PasidAllocator: TypeError otherwise), updating ``st``.

    The columns are the caller's: each value is read once into a local and the
    local is checked before it indexes a table (handle, owner, device, the
    operation code), so a trace changed after it was checked gives a
    TraceError, never a read or write outside the tables."""
    cdef pasid_allocator_t* a = api.allocator(allocator)
    cdef const double[::1] times = trace.time
    cdef const uint8_t[::1] ops = trace.op
    cdef const int32_t[::1] handles = trace.handle
    cdef const int32_t[::1] owner_ids = trace.owner
    cdef const int32_t[::1] device_ids = trace.device
    cdef const int32_t[::1] device_handle = st.device_handle
    cdef const int64_t[::1] limit = st.row_limit
    cdef int32_t[::1] pasid = st.pasid
    cdef uint32_t[::1] generation = st.generation
    cdef double[::1] last_release = st.last_release
    cdef int32_t[::1] block_live = st.block_live
    cdef double[::1] distances = st.distances
    cdef const double[::1] sample_at = st.sample_at
    cdef int64_t[::1] sample_active = st.sample_active
    cdef int64_t[::1] sample_held = st.sample_held
    cdef int64_t[::1] sample_blocks = st.sample_blocks
    cdef int64_t[::1] counters = st.counters
    cdef Py_ssize_t nsamples = sample_at.shape[0]
    cdef Py_ssize_t nhandles = min(<Py_ssize_t>st.handles, pasid.shape[0], generation.shape[0])
    cdef bint keep_distances = st.keep_distances
    cdef Py_ssize_t nowners = st.owners
    cdef Py_ssize_t ndevices = device_handle.shape[0], room = distances.shape[0]

    cdef int64_t done = counters[0], allocations = counters[1], failures = counters[2]
    cdef int64_t skipped = counters[3], stale = counters[4], peak_active = counters[5]
    cdef int64_t peak_held = counters[6], blocks_live = counters[7], blocks_peak = counters[8]
    cdef int64_t highest = counters[9], ndistances = counters[10], k = counters[11]
    cdef int64_t active = 0, held = 0
    cdef Py_ssize_t i, j
    cdef double t, now = api.now(a)
    cdef int op, before, after
    cdef int32_t h, o, d, h2
    cdef int64_t p2
    cdef Py_ssize_t nrelease = last_release.shape[0]
    cdef int64_t p
    cdef list released

    if stop > times.shape[0] or stop > limit.shape[0] or start < 0 or start > stop:
        raise IndexError(f"operations {start}..{stop} outside the trace's {times.shape[0]}")
    try:
        for i in range(start, stop):
            t = times[i]
            if t > now:
                api.advance(a, t)
                now = t
            if i + LOOKAHEAD < stop:             # a hint, checked as an index like any
                h2 = handles[i + LOOKAHEAD]
                if ops[i + LOOKAHEAD] != ALLOC and 0 <= h2 < nhandles:
                    p2 = pasid[h2]
                    if 0 <= p2 < nrelease:
                        api.prefetch(a, p2)
                        REPLAY_PREFETCH(&last_release[p2])
            op = ops[i]
            h = handles[i]
            o = owner_ids[i]
            d = device_ids[i]
            if (op > ADVANCE or (op != ADVANCE and op != EXIT and not 0 <= h < nhandles)
                    or (op == EXIT and o < 0) or o >= nowners
                    or ((op == BIND or op == UNBIND) and not 0 <= d < ndevices)):
                raise _trace.TraceError(
                    f"operation {i} (op {op}, handle {h}, owner {o}, device {d}) is outside "
                    f"the trace's tables: was the trace changed after it was checked?")
            if op == ALLOC:
                p = api.alloc(a, o if o >= 0 else None, 0, limit[i])
                if p < 0:
                    pasid[h] = -1
                    failures += 1
                else:
                    pasid[h] = <int32_t>p
                    generation[h] = <uint32_t>api.generation(a, p)
                    allocations += 1
                    if keep_distances and last_release[p] >= 0:
                        if ndistances == room:      # a handle allocated twice
                            raise _trace.TraceError(
                                f"operation {i} allocates handle {h} again: was the trace "
                                f"changed after it was checked?")
                        distances[ndistances] = t - last_release[p]
                        ndistances += 1
                    if p > highest:
                        highest = p
                    if block_live[p >> 6] == 0:
                        blocks_live += 1
                        if blocks_live > blocks_peak:
                            blocks_peak = blocks_live
                    block_live[p >> 6] += 1
            elif op == EXIT:
                released = api.exit_owner(a, o)
                for j in range(len(released)):
                    p = <int64_t>released[j]
                    last_release[p] = t
                    if api.state(a, p) != DRAINING:
                        block_live[p >> 6] -= 1
                        if block_live[p >> 6] == 0:
                            blocks_live -= 1
            elif op != ADVANCE:              # every other op names a handle
                p = pasid[h]
                if p < 0:
                    skipped += 1
                elif op == PUT:
                    after = api.put(a, p)
                    if after != ACTIVE:
                        last_release[p] = t
                        if after != DRAINING:
                            block_live[p >> 6] -= 1
                            if block_live[p >> 6] == 0:
                                blocks_live -= 1
                elif op == GET:
                    api.get(a, p)
                elif op == BIND:
                    api.bind(a, p, device_handle[d])
                elif op == UNBIND:
                    before = api.state(a, p)
                    after = api.unbind(a, p, device_handle[d])
                    if before == DRAINING and after != DRAINING:
                        block_live[p >> 6] -= 1
                        if block_live[p >> 6] == 0:
                            blocks_live -= 1
                elif op == ACCESS:
                    if <uint32_t>api.generation(a, p) != generation[h]:
                        stale += 1
            done += 1
            active = api.count(a, ACTIVE)
            held = api.count(a, DRAINING) + api.count(a, QUARANTINED)
            if active > peak_active:
                peak_active = active
            if held > peak_held:
                peak_held = held
            while k < nsamples and t >= sample_at[k]:
                sample_active[k] = active
                sample_held[k] = held
                sample_blocks[k] = blocks_live
                k += 1
    finally:
        counters[0] = done
        counters[1] = allocations
        counters[2] = failures
        counters[3] = skipped
        counters[4] = stale
        counters[5] = peak_active
        counters[6] = peak_held
        counters[7] = blocks_live
        counters[8] = blocks_peak
        counters[9] = highest
        counters[10] = ndistances
        counters[11] = k
        counters[12] = api.count(a, ACTIVE)
        counters[13] = api.count(a, DRAINING) + api.count(a, QUARANTINED)
