"""The ID space of the pure PasidAllocator: which IDs are FREE, found fast.

A 64-ary summary hierarchy over 64-bit words, the same shape as the compiled
core's (``pasid/_idspace.pxi``) so a reader can move between them by name:

- ``words[0]`` are the leaf words: bit ``i`` of word ``w`` set means ID
  ``64*w + i`` is FREE;
- ``words[k]`` (k >= 1) are summaries: bit ``i`` of word ``w`` set means word
  ``64*w + i`` of level ``k-1`` is non-zero (has a FREE ID below it);
- ``counts[k]`` (k >= 1) hold the number of FREE IDs under each word of level
  ``k``, so the k-th FREE ID (the ``random`` strategy) is found without a scan.

The lowest FREE ID at or above ``lo`` costs one masked word test per level on
the way up and one count-trailing-zeros per level on the way down:
O(log64 N) whatever the occupancy. Unlike the compiled core the pure space is
dense (the allocator's space is at most 2**20 IDs).
"""

from __future__ import annotations

__all__ = ["IdSpace"]

_ALL = (1 << 64) - 1


def _ctz(word: int) -> int:
    """Index of the lowest set bit of a non-zero int."""
    return (word & -word).bit_length() - 1


class IdSpace:
    """The FREE set of ``capacity`` IDs; every ID starts FREE."""

    __slots__ = ("capacity", "words", "counts")

    capacity: int
    words: list[list[int]]
    counts: list[list[int]]          # counts[0] is empty: the leaves count themselves

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        words: list[list[int]] = []
        n = capacity
        level_words: list[int] = []
        # leaf words: bits beyond capacity stay clear forever
        nwords = (n + 63) >> 6
        leaf = [_ALL] * nwords
        if n & 63:
            leaf[-1] = (1 << (n & 63)) - 1
        words.append(leaf)
        level_words = leaf
        while len(level_words) > 1:
            nwords = (len(level_words) + 63) >> 6
            summary = [0] * nwords
            for i, w in enumerate(level_words):
                if w:
                    summary[i >> 6] |= 1 << (i & 63)
            words.append(summary)
            level_words = summary
        self.words = words
        counts: list[list[int]] = [[]]
        for k in range(1, len(words)):
            span = 1 << (6 * (k + 1))  # IDs under one word of level k
            nw = len(words[k])
            counts.append([min(span, n - i * span) for i in range(nw)])
        self.counts = counts

    def is_free(self, pasid: int) -> bool:
        """True if ``pasid`` is FREE. O(1)."""
        return bool(self.words[0][pasid >> 6] >> (pasid & 63) & 1)

    def take(self, pasid: int) -> None:
        """Mark a FREE ``pasid`` taken. O(log64 N): summaries change only on a word's transition to zero."""
        words = self.words
        counts = self.counts
        index = pasid
        clear = True
        for k in range(len(words)):
            if k:
                counts[k][pasid >> (6 * (k + 1))] -= 1
            if clear:
                level = words[k]
                w = index >> 6
                level[w] &= ~(1 << (index & 63))
                clear = level[w] == 0
                index = w

    def release(self, pasid: int) -> None:
        """Mark a taken ``pasid`` FREE. O(log64 N): summaries change only when a word was zero."""
        words = self.words
        counts = self.counts
        index = pasid
        setbit = True
        for k in range(len(words)):
            if k:
                counts[k][pasid >> (6 * (k + 1))] += 1
            if setbit:
                level = words[k]
                w = index >> 6
                setbit = level[w] == 0
                level[w] |= 1 << (index & 63)
                index = w

    def find_free(self, lo: int, hi: int) -> int:
        """The lowest FREE ID in ``[lo, hi]``, or -1. O(log64 N)."""
        if lo > hi:
            return -1
        words = self.words
        index = lo
        k = 0
        top = len(words)
        # climb: the first level whose word, masked below ``index``, has a bit
        while True:
            level = words[k]
            w = index >> 6
            if w >= len(level):
                return -1
            word = level[w] & (_ALL << (index & 63))
            if word:
                index = (w << 6) + _ctz(word)
                break
            k += 1
            if k == top:
                return -1
            index = w + 1
        # descend: the lowest set bit at every level below
        while k:
            k -= 1
            index = (index << 6) + _ctz(words[k][index])
        return index if index <= hi else -1

    def rank(self, x: int) -> int:
        """How many FREE IDs are below ``x``. O(64 log64 N)."""
        words = self.words
        counts = self.counts
        total = 0
        for k in range(len(words) - 1, 0, -1):
            # whole words of level k before the one holding x, within its parent word
            span_bits = 6 * (k + 1)
            w = x >> span_bits
            first = (w >> 6) << 6
            total += sum(counts[k][first:w])
        leaf = words[0]
        w = x >> 6
        first = (w >> 6) << 6
        for i in range(first, w):
            total += leaf[i].bit_count()
        if w < len(leaf):
            total += (leaf[w] & ((1 << (x & 63)) - 1)).bit_count()
        return total

    def select(self, r: int) -> int:
        """The FREE ID of rank ``r`` (0-based, ascending). O(64 log64 N)."""
        words = self.words
        counts = self.counts
        index = 0
        for k in range(len(words) - 1, 0, -1):
            level_counts = counts[k]
            index <<= 6
            while True:
                c = level_counts[index]
                if r < c:
                    break
                r -= c
                index += 1
        leaf = words[0]
        index <<= 6
        while True:
            c = leaf[index].bit_count()
            if r < c:
                break
            r -= c
            index += 1
        word = leaf[index]
        for _ in range(r):
            word &= word - 1
        return (index << 6) + _ctz(word)

    def count_free(self, lo: int, hi: int) -> int:
        """How many FREE IDs are in ``[lo, hi]``. O(64 log64 N)."""
        return self.rank(hi + 1) - self.rank(lo)

    def _check(self) -> None:
        """Verify that every summary bit and count agrees with the level below."""
        words = self.words
        for k in range(1, len(words)):
            below = words[k - 1]
            for i, w in enumerate(below):
                bit = words[k][i >> 6] >> (i & 63) & 1
                if bit != (w != 0):
                    raise AssertionError(f"summary level {k} bit {i} disagrees")
            span = 1 << (6 * (k + 1))
            for j, c in enumerate(self.counts[k]):
                lo = j * span
                hi = min(self.capacity, lo + span)
                actual = sum(
                    words[0][i].bit_count() for i in range(lo >> 6, (hi + 63) >> 6)
                )
                if actual != c:
                    raise AssertionError(f"count level {k} word {j}: {c} != {actual}")
