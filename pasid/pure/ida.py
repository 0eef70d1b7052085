"""A pure-Python reimplementation of the Linux kernel IDA (lib/idr.c over lib/xarray.c).

This is the baseline the compiled ``pasid.IDA`` is measured against, so it
follows the kernel's design honestly rather than taking a shortcut:

- **Leaves.** IDs are grouped in 1024-bit leaf bitmaps (``IDA_BITMAP_BITS``);
  leaf number ``id >> 10`` holds bit ``id & 1023``. Each leaf is stored as ONE
  Python ``int`` (bit set = allocated). The kernel's ``struct ida_bitmap`` is an
  array of 16 64-bit words; a single int is the honest Python rendering of that
  array (measured 1.3-1.5x faster than a list of 64-bit words), and every bit
  operation the kernel does on the array (``find_next_zero_bit``, ``__set_bit``,
  ``bitmap_full``, ``bitmap_empty``) is one int operation here.
- **Radix tree.** Leaves hang from a radix tree of 64-slot nodes
  (``XA_CHUNK_SHIFT = 6``), like an xarray node: ``shift``, ``offset`` in the
  parent, a ``parent`` pointer, ``count`` of occupied slots and ``slots``.
  As in the xarray, a tree holding only leaf 0 keeps that leaf directly in the
  head (height 0). The tree grows in height when a larger ID is needed (like
  ``xas_expand``), and an emptied leaf is freed, an emptied node is freed, and a
  head node whose only child is in slot 0 is replaced by that child (like
  ``ida_free`` / ``xas_delete_node`` / ``xas_shrink``).
- **Free mark.** Each node carries the xarray's ``XA_FREE_MARK`` as a 64-bit
  int: bit ``i`` set = slot ``i`` has a free ID below it (an empty slot counts
  as free, a leaf is free unless full, a child node is free if any of its marks
  is). Marks are carried up to the head only on a transition (a leaf filling,
  a full leaf losing a bit), so the lowest free ID at or above ``min`` is found
  by descending along the marks (``xas_find_marked``) without a scan: O(log64 N)
  mask tests. Everything beyond the tree's current span is free.
- **Value entries.** The kernel keeps a leaf whose bits all lie below 63 inline
  in the slot as an xarray value entry, converting it to a full bitmap when a
  higher bit is needed. That optimisation only saves an allocation in C; here a
  Python int is already variable-sized (a leaf holding IDs 0..62 is a small
  int), so value entries are NOT rendered as a separate kind of entry; the
  observable behaviour (alloc/free of IDs around 0..63 and across the
  conversion) is the same.

The one departure from the kernel: :meth:`IDA.find_first_range` is a correct
search over the whole range; the kernel's ``ida_find_first_range`` quirk of
looking only in the first chunk is not copied.

Every public method holds a :class:`threading.Lock` (the kernel holds the
xarray's ``xa_lock``), so an ``IDA`` may be shared between threads.

>>> ida = IDA()
>>> [ida.alloc() for _ in range(3)]
[0, 1, 2]
>>> ida.free(1)
>>> ida.alloc_min(1), ida.alloc_range(1000, 2000), list(ida)
(1, 1000, [0, 1, 2, 1000])
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, SupportsIndex, final

from pasid import _fork, _messages
from pasid._errors import InvalidPasid, PasidExhausted, StateError
from pasid._args import as_int

__all__ = ["IDA", "IDA_MAX", "IDA_BITMAP_BITS"]

IDA_MAX = 2**31 - 1
"""The largest ID an IDA hands out (``INT_MAX``)."""

IDA_BITMAP_BITS = 1024
"""IDs per leaf bitmap (the kernel's ``IDA_BITMAP_BITS`` on 64-bit)."""

XA_CHUNK_SHIFT = 6
XA_CHUNK_SIZE = 1 << XA_CHUNK_SHIFT

_LEAF_SHIFT = 10  # log2(IDA_BITMAP_BITS)
_BIT_MASK = IDA_BITMAP_BITS - 1
_SLOT_MASK = XA_CHUNK_SIZE - 1
_FULL_LEAF = (1 << IDA_BITMAP_BITS) - 1
_ALL_SLOTS = (1 << XA_CHUNK_SIZE) - 1
_MAX_LEAF = IDA_MAX >> _LEAF_SHIFT  # the highest leaf index ever used
_MAX_SHIFT = 18  # a head of this shift spans leaf indices < 2**24 > _MAX_LEAF


@final   # so that ``type(x) is not _Node`` excludes it (mypy narrows on that)
class _Node:
    """An xarray node: 64 slots, the free mark, and the way back up.

    ``shift`` says which bits of a leaf index choose the slot here
    (``(index >> shift) & 63``); at ``shift == 0`` the slots hold leaves (ints),
    above it they hold nodes of ``shift - 6``.
    """

    __slots__ = ("shift", "offset", "parent", "count", "free", "slots")

    shift: int
    offset: int
    parent: _Node | None
    count: int
    free: int
    # Leaves (int bitmaps) at shift 0, nodes above, None where empty: the level
    # decides, which the type cannot say, so the walks read slots as Any.
    slots: list[Any]

    def __init__(self, shift: int, parent: _Node | None, offset: int) -> None:
        self.shift = shift
        self.offset = offset
        self.parent = parent
        self.count = 0
        self.free = _ALL_SLOTS  # every empty slot is free
        self.slots = [None] * XA_CHUNK_SIZE


def _mark_free(node: _Node | None, offset: int) -> None:
    """Set the free mark of ``node.slots[offset]``, carrying it up while it is new."""
    while node is not None:
        marks = node.free
        node.free = marks | (1 << offset)
        if marks:
            return  # the ancestors already know this node has room
        offset = node.offset
        node = node.parent


def _mark_full(node: _Node | None, offset: int) -> None:
    """Clear the free mark of ``node.slots[offset]``, carrying it up while a node fills."""
    while node is not None:
        marks = node.free & ~(1 << offset)
        node.free = marks
        if marks:
            return
        offset = node.offset
        node = node.parent


def _bits_of(base: int, leaf: int, out: list[int]) -> None:
    """Append the IDs of the set bits of ``leaf`` (leaf number ``base >> 10``), ascending."""
    while leaf:
        low = leaf & -leaf
        out.append(base + low.bit_length() - 1)
        leaf ^= low


class IDA:
    """An ID allocator with the Linux kernel's ``ida_*`` semantics, IDs ``0 .. 2**31 - 1``.

    Allocation gives the lowest free ID in the asked range; memory grows with
    what is allocated, not with the range. Thread-safe.

    >>> ida = IDA()
    >>> ida.alloc(), ida.alloc(), ida.alloc_min(5000)
    (0, 1, 5000)
    >>> len(ida), 5000 in ida, 2 in ida
    (3, True, False)
    >>> ida.destroy(); ida.is_empty()
    True
    """

    __slots__ = ("_head", "_count", "_lock", "__weakref__")

    _head: _Node | int | None

    def __init__(self) -> None:
        self._head = None  # None (empty), an int (leaf 0, height 0), or a _Node
        self._count = 0
        self._lock = threading.Lock()
        _fork.register(self)

    # fork() (pasid/_fork.py): the lock is held across the fork, so the child gets the
    # tree whole (no user code runs under it: waiting for it never waits on the program)

    def _fork_prepare(self) -> None:
        self._lock.acquire()

    def _fork_parent(self) -> None:
        self._lock.release()

    def _fork_child(self) -> None:
        self._lock.release()

    # -- tree walks (the caller holds the lock) -------------------------------

    def _find_free(self, index: int) -> tuple[int, int, _Node | None, int]:
        """The lowest leaf index >= ``index`` whose free mark is set (``xas_find_marked``).

        Returns ``(index, leaf, node, offset)``: ``leaf`` is the bitmap there
        (0 when absent); ``node``/``offset`` is the bottom node slot holding it,
        or ``node`` is None when the leaf is the head or its bottom node does
        not exist yet. An index beyond the tree is always free.
        """
        node = self._head
        if type(node) is not _Node:
            if node is None or index:
                return index, 0, None, 0
            if node != _FULL_LEAF:
                return 0, node, None, 0
            return 1, 0, None, 0
        shift = node.shift
        if index >> shift >= XA_CHUNK_SIZE:
            return index, 0, None, 0
        while True:
            offset = (index >> shift) & _SLOT_MASK
            marks = node.free >> offset
            if marks:
                step = (marks & -marks).bit_length() - 1
                if step:
                    offset += step
                    index = ((index >> shift) + step) << shift
                child = node.slots[offset]
                if shift == 0:
                    return index, (0 if child is None else child), node, offset
                if child is None:
                    return index, 0, None, 0
                node = child
                shift -= XA_CHUNK_SHIFT
                continue
            # Nothing free at or after ``offset`` here: resume in an ancestor,
            # at the slot after the one we came from.
            while True:
                parent = node.parent
                shift += XA_CHUNK_SHIFT
                if parent is None:
                    return ((index >> shift) + 1) << shift, 0, None, 0
                last = node.offset == _SLOT_MASK
                node = parent
                if not last:
                    break
            index = ((index >> shift) + 1) << shift

    def _find_present(self, index: int) -> tuple[int, int] | None:
        """The lowest leaf index >= ``index`` that holds a leaf, as ``(index, leaf)``, or None.

        Like ``xas_find``: the slots of a node are looked at in order (at most
        64 per node visited), there being no mark for "present".
        """
        node = self._head
        if type(node) is not _Node:
            if node is None or index:
                return None
            return 0, node
        shift = node.shift
        if index >> shift >= XA_CHUNK_SIZE:
            return None
        while True:
            start = (index >> shift) & _SLOT_MASK
            slots = node.slots
            for offset in range(start, XA_CHUNK_SIZE):
                child = slots[offset]
                if child is not None:
                    if offset != start:
                        index = ((index >> shift) + offset - start) << shift
                    if shift == 0:
                        return index, child
                    node = child
                    shift -= XA_CHUNK_SHIFT
                    break
            else:
                while True:
                    parent = node.parent
                    shift += XA_CHUNK_SHIFT
                    if parent is None:
                        return None
                    last = node.offset == _SLOT_MASK
                    node = parent
                    if not last:
                        break
                index = ((index >> shift) + 1) << shift

    def _locate(self, index: int) -> tuple[_Node | None, int, int]:
        """``(node, offset, leaf)`` for leaf ``index``.

        ``node`` is None for the head leaf; ``leaf`` is 0 when absent.
        """
        node = self._head
        if type(node) is not _Node:
            if node is None or index:
                return None, 0, 0
            return None, 0, node
        shift = node.shift
        if index >> shift >= XA_CHUNK_SIZE:
            return None, 0, 0
        while True:
            offset = (index >> shift) & _SLOT_MASK
            child = node.slots[offset]
            if child is None:
                return None, 0, 0
            if shift == 0:
                return node, offset, child
            node = child
            shift -= XA_CHUNK_SHIFT

    def _expand(self, index: int) -> None:
        """Grow the tree until its head node spans leaf ``index`` (``xas_expand``)."""
        head = self._head
        if head is None:
            shift = 0
            while index >> shift >= XA_CHUNK_SIZE:
                shift += XA_CHUNK_SHIFT
            self._head = _Node(shift, None, 0)
            return
        if type(head) is not _Node:  # leaf 0 in the head: give it a node
            root = _Node(0, None, 0)
            root.slots[0] = head
            root.count = 1
            if head == _FULL_LEAF:
                root.free = _ALL_SLOTS & ~1
            self._head = head = root
        while index >> head.shift >= XA_CHUNK_SIZE:
            root = _Node(head.shift + XA_CHUNK_SHIFT, None, 0)
            root.slots[0] = head
            root.count = 1
            if not head.free:
                root.free = _ALL_SLOTS & ~1
            head.parent = root
            head.offset = 0
            self._head = head = root

    def _insert_leaf(self, index: int, leaf: int) -> None:
        """Store a new (non-full) leaf at ``index``, creating nodes on the way (``xas_create``)."""
        if index == 0 and self._head is None:
            self._head = leaf
            return
        self._expand(index)
        node = self._head
        assert type(node) is _Node      # _expand made the head a node
        shift = node.shift
        while shift:
            offset = (index >> shift) & _SLOT_MASK
            child = node.slots[offset]
            if child is None:
                # A new node is all free, and the empty slot was already marked free.
                child = _Node(shift - XA_CHUNK_SHIFT, node, offset)
                node.slots[offset] = child
                node.count += 1
            node = child
            shift -= XA_CHUNK_SHIFT
        node.slots[index & _SLOT_MASK] = leaf
        node.count += 1

    def _delete_leaf(self, node: _Node, offset: int) -> None:
        """Free the emptied leaf at ``node.slots[offset]``, the nodes it empties, then shrink."""
        while True:
            node.slots[offset] = None
            node.count -= 1
            if node.count:
                _mark_free(node, offset)
                break
            parent = node.parent
            if parent is None:
                self._head = None
                return
            offset = node.offset
            node.parent = None
            node = parent
        # xas_shrink: a head node using only slot 0 gives way to that child.
        head = self._head
        assert type(head) is _Node      # the leaf was in a node, under this head
        while head.count == 1 and head.slots[0] is not None:
            child = head.slots[0]
            head.slots[0] = None
            if type(child) is _Node:
                child.parent = None
                self._head = head = child
            else:
                self._head = child
                return

    def _alloc(self, min: int, max: int) -> int:
        """Allocate the lowest free ID in ``[min, max]``; ``min <= max <= IDA_MAX``, validated."""
        first = min >> _LEAF_SHIFT
        index, leaf, node, offset = self._find_free(first)
        bits = leaf | ((1 << (min & _BIT_MASK)) - 1) if index == first else leaf
        bit = (~bits & (bits + 1)).bit_length() - 1  # lowest clear bit
        if bit >= IDA_BITMAP_BITS:  # the first leaf's free bits all lie below ``min``
            index, leaf, node, offset = self._find_free(first + 1)
            bit = (~leaf & (leaf + 1)).bit_length() - 1
        new_id = (index << _LEAF_SHIFT) + bit
        if new_id > max:
            raise PasidExhausted(_messages.ida_no_free(min, max))
        new_leaf = leaf | (1 << bit)
        if node is not None:
            node.slots[offset] = new_leaf
            if not leaf:
                node.count += 1
            elif new_leaf == _FULL_LEAF:
                _mark_full(node, offset)
        elif leaf:  # the head leaf (height 0)
            self._head = new_leaf
        else:
            self._insert_leaf(index, new_leaf)
        self._count += 1
        return new_id

    # -- allocation -------------------------------------------------------------

    def alloc(self) -> int:
        """The lowest free ID (``ida_alloc``). O(log64 N).

        PasidExhausted when all 2**31 IDs are taken.

        >>> ida = IDA()
        >>> ida.alloc(), ida.alloc()
        (0, 1)
        """
        with self._lock:
            return self._alloc(0, IDA_MAX)

    def alloc_min(self, min: SupportsIndex) -> int:
        """The lowest free ID ``>= min`` (``ida_alloc_min``). O(log64 N).

        ``min`` above 2**31 - 1, or nothing free from ``min`` on: PasidExhausted;
        ``min`` negative: InvalidPasid; not an integer: TypeError.

        >>> ida = IDA()
        >>> ida.alloc_min(10), ida.alloc_min(10), ida.alloc_min(2**31 - 1)
        (10, 11, 2147483647)
        """
        return self.alloc_range(min, IDA_MAX)

    def alloc_max(self, max: SupportsIndex) -> int:
        """The lowest free ID ``<= max`` (``ida_alloc_max``). O(log64 N).

        ``max`` above 2**31 - 1 is clamped. ``max`` negative: InvalidPasid;
        nothing free up to ``max``: PasidExhausted; not an integer: TypeError.

        >>> ida = IDA()
        >>> ida.alloc_max(1), ida.alloc_max(1)
        (0, 1)
        >>> ida.alloc_max(1)
        Traceback (most recent call last):
        ...
        pasid._errors.PasidExhausted: no free ID in 0..1
        """
        return self.alloc_range(0, max)

    def alloc_range(self, min: SupportsIndex, max: SupportsIndex) -> int:
        """The lowest free ID in ``[min, max]``, inclusive (``ida_alloc_range``). O(log64 N).

        As in the kernel: ``max`` above 2**31 - 1 is clamped; ``min > max`` (after
        the clamp), ``min`` above 2**31 - 1 or a full range raise PasidExhausted.
        A negative ``min`` or ``max``: InvalidPasid; a non-integer (``bool``
        included): TypeError; numpy integer scalars are accepted. On error nothing
        changes.

        >>> ida = IDA()
        >>> ida.alloc_range(5, 6), ida.alloc_range(5, 6)
        (5, 6)
        >>> ida.alloc_range(2**31 - 1, 2**40)
        2147483647
        >>> ida.alloc_range(5, 6)
        Traceback (most recent call last):
        ...
        pasid._errors.PasidExhausted: no free ID in 5..6
        """
        min = as_int(min, "min")
        max = as_int(max, "max")
        if min < 0:
            raise InvalidPasid(_messages.ida_negative("min", min))
        if max < 0:
            raise InvalidPasid(_messages.ida_negative("max", max))
        if max > IDA_MAX:
            max = IDA_MAX
        if min > max:
            raise PasidExhausted(_messages.ida_no_free(min, max))
        with self._lock:
            return self._alloc(min, max)

    def free(self, id: SupportsIndex) -> None:
        """Free an allocated ID (``ida_free``). O(log64 N).

        Not allocated: StateError, nothing changes; negative or above
        2**31 - 1: InvalidPasid; not an integer: TypeError. Memory follows what
        is allocated: emptied leaves and nodes go.

        >>> ida = IDA()
        >>> ida.alloc()
        0
        >>> ida.free(0)
        >>> ida.free(0)
        Traceback (most recent call last):
        ...
        pasid._errors.StateError: ida_free called for id=0 which is not allocated
        """
        id = as_int(id, "id")
        if id < 0 or id > IDA_MAX:
            raise InvalidPasid(_messages.ida_id_range(id, IDA_MAX))
        with self._lock:
            node, offset, leaf = self._locate(id >> _LEAF_SHIFT)
            mask = 1 << (id & _BIT_MASK)
            if not leaf & mask:
                raise StateError(_messages.ida_not_allocated(id))
            new_leaf = leaf ^ mask
            self._count -= 1
            if node is None:  # the head leaf
                self._head = new_leaf if new_leaf else None
            elif new_leaf:
                node.slots[offset] = new_leaf
                if leaf == _FULL_LEAF:
                    _mark_free(node, offset)
            else:
                self._delete_leaf(node, offset)

    def destroy(self) -> None:
        """Free every ID (``ida_destroy``); the IDA is empty and usable again. O(allocated) at most.

        >>> ida = IDA()
        >>> ida.alloc_min(70000)
        70000
        >>> ida.destroy(); len(ida), ida.alloc_min(70000)
        (0, 70000)
        """
        with self._lock:
            self._head = None
            self._count = 0

    # -- queries ------------------------------------------------------------------

    def find_first(self) -> int | None:
        """The lowest allocated ID, or None if the IDA is empty (``ida_find_first``).

        O(64 log64 N) at most (the slots of a node looked at in order, as
        ``xas_find`` does).

        >>> ida = IDA()
        >>> ida.find_first() is None
        True
        >>> ida.alloc_min(1500)
        1500
        >>> ida.find_first()
        1500
        """
        return self.find_first_range(0, IDA_MAX)

    def find_first_range(self, min: SupportsIndex, max: SupportsIndex) -> int | None:
        """The lowest allocated ID in ``[min, max]``, or None (``ida_find_first_range``).

        O(64 log64 N) at most. ``max`` above 2**31 - 1 is clamped; ``min > max``
        gives None (a negative ``max`` too). A negative ``min``: InvalidPasid; a
        non-integer: TypeError. Unlike the kernel, the whole range is searched,
        not only its first chunk.

        >>> ida = IDA()
        >>> ida.alloc_min(3), ida.alloc_min(2000)
        (3, 2000)
        >>> ida.find_first_range(4, 2**40), ida.find_first_range(4, 1999)
        (2000, None)
        """
        min = as_int(min, "min")
        max = as_int(max, "max")
        if min < 0:
            raise InvalidPasid(_messages.ida_negative("min", min))
        if max > IDA_MAX:
            max = IDA_MAX
        if min > max:  # a negative ``max`` included
            return None
        with self._lock:
            first = min >> _LEAF_SHIFT
            found = self._find_present(first)
            if found is None:
                return None
            index, leaf = found
            if index == first:
                leaf &= ~((1 << (min & _BIT_MASK)) - 1)
                if not leaf:  # the first leaf's IDs all lie below ``min``
                    found = self._find_present(first + 1)
                    if found is None:
                        return None
                    index, leaf = found
            found_id = (index << _LEAF_SHIFT) + (leaf & -leaf).bit_length() - 1
            return found_id if found_id <= max else None

    def exists(self, id: object) -> bool:
        """True if ``id`` is allocated (``ida_exists``); never raises: a non-ID gives False. O(log64 N).

        >>> ida = IDA()
        >>> ida.alloc()
        0
        >>> ida.exists(0), ida.exists(1), ida.exists(-1), ida.exists("0"), ida.exists(True)
        (True, False, False, False, False)
        """
        try:
            id = as_int(id, "id")
        except Exception:
            return False
        if id < 0 or id > IDA_MAX:
            return False
        with self._lock:
            leaf = self._locate(id >> _LEAF_SHIFT)[2]
            return bool(leaf >> (id & _BIT_MASK) & 1)

    def __contains__(self, id: object) -> bool:
        """``id in ida``: the same as :meth:`exists`; never raises. O(log64 N).

        >>> ida = IDA()
        >>> ida.alloc_min(7)
        7
        >>> 7 in ida, 8 in ida, None in ida
        (True, False, False)
        """
        return self.exists(id)

    def is_empty(self) -> bool:
        """True if no ID is allocated (``ida_is_empty``). O(1).

        >>> ida = IDA()
        >>> ida.is_empty(), ida.alloc(), ida.is_empty()
        (True, 0, False)
        """
        with self._lock:
            return self._head is None

    def __len__(self) -> int:
        """How many IDs are allocated (a counter kept by alloc/free). O(1).

        >>> ida = IDA()
        >>> _ = ida.alloc(), ida.alloc_min(10**6)
        >>> len(ida)
        2
        """
        with self._lock:
            return self._count

    def __iter__(self) -> Iterator[int]:
        """The allocated IDs, ascending, as of the call (a snapshot). O(allocated + leaves).

        >>> ida = IDA()
        >>> _ = ida.alloc_min(2**31 - 1), ida.alloc(), ida.alloc_min(1024)
        >>> list(ida)
        [0, 1024, 2147483647]
        """
        ids: list[int] = []
        with self._lock:
            head = self._head
            if type(head) is _Node:
                self._collect(head, 0, ids)
            elif head is not None:
                _bits_of(0, head, ids)
        return iter(ids)

    def __reduce__(self) -> tuple[Any, tuple[type[IDA], list[int]]]:
        """Pickle, copy and deepcopy: the allocated IDs, ascending (a new, independent IDA)."""
        return (_ida_from_ids, (type(self), list(self)))

    def _collect(self, node: _Node, index: int, out: list[int]) -> None:
        """Append the IDs under ``node`` (spanning leaf indices from ``index``), ascending."""
        shift = node.shift
        for offset, child in enumerate(node.slots):
            if child is None:
                continue
            child_index = index + (offset << shift)
            if shift == 0:
                _bits_of(child_index << _LEAF_SHIFT, child, out)
            else:
                self._collect(child, child_index, out)

    def __repr__(self) -> str:
        """How many IDs are allocated. O(1).

        >>> ida = IDA()
        >>> _ = ida.alloc()
        >>> repr(ida).endswith("IDA allocated=1>")
        True
        """
        return f"<pasid.pure.IDA allocated={len(self)}>"

    # -- invariants ---------------------------------------------------------------

    def _check(self) -> None:
        """Verify every invariant; raise ``AssertionError`` naming the first broken one.

        Marks agree with leaves and children, no empty leaf or node is kept,
        parent/offset/shift links are consistent, no leaf lies above
        ``IDA_MAX``, the head is shrunk, and the count equals the set bits.
        Cost: O(size of the tree).

        >>> ida = IDA()
        >>> _ = [ida.alloc_min(i * 5000) for i in range(40)]
        >>> ida._check()
        """
        with self._lock:
            head = self._head
            if head is None:
                total = 0
            elif type(head) is int:
                if not 0 < head <= _FULL_LEAF:
                    raise AssertionError(f"head leaf {head:#x} is empty or too wide")
                total = head.bit_count()
            elif type(head) is _Node:
                if head.parent is not None or head.offset != 0:
                    raise AssertionError("head node has a parent")
                if head.shift > _MAX_SHIFT or head.shift % XA_CHUNK_SHIFT:
                    raise AssertionError(f"head node has shift {head.shift}")
                if head.count == 1 and head.slots[0] is not None:
                    raise AssertionError("head node holds only slot 0 (not shrunk)")
                total = self._check_node(head, 0)
            else:
                raise AssertionError(f"head is a {type(head).__name__}")
            if total != self._count:
                raise AssertionError(f"count {self._count} but {total} bits set")

    def _check_node(self, node: _Node, index: int) -> int:
        """Check ``node`` (spanning leaf indices from ``index``) and below; return its set bits."""
        shift = node.shift
        total = 0
        occupied = 0
        marks = 0
        for offset, child in enumerate(node.slots):
            if child is None:
                marks |= 1 << offset
                continue
            occupied += 1
            child_index = index + (offset << shift)
            if child_index > _MAX_LEAF:
                raise AssertionError(f"leaf index {child_index} above IDA_MAX")
            if shift == 0:
                if type(child) is not int or not 0 < child <= _FULL_LEAF:
                    raise AssertionError(f"leaf {child_index} is empty or not a bitmap")
                total += child.bit_count()
                if child != _FULL_LEAF:
                    marks |= 1 << offset
            else:
                if type(child) is not _Node:
                    raise AssertionError(f"slot {offset} at shift {shift} is not a node")
                if child.shift != shift - XA_CHUNK_SHIFT:
                    raise AssertionError(f"child shift {child.shift} under shift {shift}")
                if child.parent is not node or child.offset != offset:
                    raise AssertionError(f"child at slot {offset} has a wrong parent link")
                if child.count == 0:
                    raise AssertionError(f"empty node kept at slot {offset}")
                total += self._check_node(child, child_index)
                if child.free:
                    marks |= 1 << offset
        if occupied != node.count:
            raise AssertionError(f"node count {node.count} but {occupied} slots used")
        if occupied == 0:
            raise AssertionError("empty node kept")
        if marks != node.free:
            raise AssertionError(
                f"free mark {node.free:#x} should be {marks:#x} (shift {shift}, index {index})"
            )
        return total


def _ida_from_ids(cls: type[IDA], ids: list[int]) -> IDA:
    """An IDA of class ``cls`` with exactly ``ids`` allocated (what __reduce__ saves)."""
    ida = cls()
    for p in ids:
        ida.alloc_range(p, p)
    return ida
