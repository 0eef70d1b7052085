"""The release queue and reclaim of the pure PasidAllocator.

A released PASID waits in the queue (QUARANTINED) until its release_at, then
becomes FREE; what happens at a release (DRAINING, QUARANTINED or FREE at
once) and the teardown callbacks it owes. The twin of ``pasid/_release.pxi``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pasid._callbacks import Teardown
from pasid._state import ACTIVE, DRAINING, FREE, QUARANTINED
from pasid.pure.owners import owner_untag

if TYPE_CHECKING:
    from pasid.pure.allocator import PasidAllocator

__all__ = ["ReleaseQueue", "make_free", "reclaim", "release", "settle", "teardown_of"]


class ReleaseQueue:
    """The QUARANTINED PASIDs by release_at: a heap of (release_at, PASID) entries.

    The twin of the compiled ``ReleaseQueue`` struct and its ``release_*``
    functions (a binary heap in two C arrays).

    >>> q = ReleaseQueue([(5.0, 3), (2.0, 7)])
    >>> q.next(), q.due(2.0), q.pop(), len(q)
    (2.0, True, 7, 1)
    """

    __slots__ = ("_heap",)

    def __init__(self, entries: Iterable[tuple[float, int]] = ()) -> None:
        self._heap = list(entries)
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def entries(self) -> list[tuple[float, int]]:
        """The (release_at, PASID) entries, in heap order (for checks and snapshots)."""
        return list(self._heap)

    def due(self, now: float) -> bool:
        """True if the earliest entry's release_at is at or before ``now``. O(1)."""
        return bool(self._heap) and self._heap[0][0] <= now

    def next(self) -> float | None:
        """The earliest release_at waiting, or None. O(1)."""
        return self._heap[0][0] if self._heap else None

    def push(self, release_at: float, p: int) -> None:
        """Add ``(release_at, p)``. O(log n)."""
        heapq.heappush(self._heap, (release_at, p))

    def pop(self) -> int:
        """Take the earliest (release_at, PASID) out; its PASID. O(log n)."""
        return heapq.heappop(self._heap)[1]

    def check(self) -> str | None:
        """None if the entries are a heap by (release_at, PASID); else what is wrong."""
        heap = self._heap
        for i in range(1, len(heap)):
            if heap[(i - 1) // 2] > heap[i]:
                return "release queue is not a heap"
        return None


# ---------------------------------------------------------------- reclaim


def make_free(a: PasidAllocator, p: int) -> None:
    """A PASID whose release is complete becomes FREE; its tags go."""
    counts = a._counts
    counts[a._state[p]] -= 1
    counts[FREE] += 1
    a._state[p] = FREE
    a._space.release(p)
    if a._fifo is not None:
        a._fifo.push(p)
    a._refcount[p] = 0
    a._hold.pop(p, None)
    if p in a._owner_of:
        owner_untag(a, p)
    data = a._data.pop(p, None)
    if data is not None:
        a._graveyard.append(data)       # dropped in phase 3: its finalizer may call back


def reclaim(a: PasidAllocator, now: float) -> int:
    """Every QUARANTINED PASID whose release_at <= now becomes FREE, ascending."""
    expired = []
    while a._queue.due(now):
        expired.append(a._queue.pop())
    expired.sort()
    for p in expired:
        make_free(a, p)
    a._reclaimed += len(expired)
    return len(expired)


def settle(a: PasidAllocator, p: int, now: float) -> None:
    """A released PASID with no device bound: QUARANTINED until release_at, or FREE."""
    release_at = a._hold[p]
    if release_at <= now:
        make_free(a, p)
        a._reclaimed += 1
    else:
        counts = a._counts
        counts[a._state[p]] -= 1
        counts[QUARANTINED] += 1
        a._state[p] = QUARANTINED
        a._queue.push(release_at, p)


def release(a: PasidAllocator, p: int, now: float) -> None:
    """An ACTIVE PASID is released: DRAINING, QUARANTINED or FREE."""
    a._releases += 1
    a._refcount[p] = 0
    owner = a._owner_of.get(p)
    if owner is not None:
        owner.active.discard(p)
        if owner.guest is not None:
            owner.guest._unmap(p)                # a VM's: its guest PASID goes now
    release_at = now + a._grace
    if a._hold.get(p, release_at) > release_at:
        release_at = a._hold[p]
    a._hold[p] = release_at
    if p in a._bindings:
        counts = a._counts
        counts[ACTIVE] -= 1
        counts[DRAINING] += 1
        a._state[p] = DRAINING
    else:
        settle(a, p, now)


def teardown_of(a: PasidAllocator, p: int, teardown: Teardown) -> Teardown:
    """Phase 3: the ``(on_teardown, p)`` of the devices bound to a PASID just
    released, in bind order, appended to ``teardown``."""
    for handle in a._bindings.get(p, ()):
        info = a._device_list[handle]
        if info is not None and info.on_teardown is not None:
            teardown.append((info.on_teardown, p))
    return teardown
