"""The ``fifo`` strategy's queue: FREE IDs in the order they became FREE.

The queue is an insertion-ordered dict, so the whole range's answer (its
head) and every push and removal cost O(1). An allocation limited to
``[lo, hi]`` wants the queue's first ID *inside* the range; walking the
queue to it would pay for every FREE ID outside, which with a narrow device
and a large space is most of the space. So on the first such query the queue
also numbers its IDs (``seq``: the order they joined) and keeps the smallest
number of every group of 64 IDs, of every group of 64 groups, and so on up to
one (the same shape as the ID space's summaries). The first ID in ``[lo, hi]``
is then the smallest number in the range: two partial groups and the groups
between them at each level, O(64 log64 N). A push sets its ID's number (the
largest yet, so it changes a group's minimum only where the group was empty);
a removal recomputes the minimum of the groups whose minimum it was.

The compiled core keeps the same structure (``pasid/_fifo.pxi``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

__all__ = ["FifoQueue"]

_EMPTY = 1 << 64          # the "number" of an ID not in the queue: above every real one


class FifoQueue:
    """FREE IDs of ``0 .. capacity-1`` in the order they became FREE."""

    __slots__ = ("capacity", "order", "seq", "mins", "next_seq", "next_front")

    capacity: int
    order: OrderedDict[int, None]
    seq: list[int] | None
    mins: list[list[int]]
    next_seq: int
    next_front: int

    def __init__(self, capacity: int, ids: Iterable[int] = ()) -> None:
        self.capacity = capacity
        self.order = OrderedDict.fromkeys(ids)   # the queue: its order is FIFO order
        self.seq = None                   # built by the first ranged query
        self.mins = []                    # with seq: the group minima, level by level
        self.next_seq = 0                 # the next number for the tail (increasing)
        self.next_front = -1              # the next number for the head (decreasing)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def push(self, p: int) -> None:
        """``p`` became FREE: it joins the tail. O(1); O(log64 N) with the summaries."""
        self.order[p] = None
        if self.seq is not None:
            s = self.seq[p] = self.next_seq
            self.next_seq += 1
            for level in self.mins:
                p >>= 6
                if level[p] != _EMPTY:
                    break
                level[p] = s

    def push_front(self, p: int) -> None:
        """``p`` joins the head (undoing a removal of the head). O(log64 N) with the summaries."""
        self.order[p] = None
        self.order.move_to_end(p, last=False)
        if self.seq is not None:
            s = self.seq[p] = self.next_front
            self.next_front -= 1
            for level in self.mins:
                p >>= 6
                level[p] = s        # the smallest number yet, everywhere above

    def remove(self, p: int) -> None:
        """``p`` leaves the queue (allocated or reserved). O(1); O(64 log64 N) with the summaries."""
        del self.order[p]
        if self.seq is not None:
            s = self.seq[p]
            self.seq[p] = _EMPTY
            below = self.seq
            for level in self.mins:
                p >>= 6
                if level[p] != s:
                    break
                level[p] = min(below[p << 6:(p + 1) << 6])
                below = level

    def first(self, lo: int, hi: int) -> int:
        """The first ID of the queue in ``[lo, hi]``, or -1."""
        if lo == 0 and hi == self.capacity - 1:
            return next(iter(self.order), -1)
        if self.seq is None:
            self._build()
        s, index = self._min(0, lo, hi)
        return index if s != _EMPTY else -1

    def _build(self) -> None:
        """Number the queue's IDs in order and compute every group's minimum. O(N)."""
        self.seq = seq = [_EMPTY] * self.capacity
        for number, p in enumerate(self.order):
            seq[p] = number
        self.next_seq = len(self.order)
        self.next_front = -1
        self.mins = []
        below = seq
        while len(below) > 1:
            level = [min(below[g:g + 64]) for g in range(0, len(below), 64)]
            self.mins.append(level)
            below = level

    def _level(self, k: int) -> list[int]:
        assert self.seq is not None     # the ranged queries run after _build
        return self.seq if k == 0 else self.mins[k - 1]

    def _min(self, k: int, lo: int, hi: int) -> tuple[int, int]:
        """(smallest number, its level-0 ID) over entries ``lo..hi`` of level ``k``."""
        values = self._level(k)
        if lo >> 6 == hi >> 6 or k == len(self.mins):
            best = min(range(lo, hi + 1), key=values.__getitem__)
            return values[best], self._descend(k, best)
        left_end = (lo | 63)
        right_start = hi & ~63
        candidates = [min(range(lo, left_end + 1), key=values.__getitem__),
                      min(range(right_start, hi + 1), key=values.__getitem__)]
        best = min(candidates, key=values.__getitem__)
        found = (values[best], self._descend(k, best))
        if (lo >> 6) + 1 <= (hi >> 6) - 1:
            middle = self._min(k + 1, (lo >> 6) + 1, (hi >> 6) - 1)
            if middle[0] < found[0]:
                found = middle
        return found

    def _descend(self, k: int, index: int) -> int:
        """The level-0 ID holding the minimum of entry ``index`` of level ``k``."""
        s = self._level(k)[index]
        if s == _EMPTY:
            return -1
        while k > 0:
            k -= 1
            below = self._level(k)
            start = index << 6
            index = below.index(s, start, start + 64)
        return index

    def _check(self, free: set[int]) -> None:
        """The queue holds exactly ``free``; the summaries, if built, agree with it."""
        if set(self.order) != free:
            raise AssertionError("fifo queue != FREE set")
        if self.seq is None:
            return
        numbers = [self.seq[p] for p in self.order]
        if numbers != sorted(numbers) or any(
                self.seq[p] != _EMPTY for p in range(self.capacity) if p not in free):
            raise AssertionError("fifo numbers disagree with the queue order")
        below = self.seq
        for level in self.mins:
            if level != [min(below[g:g + 64]) for g in range(0, len(below), 64)]:
                raise AssertionError("fifo summary disagrees with the level below")
            below = level
