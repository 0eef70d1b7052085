"""The fifo strategy's queue: the first FREE ID of a range, against a list in FIFO order.

``pasid.pure.fifo.FifoQueue`` directly (a state machine), and the ``fifo``
strategy of both backends' allocators through ``alloc(min=, max=)``.
"""

import random

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pasid.pure.fifo import FifoQueue


class FifoMachine(RuleBasedStateMachine):
    """A FifoQueue beside a plain list of the same IDs in the same order."""

    @initialize(capacity=st.sampled_from([2, 63, 64, 65, 300, 4097]), start=st.booleans())
    def setup(self, capacity, start):
        self.capacity = capacity
        self.model = list(range(capacity)) if start else []
        self.queue = FifoQueue(capacity, self.model)

    def _first(self, lo, hi):
        return next((p for p in self.model if lo <= p <= hi), -1)

    @rule(data=st.data())
    def push(self, data):
        absent = sorted(set(range(self.capacity)) - set(self.model))
        if absent:
            p = data.draw(st.sampled_from(absent))
            self.queue.push(p)
            self.model.append(p)

    @rule(data=st.data())
    def remove(self, data):
        if self.model:
            p = data.draw(st.sampled_from(self.model))
            self.queue.remove(p)
            self.model.remove(p)

    @rule(data=st.data())
    def first(self, data):
        lo = data.draw(st.integers(0, self.capacity - 1))
        hi = data.draw(st.integers(lo, self.capacity - 1))
        assert self.queue.first(lo, hi) == self._first(lo, hi)

    @rule()
    def take_head(self):
        """What a full-range fifo allocation does: the head leaves."""
        p = self.queue.first(0, self.capacity - 1)
        assert p == self._first(0, self.capacity - 1)
        if p >= 0:
            self.queue.remove(p)
            self.model.remove(p)

    @invariant()
    def agrees(self):
        assert list(self.queue) == self.model
        self.queue._check(set(self.model))


TestFifoQueue = FifoMachine.TestCase


@pytest.mark.parametrize("bits", [3, 8, 14])
def test_fifo_strategy_takes_the_oldest_free_id_of_the_range(backend, bits):
    """Random ranged and full-range allocations and frees, against a list in FIFO order."""
    size = 1 << bits
    a = backend.PasidAllocator(bits, reserved=(), strategy="fifo")
    model = list(range(size))          # FREE IDs, oldest first
    allocated = []
    rnd = random.Random(bits)
    for step in range(3000):
        if allocated and (not model or rnd.random() < 0.45):
            p = allocated.pop(rnd.randrange(len(allocated)))
            a.free(p)
            model.append(p)
            continue
        if rnd.random() < 0.3:
            lo, hi = 0, size - 1
        else:
            lo = rnd.randrange(size)
            hi = min(size - 1, lo + rnd.choice([0, 1, 5, 64, 300, size]))
        want = next((p for p in model if lo <= p <= hi), None)
        got = a.try_alloc(min=lo, max=hi)
        assert got == want, (step, lo, hi)
        if got is not None:
            model.remove(got)
            allocated.append(got)
    a._check()


def test_free_many_releases_in_the_order_successive_frees_would(backend):
    """SPEC §3.2: free_many is successive free calls; with fifo the order shows."""
    a = backend.PasidAllocator(bits=3, strategy="fifo", reserved=())
    a.alloc_many(8)
    a.get(1)
    a.free_many([1, 2, 1])       # 2 is released by the second call, 1 by the third
    assert [a.alloc(), a.alloc()] == [2, 1]
    a._check()
