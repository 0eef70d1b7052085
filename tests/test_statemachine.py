"""A Hypothesis state machine: PasidAllocator beside the reference model (tests/model.py).

The machine draws the strategy and the seed; the model predicts the outcome
of every call (value, or which error), which ID each allocation gets, and the
resulting state. After every step: ``_check()``, the stats, the ACTIVE set,
every state, refcount, owner and generation, ``pending`` and
``next_release_time``.
"""

import copy
import pickle
import re

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pasid import InvalidPasid, PasidExhausted, QuotaExceeded, State, StateError

from backends import ALL_BACKENDS, load_backend
from model import ACTIVE, DRAINING, FREE, RESERVED, STRATEGIES, Model

BITS = 5
SIZE = 1 << BITS
OWNERS = [None, "a", "b"]
DEVICES = {"d0": (20, 0), "d1": (20, 1), "narrow": (3, 0)}   # name -> (bits, drain)
assert (FREE, RESERVED, ACTIVE, DRAINING) == tuple(int(s) for s in State)[:4]

pasids = st.integers(0, SIZE - 1)
owners = st.sampled_from(OWNERS)
devices = st.sampled_from(sorted(DEVICES))


class PasidMachineBase(RuleBasedStateMachine):
    """Holds the allocator under test (``self.a``) and the model (``self.m``)."""

    backend = None   # set by make_machine

    @initialize(grace=st.sampled_from([0, 2]), strategy=st.sampled_from(STRATEGIES),
                seed=st.integers(0, 2**64 - 1))
    def setup(self, grace, strategy, seed):
        self.a = self.backend.PasidAllocator(bits=BITS, grace=grace, strategy=strategy, seed=seed)
        self.m = Model(SIZE, grace, strategy=strategy, seed=seed, devices=DEVICES.items())
        for name, (bits, drain) in DEVICES.items():
            self.a.add_device(name, bits=bits, drain=drain)

    # ---- helpers
    def pick(self, data, *states):
        """Mostly a PASID in one of ``states``, sometimes any PASID."""
        candidates = [p for p in range(SIZE) if self.m.state[p] in states]
        if candidates and data.draw(st.integers(0, 3), label="from live") > 0:
            return data.draw(st.sampled_from(candidates), label="pasid")
        return data.draw(pasids, label="pasid")

    def expect_error(self, error, call, *args, **kwargs):
        with pytest.raises(error):
            call(*args, **kwargs)

    # ---- invariants
    @invariant()
    def agrees_with_model(self):
        if not hasattr(self, "a"):
            return
        a, m = self.a, self.m
        a._check()
        assert a.stats() == m.stats()
        assert list(a) == m.ids(ACTIVE)
        assert len(a) == len(m.ids(ACTIVE))
        assert a.states(range(SIZE)).tolist() == m.state
        assert [a.refcount(p) for p in range(SIZE)] == m.refcount
        assert [a.owner(p) for p in range(SIZE)] == m.owner
        assert [a.generation(p) for p in range(SIZE)] == m.generation
        assert a.next_release_time() == m.next_release_time()
        for device in m.devices:
            assert a.pending(device) == m.pending(device)


class AllocationRules:
    """Rules: alloc, alloc_exact, alloc_many (the batch's fill)."""

    @rule(owner=owners, lo=st.none() | pasids, hi=st.none() | pasids, use_try=st.booleans())
    def alloc(self, owner, lo, hi, use_try):
        m = self.m
        first, last = (0 if lo is None else lo), (SIZE - 1 if hi is None else hi)
        call = self.a.try_alloc if use_try else self.a.alloc
        if first > last:
            self.expect_error(InvalidPasid, call, owner, min=lo, max=hi)
            return
        candidates = [p for p in range(first, last + 1) if m.state[p] == FREE]
        quota = m.quota_refuses(owner, 1)
        if quota or not candidates:
            m.failures += 1
            if use_try:
                assert call(owner, min=lo, max=hi) is None
            else:
                # both refusals are PasidExhausted; a quota alone is QuotaExceeded
                error = QuotaExceeded if quota and candidates else PasidExhausted
                self.expect_error(error, call, owner, min=lo, max=hi)
            return
        got = call(owner, data=("d", owner), min=lo, max=hi)
        assert got == m.choose(first, last)
        m.activate(got, owner)
        assert self.a.owner(got) == owner
        assert self.a.data(got) == ("d", owner)
        assert self.a.generation(got) == m.generation[got]

    @rule(data=st.data(), owner=owners)
    def alloc_exact(self, data, owner):
        m = self.m
        p = self.pick(data, FREE)
        if m.state[p] != FREE:
            self.expect_error(StateError, self.a.alloc_exact, p, owner)
        elif m.quota_refuses(owner, 1):
            m.failures += 1
            self.expect_error(QuotaExceeded, self.a.alloc_exact, p, owner)
        else:
            assert self.a.alloc_exact(p, owner) == p
            m.activate(p, owner, by_strategy=False)

    @rule(n=st.integers(-1, 6), owner=owners)
    def alloc_many(self, n, owner):
        m = self.m
        if n < 0:
            self.expect_error(ValueError, self.a.alloc_many, n, owner)
            return
        free = m.ids(FREE)
        quota = m.quota_refuses(owner, n)
        if quota or n > len(free):
            m.failures += 1
            error = QuotaExceeded if quota and n <= len(free) else PasidExhausted
            self.expect_error(error, self.a.alloc_many, n, owner)
            return
        got = self.a.alloc_many(n, owner).tolist()
        expected = []
        for _ in range(n):                  # the same IDs as n calls of alloc
            expected.append(m.choose(0, SIZE - 1))
            m.activate(expected[-1], owner)
        assert got == expected


class ReferenceRules:
    """Rules: get, put, free_many."""

    @rule(data=st.data())
    def get(self, data):
        p = self.pick(data, ACTIVE)
        if self.m.state[p] != ACTIVE:
            self.expect_error(StateError, self.a.get, p)
        else:
            self.a.get(p)
            self.m.refcount[p] += 1

    @rule(data=st.data(), use_free=st.booleans())
    def put(self, data, use_free):
        self._put(self.pick(data, ACTIVE), use_free)

    def _put(self, p, use_free=False):
        call = self.a.free if use_free else self.a.put
        if self.m.state[p] != ACTIVE:
            self.expect_error(StateError, call, p)
            return
        call(p)
        self.m.put(p)

    @rule(data=st.data())
    def free_many(self, data):
        m = self.m
        ids = data.draw(st.lists(st.sampled_from(m.ids(ACTIVE) or [1]) | pasids, max_size=4),
                        label="ids")
        refcount = list(m.refcount)
        ok = True
        for p in ids:
            if m.state[p] != ACTIVE or refcount[p] == 0:
                ok = False
                break
            refcount[p] -= 1
        if not ok:
            self.expect_error(StateError, self.a.free_many, ids)
            return
        self.a.free_many(ids)
        for p in ids:                       # as successive free calls
            m.put(p)


class BindingRules:
    """Rules: bind, unbind, a device's whole lifecycle, add and remove devices (with
    TimeRules: a lifecycle waits out the drain)."""

    @rule(data=st.data(), device=devices, tag=st.none() | st.integers(0, 3))
    def bind(self, data, device, tag):
        self._bind(self.pick(data, ACTIVE), device, tag)

    def _bind(self, p, device, tag=None):
        m = self.m
        bits = m.devices[device][0] if device in m.devices else 20
        if m.state[p] != ACTIVE:
            # a non-ACTIVE PASID that is also too wide: either error is right
            error = StateError if p < (1 << bits) else (StateError, InvalidPasid)
            self.expect_error(error, self.a.bind, p, device, data=tag)
            return
        if p >= (1 << bits):
            self.expect_error(InvalidPasid, self.a.bind, p, device, data=tag)
            return
        self.a.bind(p, device, data=tag)
        if device not in m.devices:
            m.devices[device] = [20, 0]
        bindings = m.bindings[p]
        bindings[device] = bindings.get(device, 0) + 1
        assert self.a.devices(p) == list(bindings)
        if tag is not None or bindings[device] == 1:
            assert self.a.binding(p, device) == tag

    @rule(data=st.data(), device=devices)
    def unbind(self, data, device):
        m = self.m
        bound = [(p, d) for p in range(SIZE) for d in m.bindings[p]]
        if bound and data.draw(st.integers(0, 3), label="bound pair") > 0:
            p, device = data.draw(st.sampled_from(bound), label="pair")
        else:
            p = self.pick(data, ACTIVE, DRAINING)
        self._unbind(p, device)

    def _unbind(self, p, device):
        m = self.m
        bindings = m.bindings[p]
        if m.state[p] not in (ACTIVE, DRAINING) or device not in bindings:
            self.expect_error(StateError, self.a.unbind, p, device)
            return
        self.a.unbind(p, device)
        m.unbind(p, device)

    @rule(owner=owners, device=devices, unbind_first=st.booleans(), wait=st.sampled_from([0, 1, 2]))
    def device_lifecycle(self, owner, device, unbind_first, wait):
        """A whole driver story in one step: alloc, bind, (unbind,) put, (unbind), time passes."""
        before = set(self.m.ids(ACTIVE))
        self.alloc(owner, None, None, False)
        added = set(self.m.ids(ACTIVE)) - before
        if not added:
            return
        p = added.pop()
        self._bind(p, device, "story")
        if unbind_first and device in self.m.bindings[p]:
            self._unbind(p, device)
            self.advance(wait, False)
        self._put(p)
        if not unbind_first and device in self.m.bindings[p]:
            self.advance(wait, True)
            self._unbind(p, device)

    @rule(device=devices)
    def remove_device(self, device):
        m = self.m
        if device not in m.devices:
            self.expect_error(StateError, self.a.remove_device, device)
            return
        self.a.remove_device(device)
        m.remove_device(device)

    @rule(device=devices, drain=st.sampled_from([0, 1, 3]), bits=st.sampled_from([2, 3, 20]))
    def add_device(self, device, drain, bits):
        m = self.m
        bound = [p for p in range(SIZE) if device in m.bindings[p]]
        if bound and max(bound) >= (1 << bits):
            self.expect_error(InvalidPasid, self.a.add_device, device, bits=bits, drain=drain)
            return
        self.a.add_device(device, bits=bits, drain=drain)
        m.devices[device] = [bits, drain]


class OwnerRules:
    """Rules: exit_owner, set_quota."""

    @rule(owner=owners)
    def exit_owner(self, owner):
        m = self.m
        if owner is None:
            self.expect_error(ValueError, self.a.exit_owner, None)
            return
        expected = [p for p in range(SIZE) if m.state[p] == ACTIVE and m.owner[p] == owner]
        assert self.a.exit_owner(owner) == expected
        for p in expected:
            m.release(p)

    @rule(owner=st.sampled_from(["a", "b"]), n=st.none() | st.integers(0, 4))
    def set_quota(self, owner, n):
        self.a.set_quota(owner, n)
        if n is None:
            self.m.quota.pop(owner, None)
        else:
            self.m.quota[owner] = n


class ReserveRules:
    """Rules: reserve and unreserve ranges."""

    @rule(lo=pasids, width=st.integers(-1, 3), undo=st.booleans())
    def reserve_range(self, lo, width, undo):
        m = self.m
        hi = None if width == 0 else min(SIZE - 1, lo + width)
        last = lo if hi is None else hi
        call = self.a.unreserve if undo else self.a.reserve
        if last < lo:
            self.expect_error(InvalidPasid, call, lo, hi)
            return
        need = RESERVED if undo else FREE
        offenders = [p for p in range(lo, last + 1) if m.state[p] != need]
        if offenders:
            with pytest.raises(StateError) as info:
                call(lo, hi)
            assert re.search(rf"(?<!\d){offenders[0]}(?!\d)", str(info.value)), info.value
            return
        call(lo, hi)
        for p in range(lo, last + 1):
            (m.unreserve if undo else m.reserve)(p)


class TimeRules:
    """Rules: advance the clock (the release queue's reclaim)."""

    @rule(by=st.sampled_from([0, 1, 2, 3]), absolute=st.booleans())
    def advance(self, by, absolute):
        m = self.m
        if absolute:
            got = self.a.advance(to=m.now + by)
        else:
            got = self.a.advance(by=by)
        m.now += by
        assert got == m.reclaim()
        assert self.a.now == m.now

    @precondition(lambda self: self.m.now > 0)
    @rule()
    def advance_backwards(self):
        self.expect_error(ValueError, self.a.advance, to=self.m.now - 1)


class SnapshotRules:
    """Rules: reload through bytes, pickle, deepcopy, the other backend."""

    @rule(how=st.sampled_from(["bytes", "pickle", "deepcopy", "other backend"]))
    def reload(self, how):
        """Go on with a reloaded copy: nothing the model sees may change (no callbacks here)."""
        blob = self.a.to_bytes()
        if how == "bytes":
            self.a = self.backend.PasidAllocator.from_bytes(blob)
        elif how == "pickle":
            self.a = pickle.loads(pickle.dumps(self.a))
        elif how == "deepcopy":
            self.a = copy.deepcopy(self.a)
        else:
            # through the other backend when there is one (not with PASID_NO_EXTENSION=1)
            others = [load_backend(name) for name in ALL_BACKENDS]
            other = next((m for m in others if m is not self.backend), self.backend)
            self.a = self.backend.PasidAllocator.from_bytes(
                other.PasidAllocator.from_bytes(blob).to_bytes()
            )
        assert self.a.to_bytes() == blob


ALL_RULES = (AllocationRules, ReferenceRules, BindingRules, OwnerRules, ReserveRules, TimeRules, SnapshotRules)


def make_machine(backend, rules=ALL_RULES, name="Pasid"):
    """The state machine class for one backend module, with the rules of ``rules``."""
    return type(
        f"{name}Machine_{backend.__name__.replace('.', '_')}",
        (*rules, PasidMachineBase),
        {"backend": backend},
    )


def test_allocator_state_machine(backend):
    run_state_machine_as_test(make_machine(backend))
