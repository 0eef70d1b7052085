"""The ID space of the pure backend: which IDs are free, found fast.

The twin of ``pasid/_idspace.pxi`` and its reference: the same radix tree, the
same operations under the same names (``space_X(space, ...)`` there is
:meth:`IdSpace.X` here, ``node_X`` is :func:`node_X`) and the same invariant
check (``_check_node``, ``_check_hint``).

A node of height h covers 2**(12 + 6h) IDs in 64 slots. A leaf (h = 0) holds
64 bitmap words (bit set = the ID is free); an inner node holds 64 children,
``None`` meaning "every ID below is free" (children are made when an ID below
is first taken and dropped again when all below is free, so memory follows
use, not the range). Every node carries summaries:

- ``free_mask``: bit i set, slot i has a free ID below it;
- ``used_mask``: bit i set, slot i has a taken ID below it;
- ``nfree``: free IDs under the node (for rank and select).

The lowest free ID at or above ``lo`` is one masked word test per level and
one count-trailing-zeros per level on the way down: O(log64 N) whatever the
occupancy. The tree is only as tall as the largest ID taken needs (a new root
grows above the old one; :meth:`IdSpace.clear` resets it): everything beyond
the root's span is free, and so is every ID at or above the capacity that was
never taken. Callers bound every search by their own ``hi``. The lowest free
ID is what most allocations want, so the space keeps a hint: ``low_leaf``, a
leaf with every ID below it taken, and ``low_base``, its first ID.

Where the twins differ, and why (Python pays for every call, object and loop
that C does not):

- A 64-bit word is a Python int kept within 64 bits (a complement is taken
  against ``ALL``); ``ctz64(x)`` is written ``(x & -x).bit_length() - 1``,
  ``popcount64(x)`` is ``x.bit_count()`` and ``slot_shift(h)`` is ``6 + 6 * h``.
  A node is a :class:`Node`; running out of memory raises MemoryError where
  the pxi returns -1 (``take_lowest`` still returns -1 where the lowest free
  ID lies under a missing node, as the pxi's does, for the same general way).
- :meth:`IdSpace.take` and :meth:`IdSpace.release` make the pxi's updates
  in one pass down from the root (the pxi records the path on the way down,
  ``space_leaf``/``space_find_leaf``, and updates it on the way up,
  ``leaf_take_bits`` + ``space_path_take``/``space_release_path``): the same
  counts and masks, each set where it changes. :func:`node_find_free` is the
  pxi's recursion as loops. The pxi's hint also keeps the path to its leaf
  (``low_path``) so taking there needs no descent; here
  :meth:`IdSpace.take_lowest` takes by :meth:`IdSpace.take`, and
  :meth:`IdSpace.lowest_leaf` looks up the leaf of the lowest free ID
  (:meth:`IdSpace.find_leaf`, ``space_find_leaf`` without a path).
- The compiled core's batch paths have no twin (``space_taken_leaf``,
  ``space_release_gathered``/``Gather``, ``space_path_take`` on its own): the
  pure allocator takes and frees one ID at a time. :meth:`IdSpace.find_free`
  takes the caller's ``hi`` as an option, and :meth:`IdSpace.count_free` is
  the two ranks the pxi's callers subtract.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IdSpace", "Node"]

LEAF_SHIFT = 12          # log2 of the IDs under one leaf
ALL = (1 << 64) - 1      # a 64-bit word with every bit set


class Node:
    """A node of height h: 64 slots over 2**(12 + 6h) IDs (``Node``, ``node_new``)."""

    __slots__ = ("free_mask", "used_mask", "nfree", "slot")

    free_mask: int           # bit i: slot i has a free ID below it
    used_mask: int           # bit i: slot i has a taken ID below it
    nfree: int               # free IDs under this node
    slot: list[Any]          # leaf: bitmap words (1 = free); inner: Node or None (all free)

    def __init__(self, height: int) -> None:
        """A node with every ID free."""
        self.free_mask = ALL
        self.used_mask = 0
        self.nfree = 1 << (LEAF_SHIFT + 6 * height)
        self.slot = [ALL] * 64 if height == 0 else [None] * 64


def node_lowest_free(node: Node, height: int, base: int) -> int:
    """The lowest free ID under a node whose free_mask is not zero."""
    while height > 0:
        mask = node.free_mask
        i = (mask & -mask).bit_length() - 1
        base += i << (6 + 6 * height)
        child = node.slot[i]
        if child is None:
            return base
        node = child
        height -= 1
    mask = node.free_mask
    i = (mask & -mask).bit_length() - 1
    word: int = node.slot[i]
    return base + (i << 6) + (word & -word).bit_length() - 1


def node_find_free(node: Node, height: int, base: int, lo: int) -> int:
    """The lowest free ID >= lo under ``node`` (covering base.., lo below its end), or -1.

    The pxi's recursion as loops. Down the slots holding ``lo`` while they have
    a free ID: to ``lo`` itself (under a missing node) or to the first free bit
    from ``lo`` in its word. Where that stops short, the answer is the lowest
    free ID of the first free slot after ``lo``'s, on the node where it stopped
    or else on the nearest one up the way (a second walk down finds it).
    """
    if lo < base:
        lo = base
    top, top_height = node, height
    while height:
        i = (lo >> (6 + 6 * height)) & 63
        if not (node.free_mask >> i) & 1:
            break
        child = node.slot[i]
        if child is None:
            return lo
        node = child
        height -= 1
    else:
        i = (lo >> 6) & 63
        mask: int = node.slot[i] >> (lo & 63)          # the word from lo on
        if mask:
            return lo + (mask & -mask).bit_length() - 1
    if not node.free_mask >> (i + 1):
        stopped = height
        after: Node | None = None
        node, height = top, top_height
        while height > stopped:
            i = (lo >> (6 + 6 * height)) & 63
            if node.free_mask >> (i + 1):
                after, after_height = node, height
            node = node.slot[i]
            height -= 1
        if after is None:
            return -1
        node, height = after, after_height
        i = (lo >> (6 + 6 * height)) & 63
    shift = 6 + 6 * height
    mask = node.free_mask >> (i + 1)
    i += (mask & -mask).bit_length()                    # the first free slot after lo's
    base = (lo >> (shift + 6) << (shift + 6)) + (i << shift)
    if height == 0:
        word: int = node.slot[i]
        return base + (word & -word).bit_length() - 1
    child = node.slot[i]
    if child is None:
        return base
    return node_lowest_free(child, height - 1, base)


def node_find_used(node: Node, height: int, base: int, lo: int) -> int:
    """The lowest taken ID >= lo under ``node``, or -1."""
    shift = 6 + 6 * height
    offset = lo - base if lo > base else 0
    i = offset >> shift
    if height == 0:
        mask: int = (node.slot[i] ^ ALL) & (ALL << (offset & 63))
        if mask:
            return base + (i << 6) + (mask & -mask).bit_length() - 1
    elif (node.used_mask >> i) & 1:
        found = node_find_used(node.slot[i], height - 1, base + (i << shift), lo)
        if found >= 0:
            return found
    mask = node.used_mask & (ALL << (i + 1))         # none after slot 63
    while mask:
        i = (mask & -mask).bit_length() - 1
        if height == 0:
            word: int = node.slot[i] ^ ALL
            return base + (i << 6) + (word & -word).bit_length() - 1
        found = node_find_used(node.slot[i], height - 1, base + (i << shift), 0)
        if found >= 0:
            return found
        mask &= mask - 1
    return -1


class IdSpace:
    """Which of the IDs 0, 1, 2, ... are free; every ID starts free.

    ``capacity`` is what the caller addresses (the space does not bound it).

    >>> space = IdSpace(1 << 20)
    >>> for p in (0, 1, 2, 5000):
    ...     space.take(p)
    >>> space.find_free(0), space.find_free(5000), space.height, space.nodes
    (3, 5001, 1, 3)
    >>> space.take_lowest(10), space.rank(10), space.select(0)
    (3, 6, 4)
    >>> space.release(5000); space.nodes       # its leaf, all free again, is dropped
    2
    >>> space._check()
    """

    __slots__ = ("root", "height", "capacity", "nodes", "low_leaf", "low_base")

    root: Node
    height: int              # the root covers 2**(12 + 6*height) IDs
    capacity: int            # IDs 0 .. capacity-1 are addressable
    nodes: int               # nodes in the tree
    low_leaf: Node | None    # the hint: a leaf with every ID below it taken, or None
    low_base: int            # that leaf's first ID

    def __init__(self, capacity: int) -> None:
        """An all-free space of ``capacity`` IDs, one leaf to start (``space_init``)."""
        self.height = 0
        self.capacity = capacity
        self.nodes = 1
        self.low_leaf = None
        self.low_base = 0
        self.root = Node(0)

    def span(self) -> int:
        """The IDs under the root; every ID from here on is free."""
        return 1 << (LEAF_SHIFT + 6 * self.height)

    def grow(self) -> None:
        """Put a root one level taller above the current one."""
        old = self.root
        root = Node(self.height + 1)
        if old.used_mask == 0:
            self.nodes -= 1             # nothing taken below: the old root is the same as None
        else:
            root.slot[0] = old
            root.used_mask = 1
            root.nfree -= self.span() - old.nfree
            if old.free_mask == 0:
                root.free_mask &= ~1
        self.root = root
        self.height += 1
        self.nodes += 1
        self.low_leaf = None            # (the pxi's: the path it keeps has a new top)

    def clear(self) -> None:
        """Free every ID (and every node but a fresh root)."""
        self.root = Node(0)
        self.height = 0
        self.nodes = 1
        self.low_leaf = None

    def find_free(self, lo: int, hi: int | None = None) -> int:
        """The lowest free ID >= lo (may exceed the capacity: bound it). O(log64 N).

        With ``hi`` (the pure allocator's call), -1 when that ID is above ``hi``.
        """
        span = 1 << (LEAF_SHIFT + 6 * self.height)
        if lo >= span:
            found = lo
        elif lo <= 0:
            if self.root.free_mask == 0:
                found = span
            else:
                found = node_lowest_free(self.root, self.height, 0)
        else:
            found = node_find_free(self.root, self.height, 0, lo)
            if found < 0:
                found = span
        if hi is not None and found > hi:
            return -1
        return found

    def find_used(self, lo: int) -> int:
        """The lowest taken ID >= lo, or -1. O(log64 N) per node with a taken ID."""
        if lo >= self.span():
            return -1
        return node_find_used(self.root, self.height, 0, lo)

    def take_lowest(self, hi: int) -> int:
        """Take the lowest free ID if it is <= hi and return it.

        -2: the lowest free ID is above ``hi`` (nothing taken); -1: taking it
        needs a new node, nothing taken (the caller takes the general way,
        :meth:`find_free` + :meth:`take`). While the hint's leaf has a free ID,
        that is the one; else a descent from the root finds it and makes its
        leaf the hint. O(log64 N).
        """
        base = self.lowest(hi)
        if base >= 0:
            self.take_hinted(base)
        return base

    def lowest(self, hi: int) -> int:
        """:meth:`take_lowest` without the taking: the lowest free ID if it is <= hi,
        its leaf made the hint, so that :meth:`take_hinted` takes it with nothing made
        (a caller that must do something that may fail first: a guest allocation takes
        its host PASID between the two). -2 and -1 as there. O(log64 N)."""
        node = self.low_leaf
        if node is None or node.free_mask == 0:
            node = self.lowest_leaf()
            if node is None:
                return -2 if self.find_free(0) > hi else -1
        mask = node.free_mask
        i = (mask & -mask).bit_length() - 1
        word: int = node.slot[i]
        base = self.low_base + (i << 6) + (word & -word).bit_length() - 1
        return -2 if base > hi else base

    def take_hinted(self, pasid: int) -> None:
        """Take the ID :meth:`lowest` just gave, the space unchanged since (its leaf is
        the hint's: nothing to make). O(log64 N)."""
        self.take(pasid)

    def lowest_leaf(self) -> Node | None:
        """The leaf of the lowest free ID, made the hint; None (the hint cleared) when
        no ID is free under the root or the lowest lies under a missing node."""
        self.low_leaf = None
        if self.root.free_mask == 0:
            return None
        base = node_lowest_free(self.root, self.height, 0) >> LEAF_SHIFT << LEAF_SHIFT
        leaf = self.find_leaf(base)
        if leaf is not None:
            self.low_leaf = leaf
            self.low_base = base
        return leaf

    def find_leaf(self, pasid: int) -> Node | None:
        """The leaf holding ``pasid`` (below the span), or None when it lies under a
        missing node. O(log64 N)."""
        node: Node | None = self.root
        height = self.height
        while height > 0 and node is not None:
            node = node.slot[(pasid >> (6 + 6 * height)) & 63]
            height -= 1
        return node

    def take(self, pasid: int) -> None:
        """Take the free ``pasid``, making missing nodes on the way. O(log64 N): the
        summaries change only on a word's (a slot's) transition."""
        while pasid >= 1 << (LEAF_SHIFT + 6 * self.height):
            self.grow()
        node = self.root
        height = self.height
        while height > 0:
            i = (pasid >> (6 + 6 * height)) & 63
            node.nfree -= 1
            child = node.slot[i]
            if child is None:
                child = node.slot[i] = Node(height - 1)
                node.used_mask |= 1 << i    # (a child kept has a taken ID: its bit is set)
                self.nodes += 1
            if child.nfree == 1:
                node.free_mask &= ~(1 << i)     # the child's last free ID goes
            node = child
            height -= 1
        w = (pasid >> 6) & 63
        word = node.slot[w] & ~(1 << (pasid & 63))
        node.slot[w] = word
        node.nfree -= 1
        node.used_mask |= 1 << w
        if word == 0:
            node.free_mask &= ~(1 << w)

    def release(self, pasid: int, bits: int = 0, n: int = 1) -> None:
        """Free the taken ``pasid`` (``space_release``); with ``bits``, the ``n`` taken
        ``bits`` of the word holding it (``space_release_bits``, also by that name).
        A node left all free is dropped, with the path below it (its other slots are
        None already). O(log64 N)."""
        if not bits:
            bits = 1 << (pasid & 63)
        if pasid < self.low_base:
            self.low_leaf = None            # an ID below the hint
        node = self.root
        height = self.height
        while height > 0:
            shift = 6 + 6 * height
            i = (pasid >> shift) & 63
            node.nfree += n
            child = node.slot[i]
            if not child.nfree:
                node.free_mask |= 1 << i        # the child had no free ID
            elif child.nfree + n == 1 << shift:
                node.used_mask &= ~(1 << i)
                node.slot[i] = None
                self.nodes -= height
                if (pasid ^ self.low_base) >> LEAF_SHIFT == 0:
                    self.low_leaf = None    # the hint's leaf is dropped
                return
            node = child
            height -= 1
        w = (pasid >> 6) & 63
        word = node.slot[w]
        if not word:
            node.free_mask |= 1 << w
        word |= bits
        node.slot[w] = word
        node.nfree += n
        if word == ALL:
            node.used_mask &= ~(1 << w)
            if node is self.low_leaf and node.nfree == 1 << LEAF_SHIFT:
                self.low_leaf = None        # the hint's leaf (the root) all free

    release_bits = release

    def is_free(self, pasid: int) -> bool:
        """True if ``pasid`` is free. O(log64 N)."""
        if pasid >= self.span():
            return True
        leaf = self.find_leaf(pasid)
        return leaf is None or bool((leaf.slot[(pasid >> 6) & 63] >> (pasid & 63)) & 1)

    def rank(self, x: int) -> int:
        """How many free IDs are below ``x``. O(64 log64 N)."""
        node = self.root
        height = self.height
        base = 0
        total = 0
        if x >= self.span():
            return node.nfree + (x - self.span())
        while True:
            shift = 6 + 6 * height
            i = (x - base) >> shift
            if height == 0:
                for j in range(i):
                    total += node.slot[j].bit_count()
                word: int = node.slot[i]
                return total + (word & ((1 << (x & 63)) - 1)).bit_count()
            for j in range(i):
                child = node.slot[j]
                total += child.nfree if child is not None else 1 << shift
            base += i << shift
            child = node.slot[i]
            if child is None:
                return total + (x - base)
            node = child
            height -= 1

    def select(self, rank: int) -> int:
        """The free ID of the given rank (0-based, ascending). O(64 log64 N)."""
        node = self.root
        height = self.height
        base = 0
        if rank >= node.nfree:
            return self.span() + (rank - node.nfree)
        while height > 0:
            shift = 6 + 6 * height
            for j in range(64):
                child = node.slot[j]
                count = child.nfree if child is not None else 1 << shift
                if rank < count:
                    break
                rank -= count
            base += j << shift
            if child is None:
                return base + rank
            node = child
            height -= 1
        for j in range(64):
            count = node.slot[j].bit_count()
            if rank < count:
                break
            rank -= count
        word: int = node.slot[j]
        while rank > 0:
            word &= word - 1
            rank -= 1
        return base + (j << 6) + (word & -word).bit_length() - 1

    def count_free(self, lo: int, hi: int) -> int:
        """How many free IDs are in ``[lo, hi]``. O(64 log64 N)."""
        return self.rank(hi + 1) - self.rank(lo)

    # ------------------------------------------------------------ invariants

    def _check_hint(self) -> None:
        """Raise AssertionError unless the lowest-free hint (when set) is the leaf at
        ``low_base``, and every ID below ``low_base`` is taken."""
        base = self.low_base
        if self.low_leaf is None:
            return
        if base < 0 or base & ((1 << LEAF_SHIFT) - 1) or base >= self.span():
            raise AssertionError(f"the hint's base {base} is not a leaf's first ID")
        if self.find_leaf(base) is not self.low_leaf:
            raise AssertionError(f"the hint's leaf is not the leaf of ID {base}")
        if self.find_free(0) < base:
            raise AssertionError(f"ID {self.find_free(0)} is free, below the hint's {base}")

    def _check(self) -> None:
        """Verify every summary, count and node against the bitmap words below, and the hint."""
        _, nodes = _check_node(self.root, self.height)
        self._check_hint()
        if nodes != self.nodes:
            raise AssertionError(f"nodes {self.nodes} != {nodes} in the tree")


def _check_node(node: Node, height: int) -> tuple[int, int]:
    """(taken IDs, nodes) under ``node``, raising AssertionError on any disagreement."""
    free_mask = used_mask = 0
    span = 1 << (LEAF_SHIFT + 6 * height)
    used = 0
    nodes = 1
    if height == 0:
        for i in range(64):
            word = node.slot[i]
            if not 0 <= word <= ALL:
                raise AssertionError(f"word {i} of a leaf is not 64 bits: {word:#x}")
            if word:
                free_mask |= 1 << i
            if word != ALL:
                used_mask |= 1 << i
            used += 64 - word.bit_count()
    else:
        child_span = 1 << (6 + 6 * height)
        for i in range(64):
            child = node.slot[i]
            if child is None:
                free_mask |= 1 << i
                continue
            child_used, child_nodes = _check_node(child, height - 1)
            if child_used == 0:
                raise AssertionError(f"an all-free node is kept at height {height - 1}")
            if child_used < child_span:
                free_mask |= 1 << i
            used_mask |= 1 << i
            used += child_used
            nodes += child_nodes
    if free_mask != node.free_mask or used_mask != node.used_mask:
        raise AssertionError(f"summary masks disagree at height {height}")
    if node.nfree != span - used:
        raise AssertionError(f"nfree {node.nfree} != {span - used} at height {height}")
    return used, nodes
