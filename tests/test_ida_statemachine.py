"""IDA against a plain Python set, step by step (a Hypothesis state machine).

The machine holds a backend's ``IDA`` and a ``set`` of the IDs it should
hold; every rule does the same thing to both and compares, and an invariant
runs ``_check()`` and compares ``len``/``iter`` after every step. IDs are
drawn near the places where the structure changes shape: the first value
entry (0..63), leaf edges (1023/1024), node edges (64 leaves = 65536 IDs),
and the top of the space (``2**31 - 1``), with ``max`` also above it
(clamped). The machine class is built per backend module, and one test runs
it on each backend through the ``backend`` fixture; example counts come from
the Hypothesis profile loaded in ``conftest.py``.
"""

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
import pytest

from pasid import InvalidPasid, PasidExhausted, StateError

IDA_MAX = 2**31 - 1

EDGES = [0, 1, 62, 63, 64, 1023, 1024, 1025, 65535, 65536, 2**20 - 1, 2**24, IDA_MAX - 1, IDA_MAX]

ids = st.one_of(
    st.integers(0, 130),
    st.integers(1000, 1050),
    st.integers(65530, 65540),
    st.integers(IDA_MAX - 40, IDA_MAX),
    st.sampled_from(EDGES),
)
maxes = st.one_of(ids, st.sampled_from([IDA_MAX + 1, 2**32, 2**63]))
any_ids = st.one_of(ids, st.sampled_from([-1, IDA_MAX + 1]))


def lowest_free(model, lo, hi):
    """The lowest ID in ``[lo, hi]`` not in ``model``, or None (the obvious oracle)."""
    id = lo
    while id <= hi and id in model:
        id += 1
    return id if id <= hi else None


def make_machine(backend):
    """A ``RuleBasedStateMachine`` class comparing ``backend.IDA`` with a set."""

    class IDAMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.ida = backend.IDA()
            self.model = set()

        def _alloc(self, lo, hi, call):
            """Run ``call`` and compare with the model for the range ``[lo, hi]``."""
            if lo < 0 or hi < 0:
                with pytest.raises(InvalidPasid):
                    call()
                return
            expected = lowest_free(self.model, lo, min(hi, IDA_MAX))
            if expected is None:
                with pytest.raises(PasidExhausted):
                    call()
            else:
                assert call() == expected
                self.model.add(expected)

        @rule()
        def alloc(self):
            self._alloc(0, IDA_MAX, self.ida.alloc)

        @rule(lo=any_ids)
        def alloc_min(self, lo):
            self._alloc(lo, IDA_MAX, lambda: self.ida.alloc_min(lo))

        @rule(hi=maxes)
        def alloc_max(self, hi):
            self._alloc(0, hi, lambda: self.ida.alloc_max(hi))

        @rule(lo=any_ids, hi=maxes)
        def alloc_range(self, lo, hi):
            self._alloc(lo, hi, lambda: self.ida.alloc_range(lo, hi))

        @rule(lo=ids, span=st.integers(0, 3))
        def alloc_range_narrow(self, lo, span):
            # Narrow ranges fill up quickly, so refusals get exercised too.
            hi = lo + span
            self._alloc(lo, hi, lambda: self.ida.alloc_range(lo, hi))

        @precondition(lambda self: self.model)
        @rule(data=st.data())
        def free_allocated(self, data):
            id = data.draw(st.sampled_from(sorted(self.model)))
            self.ida.free(id)
            self.model.remove(id)

        @rule(id=any_ids)
        def free_any(self, id):
            if id < 0 or id > IDA_MAX:
                with pytest.raises(InvalidPasid):
                    self.ida.free(id)
            elif id in self.model:
                self.ida.free(id)
                self.model.remove(id)
            else:
                with pytest.raises(StateError) as excinfo:
                    self.ida.free(id)
                assert str(excinfo.value) == (
                    f"ida_free called for id={id} which is not allocated"
                )

        @rule(lo=any_ids, hi=maxes)
        def find_first_range(self, lo, hi):
            if lo < 0:
                with pytest.raises(InvalidPasid):
                    self.ida.find_first_range(lo, hi)
                return
            expected = min((id for id in self.model if lo <= id <= hi), default=None)
            assert self.ida.find_first_range(lo, hi) == expected

        @rule()
        def find_first(self):
            assert self.ida.find_first() == (min(self.model) if self.model else None)

        @rule(id=any_ids)
        def exists(self, id):
            assert self.ida.exists(id) == (id in self.model)
            assert (id in self.ida) == (id in self.model)

        @rule()
        def destroy(self):
            self.ida.destroy()
            self.model.clear()

        @invariant()
        def agrees_with_model(self):
            self.ida._check()
            assert len(self.ida) == len(self.model)
            assert list(self.ida) == sorted(self.model)
            assert self.ida.is_empty() == (not self.model)

    IDAMachine.__name__ = IDAMachine.__qualname__ = f"IDAMachine_{backend.__name__}"
    return IDAMachine


def test_ida_state_machine(backend):
    """The IDA of ``backend`` and a set stay equal through any sequence of operations."""
    run_state_machine_as_test(make_machine(backend))
