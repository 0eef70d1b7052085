"""The replay loop in Python: one public-API call per operation.

The twin of ``pasid/sim/_replay.pyx`` (the compiled loop, used with the
compiled allocator): the same walk over a trace, the same bookkeeping, the
same results. This one runs on either backend; it is the fallback when the
allocator is ``pasid.pure.PasidAllocator`` and the per-call baseline the
compiled loop is measured against. ``pasid.sim.replay`` chooses between them.

The bookkeeping (see :class:`pasid.sim._replaystate.ReplayState` for the fields):
per handle its PASID and generation; per PASID the time of its last release
(for reuse distances); per 64-PASID block how many of its PASIDs are ACTIVE or
DRAINING (for the PASID-table blocks in use); the ACTIVE and
DRAINING + QUARANTINED counts (here tracked from what each call returns; the
compiled twin reads the allocator's own counts, so the two check each other).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pasid._state import ACTIVE, DRAINING, FREE
from pasid.sim.trace import (
    OP_ACCESS, OP_ADVANCE, OP_ALLOC, OP_BIND, OP_EXIT, OP_GET, OP_PUT, OP_UNBIND,
)

if TYPE_CHECKING:
    from pasid.sim._replaystate import ReplayState, _Allocator
    from pasid.sim.chunk import Chunk


def run(a: _Allocator, trace: Chunk, st: ReplayState, start: int, stop: int) -> None:
    """Replay operations ``start..stop-1`` of ``trace`` (a chunk) on allocator ``a``, updating
    ``st``."""
    times = trace.time[start:stop].tolist()
    ops = trace.op[start:stop].tolist()
    handles = trace.handle[start:stop].tolist()
    owner_ids = trace.owner[start:stop].tolist()
    device_ids = trace.device[start:stop].tolist()
    devices = st.device_keys
    limit = st.row_limit[start:stop].tolist()
    pasid = st.pasid.tolist()
    generation = st.generation.tolist()
    last_release = st.last_release.tolist()
    block_live = st.block_live.tolist()
    sample_at = st.sample_at.tolist()
    nsamples = len(sample_at)
    distances: list[float] = []
    keep_distances = st.keep_distances
    samples: list[tuple[int, int, int]] = []    # (active, held, blocks in use)
    (done, allocations, failures, skipped, stale, peak_active, peak_held, blocks_live,
     blocks_peak, highest, ndistances, k, active, held) = st.counters.tolist()
    try_alloc, get, put, state = a.try_alloc, a.get, a.put, a.state
    bind, unbind, gen_of, advance = a.bind, a.unbind, a.generation, a.advance
    now = a.now

    # What the operations did is written back also when one raises (the finally),
    # as the compiled twin writes its counters: the state says how far the chunk got.
    try:
        for t, op, h, o, d, most in zip(times, ops, handles, owner_ids, device_ids, limit):
            if t > now:
                held -= advance(to=t)
                now = t
            if op == OP_ALLOC:
                p = try_alloc(o if o >= 0 else None, max=most)
                if p is None:
                    pasid[h] = -1
                    failures += 1
                else:
                    pasid[h] = p
                    generation[h] = gen_of(p) & 0xFFFFFFFF
                    allocations += 1
                    active += 1
                    if keep_distances and last_release[p] >= 0:
                        distances.append(t - last_release[p])
                    if p > highest:
                        highest = p
                    if block_live[p >> 6] == 0:
                        blocks_live += 1
                        if blocks_live > blocks_peak:
                            blocks_peak = blocks_live
                    block_live[p >> 6] += 1
            elif op == OP_EXIT or (op == OP_PUT and pasid[h] >= 0):
                # what may release: an owner's exit, a put of a handle that has a PASID
                if op == OP_EXIT:
                    released = a.exit_owner(o)
                else:
                    p = pasid[h]
                    put(p)
                    released = [p]
                for p in released:
                    after = state(p)
                    if after == ACTIVE:         # a put that left a reference
                        continue
                    active -= 1
                    last_release[p] = t
                    if after != FREE:
                        held += 1
                    if after != DRAINING:
                        block_live[p >> 6] -= 1
                        if block_live[p >> 6] == 0:
                            blocks_live -= 1
            elif op != OP_ADVANCE:              # every other op names a handle
                p = pasid[h]
                if p < 0:
                    skipped += 1
                elif op == OP_GET:
                    get(p)
                elif op == OP_BIND:
                    bind(p, devices[d])
                elif op == OP_UNBIND:
                    before = state(p)
                    unbind(p, devices[d])
                    if before == DRAINING:
                        after = state(p)
                        if after != DRAINING:
                            if after == FREE:
                                held -= 1
                            block_live[p >> 6] -= 1
                            if block_live[p >> 6] == 0:
                                blocks_live -= 1
                elif op == OP_ACCESS:
                    if gen_of(p) & 0xFFFFFFFF != generation[h]:
                        stale += 1
            done += 1
            if active > peak_active:
                peak_active = active
            if held > peak_held:
                peak_held = held
            while k < nsamples and t >= sample_at[k]:
                samples.append((active, held, blocks_live))
                k += 1
    finally:
        st.pasid[:] = pasid
        st.generation[:] = generation
        st.last_release[:] = last_release
        st.block_live[:] = block_live
        st.distances[ndistances:ndistances + len(distances)] = distances
        ndistances += len(distances)
        first = k - len(samples)
        if samples:
            st.sample_active[first:k] = [s[0] for s in samples]
            st.sample_held[first:k] = [s[1] for s in samples]
            st.sample_blocks[first:k] = [s[2] for s in samples]
        st.counters[:] = (done, allocations, failures, skipped, stale, peak_active, peak_held,
                          blocks_live, blocks_peak, highest, ndistances, k, active, held)
