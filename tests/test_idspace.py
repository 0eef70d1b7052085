"""The ID space against a plain set of its FREE IDs, on both backends (a state machine).

The twins have the same methods: ``pasid.pure.idspace.IdSpace`` and, for the
compiled ``_idspace.pxi``, its test handle ``pasid._core._IdSpaceForTests``
(a ``Space`` behind those names). One machine runs on each through the
``backend`` fixture: every rule does the same to the space and to the set
and compares, and ``_check()`` (summaries, counts, nodes, the lowest-free
hint) runs after every step. Capacities sit on the edges of a word (64 IDs),
a leaf (4096) and the pure allocator's largest space (2**20); IDs are drawn
near the places where the tree changes shape.
"""

import bisect
import random

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from hypothesis.stateful import run_state_machine_as_test

from backends import NO_EXTENSION
from pasid.pure.idspace import IdSpace

CAPACITIES = [1, 63, 64, 65, 4095, 4096, 4097, 2**20]
# IDs where the tree changes shape: words; the last two words of a leaf (3968, 4032)
# and the last two leaves of a node of height 1; leaves; nodes; the top
EDGES = [0, 1, 62, 63, 64, 65, 127, 128, 3968, 4032, 4095, 4096, 4097, 8191, 8192,
         2**18 - 8192, 2**18 - 4096, 2**18 - 1, 2**18, 2**18 + 1, 2**20 - 64, 2**20 - 1]
RUNS = [1, 2, 63, 64, 65, 300, 4096, 4160]     # a word, a leaf, and a little more
LEAF_SHIFT = 12


def space_class(backend):
    """The ID space of ``backend``: the pure ``IdSpace`` or the compiled one's handle."""
    if backend.__name__ == "pasid._core":
        return backend._IdSpaceForTests
    return IdSpace


def tree_height(highest):
    """How tall the tree is once ``highest`` has been taken: the least height whose
    root spans it (the tree never shrinks before a clear)."""
    height = 0
    while highest >= 1 << (LEAF_SHIFT + 6 * height):
        height += 1
    return height


def make_machine(space_class):
    """A ``RuleBasedStateMachine`` class comparing ``space_class`` with a set."""

    class IdSpaceMachine(RuleBasedStateMachine):
        """An ID space beside ``free``, the set of its FREE IDs below the capacity.

        Every ID at or above the capacity is free in both (the space does not
        bound its callers). ``taken``, the rest of the capacity, is kept beside
        ``free`` to draw from, so a step of a 2**20 space costs what is taken,
        not a scan of a million IDs. ``highest``, the largest ID taken since the
        last clear, says how tall the tree must be.
        """

        @initialize(capacity=st.sampled_from(CAPACITIES))
        def setup(self, capacity):
            self.capacity = capacity
            self.space = space_class(capacity)
            self.free = set(range(capacity))
            self.taken = set()
            self.highest = -1

        # -- the obvious oracle -------------------------------------------

        def lowest_free(self, lo):
            p = max(lo, 0)
            while p < self.capacity and p not in self.free:
                p += 1
            return p

        def lowest_taken(self, lo):
            return min((p for p in self.taken if p >= lo), default=-1)

        def free_below(self, x):
            return x - sum(1 for p in self.taken if p < x)

        def free_of_rank(self, rank):
            p = rank
            for q in sorted(self.taken):
                if q > p:
                    break
                p += 1
            return p

        # -- drawing and bookkeeping --------------------------------------

        def draw_id(self, data, beyond=0):
            """An ID below the capacity (``beyond``: up to that many above it too)."""
            edges = [p for p in EDGES if p < self.capacity] + [self.capacity - 1]
            return data.draw(st.one_of(st.integers(0, self.capacity - 1 + beyond),
                                       st.sampled_from(edges)))

        def taken_now(self, p):
            self.free.remove(p)
            self.taken.add(p)
            self.highest = max(self.highest, p)

        def released_now(self, p):
            self.taken.remove(p)
            self.free.add(p)

        # -- rules that change the space ----------------------------------

        @rule(data=st.data())
        def take(self, data):
            """Take the lowest free ID at or above a drawn one (none: nothing)."""
            p = self.lowest_free(self.draw_id(data))
            if p < self.capacity:
                self.space.take(p)
                self.taken_now(p)

        @rule(data=st.data(), length=st.sampled_from(RUNS))
        def take_run(self, data, length):
            """Take every free ID of a run, so words, leaves and nodes fill up."""
            lo = self.draw_id(data)
            for p in range(lo, min(lo + length, self.capacity)):
                if p in self.free:
                    self.space.take(p)
                    self.taken_now(p)

        @rule(length=st.sampled_from(RUNS))
        def take_lowest_run(self, length):
            """Take the lowest ``length`` free IDs: the first leaves fill, and the
            lowest-free hint moves past them."""
            p = 0
            for _ in range(length):
                p = self.lowest_free(p)
                if p >= self.capacity:
                    return
                self.space.take(p)
                self.taken_now(p)

        @rule(hi=st.integers(-1, 2**20 - 1))
        def take_lowest(self, hi):
            """The fast path of a lowest-free allocation, and the caller's general way
            when it says the lowest free ID lies under a missing node (-1)."""
            hi = min(hi, self.capacity - 1)
            lowest = self.lowest_free(0)
            span = 1 << (LEAF_SHIFT + 6 * tree_height(self.highest))
            leaf_missing = tree_height(self.highest) > 0 and not any(
                p >> LEAF_SHIFT == lowest >> LEAF_SHIFT for p in self.taken)
            peeked = self.space.lowest(hi)              # the same answer, nothing taken
            assert self.space.is_free(peeked) if peeked >= 0 else True
            p = self.space.take_lowest(hi)
            assert p == peeked
            if lowest > hi:
                assert p == -2
                return
            if lowest >= span or leaf_missing:
                assert p == -1
                p = self.space.find_free(0)
                self.space.take(p)
            assert p == lowest
            self.taken_now(p)

        @precondition(lambda self: self.taken)
        @rule(data=st.data())
        def release(self, data):
            p = data.draw(st.sampled_from(sorted(self.taken)))
            self.space.release(p)
            self.released_now(p)

        @precondition(lambda self: self.taken)
        @rule(data=st.data(), length=st.sampled_from(RUNS))
        def release_run(self, data, length):
            """Release every taken ID of a run, so words, leaves and nodes empty."""
            lo = data.draw(st.sampled_from(sorted(self.taken)))
            for p in range(lo, min(lo + length, self.capacity)):
                if p in self.taken:
                    self.space.release(p)
                    self.released_now(p)

        @precondition(lambda self: self.taken)
        @rule(data=st.data())
        def release_bits(self, data):
            """Release some taken IDs of one word at once (the batch release's step)."""
            first = data.draw(st.sampled_from(sorted(self.taken))) & ~63
            in_word = sorted(p for p in self.taken if p & ~63 == first)
            going = data.draw(st.lists(st.sampled_from(in_word), min_size=1, unique=True))
            pasid = data.draw(st.integers(first, first + 63))    # any ID of the word
            self.space.release_bits(pasid, sum(1 << (p & 63) for p in going), len(going))
            for p in going:
                self.released_now(p)

        @rule()
        def clear(self):
            self.space.clear()
            self.free = set(range(self.capacity))
            self.taken = set()
            self.highest = -1

        # -- rules that only ask ------------------------------------------

        @rule(data=st.data(), query=st.sampled_from(["find_free", "find_used", "rank"]))
        def ask(self, data, query):
            """A question about one ID: the lowest free or taken ID from it, its rank."""
            oracle = {"find_free": self.lowest_free, "find_used": self.lowest_taken,
                      "rank": self.free_below}[query]
            x = self.draw_id(data, beyond=70)
            assert getattr(self.space, query)(x) == oracle(x), (query, x)

        @rule(data=st.data())
        def select(self, data):
            """The free ID of a rank: a drawn rank, and the rank of a drawn free ID."""
            rank = data.draw(st.integers(0, len(self.free) + 70))
            assert self.space.select(rank) == self.free_of_rank(rank)
            p = self.lowest_free(self.draw_id(data))
            assert self.space.select(self.free_below(p)) == p

        @rule(data=st.data())
        def is_free(self, data):
            lo = self.draw_id(data)
            for p in range(lo, lo + 130):
                assert self.space.is_free(p) == (p >= self.capacity or p in self.free), p

        @invariant()
        def agrees(self):
            self.space._check()
            assert self.space.height == tree_height(self.highest)
            assert self.space.rank(self.capacity) == len(self.free)
            assert len(self.free) + len(self.taken) == self.capacity

    IdSpaceMachine.__name__ = IdSpaceMachine.__qualname__ = (
        f"IdSpaceMachine_{space_class.__name__}")
    return IdSpaceMachine


def test_id_space_state_machine(backend):
    """The ID space of ``backend`` and a set of FREE IDs agree through any sequence."""
    run_state_machine_as_test(make_machine(space_class(backend)))


def test_the_tree_grows_to_the_top_of_the_ida_range_and_back(backend):
    """Heights 3 and 4 (the IDA's 2**31 IDs), which the machine's capacities do not reach."""
    space = space_class(backend)(2**31)
    top = 2**31 - 1
    space.take(top)
    assert (space.height, space.nodes) == (4, 5)     # the all-free first root went
    assert (space.find_free(0), space.find_used(0), space.find_free(top)) == (0, top, 2**31)
    assert (space.rank(2**31), space.select(top), space.select(2**31)) == (top, 2**31, 2**31 + 1)
    space._check()
    space.release(top)
    assert (space.height, space.nodes, space.find_used(0)) == (4, 1, -1)
    space.take(0)
    assert (space.nodes, space.take_lowest(top)) == (5, 1)
    space._check()
    space.clear()
    assert (space.height, space.nodes, space.find_used(0)) == (0, 1, -1)
    space._check()


def test_take_lowest_leaves_a_missing_leaf_to_the_general_way(backend):
    """-1 when the lowest free ID lies under a node not yet made, nothing taken."""
    space = space_class(backend)(2**20)
    for p in range(4096):
        space.take(p)
    space.take(9000)                                 # leaves 0 and 2; leaf 1 missing
    assert (space.height, space.nodes) == (1, 3)
    assert space.take_lowest(2**20 - 1) == -1
    assert space.take_lowest(4095) == -2
    assert (space.nodes, space.find_free(0)) == (3, 4096)
    space.take(4096)
    assert space.take_lowest(2**20 - 1) == 4097
    space._check()


def test_searches_cross_into_the_last_slot_of_a_leaf_and_of_a_node(backend):
    """From slot 62 to slot 63: the last step before a search runs off a node."""
    leaf62, leaf63 = 62 << LEAF_SHIFT, 63 << LEAF_SHIFT
    space = space_class(backend)(2**20)
    for p in range(3968, 4032):                      # word 62 of leaf 0
        space.take(p)
    for p in range(leaf62, leaf63):                  # leaf 62 of the node of height 1
        space.take(p)
    space.take(leaf63 + 7)
    assert space.find_free(3968) == 4032
    assert space.find_free(leaf62 + 5) == leaf63
    assert space.find_used(4032) == leaf62
    assert space.find_used(leaf62 + 4095) == leaf62 + 4095
    space.release(leaf62 + 4095)
    assert space.find_used(leaf62 + 4095) == leaf63 + 7
    space.take(4040)
    space.release_bits(3968, (1 << 64) - 1, 64)       # word 62 free again, all at once
    assert (space.find_used(3968), space.find_free(3968)) == (4040, 3968)
    space.take(leaf62 + 4095)
    for p in range(leaf62, leaf62 + 64):
        space.release(p)                             # leaf 62 has a free ID, but not after
    assert space.find_free(leaf62 + 100) == leaf63   # lo's word: up to the next leaf
    space._check()


def test_a_new_root_a_release_below_and_a_dropped_leaf_clear_the_hint(backend):
    """The lowest-free hint is a leaf and its path: each change that moves them clears it."""
    space = space_class(backend)(2**20)
    assert space.take_lowest(10) == 0                # the hint: leaf 0, the root
    space.take(5000)                                 # a new root above it
    space._check()
    assert space.take_lowest(10) == 1
    for p in range(2, 4096):
        space.take(p)
    assert space.take_lowest(2**20 - 1) == 4096      # the hint: leaf 1
    for p in (4096, 5000):
        space.release(p)                             # leaf 1 all free: dropped
    space._check()
    assert (space.nodes, space.take_lowest(2**20 - 1)) == (2, -1)
    space.take(4096)
    assert space.take_lowest(2**20 - 1) == 4097      # the hint: leaf 1 again
    space.release(7)                                 # below it
    space._check()
    assert space.take_lowest(2**20 - 1) == 7
    space._check()


def test_rank_and_select_agree_with_a_sorted_list_from_either_end_of_every_node(backend):
    """Every free ID of leaves on both halves of a node, and of a second node, is
    selected by its rank and ranked back; the compiled twin counts each node from
    its nearer end and finds the bit in a word by byte counts, so the leaves hold
    words of every density, bits at both ends of a word and of each byte."""
    rng = random.Random(19)
    space = space_class(backend)(2**20)
    taken = set()
    leaves = [0, 1, 31, 32, 62, 63, 64 + 2, 64 + 61]  # node 1 of height 1 as well
    for leaf in leaves:
        base = leaf << LEAF_SHIFT
        for w in range(64):
            density = w / 63                         # all free .. all taken
            for b in range(64):
                if rng.random() < density:
                    taken.add(base + 64 * w + b)
    for w, mask in enumerate([(1 << 63) | 1, 1 << 63, 1, 0xFF00, 0x8001 << 40, 0x0101 << 24]):
        base = (31 << LEAF_SHIFT) + 64 * w           # a leaf's first words, these bits free
        taken.update(base + b for b in range(64) if not mask >> b & 1)
        taken.difference_update(base + b for b in range(64) if mask >> b & 1)
    for p in sorted(taken):
        space.take(p)
    ordered = sorted(taken)
    for leaf in leaves:
        base = leaf << LEAF_SHIFT
        for p in range(base, base + (1 << LEAF_SHIFT) + 1):
            below = p - bisect.bisect_left(ordered, p)
            assert space.rank(p) == below, p
            if p not in taken:
                assert space.select(below) == p, (p, below)
    free = 2**20 - len(taken)
    assert space.rank(2**20) == free
    assert (space.select(free - 1), space.select(free)) == (2**20 - 1, 2**20)   # on past the capacity
    space._check()


@pytest.mark.skipif(NO_EXTENSION, reason="PASID_NO_EXTENSION=1: no compiled core")
def test_the_compiled_handle_refuses_what_would_corrupt_the_tree():
    from pasid._core import _IdSpaceForTests

    space = _IdSpaceForTests(64)
    space.take(5)
    with pytest.raises(ValueError, match="taken"):
        space.take(5)
    with pytest.raises(ValueError, match="free"):
        space.release(6)
    with pytest.raises(ValueError, match="free"):
        space.release_bits(0, 0b1100000, 2)
    with pytest.raises(ValueError, match="number of bits"):
        space.release_bits(0, 0b100000, 2)
    with pytest.raises(ValueError, match="outside"):
        space.take(-1)
    with pytest.raises(ValueError, match="outside"):
        space.is_free(2**36)
    space._check()
