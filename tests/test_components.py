"""The lifecycle's components, each with a state machine of its own, on both backends.

The lifecycle is split into twin components (``pasid/_release.pxi`` ↔
``pasid/pure/release.py``, owners, bindings, batch, export, check). Each gets
here what the fifo queue has in tests/test_fifo.py:

* the release queue as a structure: a Hypothesis state machine holding the
  queue and a sorted list of the same entries side by side, on the pure
  ``ReleaseQueue`` and on the compiled one (through ``_ReleaseQueueForTests``);
* each component through the allocator: the allocator state machine of
  tests/test_statemachine.py (beside tests/model.py, the one model) with only
  the rules that exercise that component, so the search goes deep where the
  component lives. Every step checks ``_check()`` (the check component) and
  the model's view of every PASID.
"""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant
from hypothesis.stateful import precondition, rule, run_state_machine_as_test

from backends import BACKEND_NAMES
from test_statemachine import (
    AllocationRules,
    BindingRules,
    OwnerRules,
    ReferenceRules,
    ReserveRules,
    SnapshotRules,
    TimeRules,
    make_machine,
)

from pasid.pure.release import ReleaseQueue


def queue_classes():
    """The release queue's twins of the backends tested (tests/backends.py)."""
    classes = []
    if "cython" in BACKEND_NAMES:
        from pasid._core import _ReleaseQueueForTests

        classes.append(pytest.param(_ReleaseQueueForTests, id="cython"))
    if "python" in BACKEND_NAMES:
        classes.append(pytest.param(ReleaseQueue, id="python"))
    return classes


class ReleaseQueueMachine(RuleBasedStateMachine):
    """A release queue beside a sorted list of its (release_at, PASID) entries."""

    queue_class = None     # set per backend

    @initialize(entries=st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.0, 1e300]),
                                           st.integers(0, 40)), max_size=8, unique_by=lambda e: e[1]))
    def setup(self, entries):
        self.queue = self.queue_class(entries)
        self.model = sorted(entries)

    @rule(release_at=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 1e300]), p=st.integers(0, 40))
    def push(self, release_at, p):
        if any(q == p for _, q in self.model):
            return                                  # one entry per PASID, as the allocator keeps
        self.queue.push(release_at, p)
        self.model.append((release_at, p))
        self.model.sort()

    @precondition(lambda self: self.model)
    @rule()
    def pop(self):
        assert self.queue.pop() == self.model.pop(0)[1]

    @rule(now=st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 1e300]))
    def due(self, now):
        assert self.queue.due(now) == (bool(self.model) and self.model[0][0] <= now)

    @invariant()
    def agrees(self):
        assert self.queue.check() is None
        assert len(self.queue) == len(self.model)
        assert self.queue.next() == (self.model[0][0] if self.model else None)
        assert sorted(self.queue.entries()) == self.model


@pytest.mark.parametrize("queue_class", queue_classes())
def test_release_queue_state_machine(queue_class):
    run_state_machine_as_test(type("Machine", (ReleaseQueueMachine,), {"queue_class": queue_class}))


def test_an_empty_release_queue():
    for queue_class in [p.values[0] for p in queue_classes()]:
        q = queue_class()
        assert (len(q), q.next(), q.due(1e300), q.check()) == (0, None, False, None)
        with pytest.raises(IndexError):
            q.pop()


# ---------------------------------------------------------------- the components in use

COMPONENTS = {
    # what each exercises: the rules that reach it (allocation is how PASIDs come to be)
    "release": (AllocationRules, ReferenceRules, TimeRules),
    "owners": (AllocationRules, ReferenceRules, OwnerRules, TimeRules),
    "bindings": (AllocationRules, ReferenceRules, BindingRules, TimeRules),
    "batch": (AllocationRules, ReferenceRules, ReserveRules),
    "export": (AllocationRules, ReferenceRules, BindingRules, OwnerRules, TimeRules,
               SnapshotRules),
}


@pytest.mark.slow
@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_component_state_machine(backend, component):
    run_state_machine_as_test(make_machine(backend, COMPONENTS[component], component.title()),
                              settings=settings(stateful_step_count=40))
