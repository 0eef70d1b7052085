"""Batches of the pure PasidAllocator: alloc_many's fill and its undoing, free_many.

The twin of ``pasid/_batch.pxi`` (whose loops run in C, without the GIL from
65,536 IDs on; here the lock is held throughout).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from pasid import _args, _messages
from pasid._callbacks import Teardown, run_teardown
from pasid._errors import StateError
from pasid._state import ACTIVE, FREE
from pasid.pure.owners import _Owner
from pasid.pure.release import release, teardown_of

if TYPE_CHECKING:
    from pasid.pure.allocator import PasidAllocator

__all__ = ["batch_fill", "batch_unfill", "free_many_in"]

_STATE_NAMES = _args.STATE_NAMES

COUNT_MAX = _args.COUNT_MAX


def batch_fill(a: PasidAllocator, out: npt.NDArray[np.uint32], owner: _Owner | None, data: object) -> None:
    """Allocate ``len(out)`` PASIDs by the strategy into ``out`` (there are that many
    FREE); all undone and OverflowError if one has been allocated COUNT_MAX times."""
    rng, cursor = a._rng.state, a._cursor
    hi = a._size - 1
    taken: list[int] = []
    for i in range(len(out)):
        p = a._choose(0, hi)
        if a._generation[p] == COUNT_MAX:
            for q in reversed(taken):
                batch_unfill(a, q, owner)
            a._rng.state, a._cursor = rng, cursor
            raise OverflowError(_messages.generation_limit())
        a._activate(p, owner, data)
        taken.append(p)
        out[i] = p
    if a._counts[ACTIVE] > a._high_water:
        a._high_water = a._counts[ACTIVE]


def batch_unfill(a: PasidAllocator, p: int, owner: _Owner | None) -> None:
    """Undo an allocation of :func:`batch_fill`: the fifo queue gets ``p`` back at its head."""
    a._space.release(p)
    if a._fifo is not None:
        a._fifo.push_front(p)
    a._counts[ACTIVE] -= 1
    a._counts[FREE] += 1
    a._state[p] = FREE
    a._refcount[p] = 0
    a._generation[p] -= 1
    a._data.pop(p, None)
    a._allocations -= 1
    if owner is not None:
        del a._owner_of[p]
        owner.use -= 1
        owner.active.discard(p)


# ---------------------------------------------------------------- the phases of a batch


def free_many_in(a: PasidAllocator, pasids: list[int]) -> None:
    """The phases of free_many over ``pasids`` (checked, the caller's copy): all or
    nothing, released in the order successive frees would release them."""
    reading = a._reading()
    teardown: Teardown = []
    with a._lock:
        now = a._time(reading)
        a._settle_time(now)
        refcount = a._refcount
        state = a._state
        last = [False] * len(pasids)            # where successive frees would release
        for i, p in enumerate(pasids):
            if state[p] != ACTIVE or refcount[p] == 0:
                for q in pasids[:i]:
                    refcount[q] += 1
                name = "ACTIVE, already freed" if state[p] == ACTIVE else _STATE_NAMES[state[p]]
                raise StateError(_messages.not_active("free", p, name))
            refcount[p] -= 1
            last[i] = refcount[p] == 0
        for i, p in enumerate(pasids):
            if last[i]:
                release(a, p, now)
        for i, p in enumerate(pasids):
            if last[i]:
                teardown_of(a, p, teardown)
    if a._gone or a._graveyard:
        a._after()
    if teardown:
        run_teardown(teardown)
