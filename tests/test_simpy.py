"""pasid.simpy: PasidPool, PASIDs as a SimPy resource, on both backends.

Every behavioural test takes ``backend`` and builds the pool's allocator from
``backend.PasidAllocator``. Times are asserted exactly: a waiting request
wakes at the allocator's release time, not a tick later, and nothing polls
(the tests count the timeouts the environment schedules).
"""

import doctest
import os
import subprocess
import sys

import pytest

simpy = pytest.importorskip("simpy", reason="pasid.simpy needs simpy (pip install 'pasid[simpy]')")

import pasid  # noqa: E402
from pasid import InvalidPasid, QuotaExceeded, State, StateError  # noqa: E402
from pasid.simpy import GuestPool, PasidPool, PasidRequest  # noqa: E402


class CountingEnvironment(simpy.Environment):
    """An environment that records every timeout scheduled: (fires at, delay)."""

    def __init__(self):
        super().__init__()
        self.timeouts = []

    def schedule(self, event, priority=simpy.events.NORMAL, delay=0):
        if isinstance(event, simpy.events.Timeout):
            self.timeouts.append((self.now + delay, delay))
        super().schedule(event, priority, delay)


def make_pool(backend, env=None, bits=3, **kwargs):
    env = CountingEnvironment() if env is None else env
    return env, PasidPool(env, bits, allocator_class=backend.PasidAllocator, **kwargs)


def fill(pool):
    """Allocate every FREE PASID directly; the list, ascending."""
    a = pool.allocator
    return [a.alloc() for _ in range(a.stats()["free"])]


def getter(env, pool, log, name, delay=0, **kwargs):
    """A process: after ``delay``, get a PASID and log (name, time, pasid)."""
    if delay:
        yield env.timeout(delay)
    p = yield pool.get(**kwargs)
    log.append((name, env.now, p))


def at(env, delay, action):
    """A process: after ``delay``, call ``action()``."""
    def proc():
        yield env.timeout(delay)
        action()
    return env.process(proc())


# ---------------------------------------------------------------- basics


def test_get_at_once_and_the_allocator(backend):
    env, pool = make_pool(backend, seed=1)
    assert isinstance(pool.allocator, backend.PasidAllocator)
    log = []
    env.process(getter(env, pool, log, "a", owner="proc", data={"asid": 3}))
    env.run()
    assert log == [("a", 0, 1)]
    a = pool.allocator
    assert a.state(1) is State.ACTIVE and a.owner(1) == "proc" and a.data(1) == {"asid": 3}
    stats = pool.stats()
    assert (stats["requests"], stats["granted"], stats["waited"], stats["timers"]) == (1, 1, 0, 0)
    assert a.stats()["failures"] == 0
    assert env.timeouts == []


def test_default_allocator_class_is_pasids():
    env = simpy.Environment()
    pool = PasidPool(env, 4)
    assert type(pool.allocator) is pasid.PasidAllocator
    assert pool.allocator.now == env.now == 0
    assert "PasidPool" in repr(pool)


def test_range_and_argument_errors(backend):
    env, pool = make_pool(backend)
    with pytest.raises(InvalidPasid):
        pool.get(min=5, max=2)
    with pytest.raises(InvalidPasid):
        pool.get(max=8)
    with pytest.raises(TypeError):
        pool.get(min=True)
    with pytest.raises(TypeError):
        pool.get(owner=["unhashable"])
    with pytest.raises(ValueError):
        pool.add_device("gpu", ack=-1)
    with pytest.raises(TypeError):
        pool.add_device("gpu", ack="soon")
    assert pool.get_queue == [] and pool.stats()["requests"] == 0
    r = pool.get(min=6, max=6)
    env.run()
    assert r.value == 6


def test_put_of_a_released_pasid_raises_and_changes_nothing(backend):
    env, pool = make_pool(backend, grace=5)
    p = pool.allocator.alloc()
    pool.put(p)
    before = pool.allocator.to_bytes()
    with pytest.raises(StateError):
        pool.put(p)
    assert pool.allocator.to_bytes() == before


# ---------------------------------------------------------------- waking


def test_waiting_get_wakes_exactly_at_the_release_time(backend):
    # awkward floats: 0.2 + 0.1 is not 0.3, and now + (release_at - now) may round below
    env, pool = make_pool(backend, grace=0.1)
    held = fill(pool)
    log = []
    at(env, 0.2, lambda: pool.put(held[3]))
    env.process(getter(env, pool, log, "w", delay=0.25))
    env.run(until=0.26)
    release_at = pool.allocator.next_release_time()
    assert release_at == 0.2 + 0.1 and pool.allocator.state(held[3]) is State.QUARANTINED
    assert [r.owner for r in pool.get_queue] == [None]
    env.run()
    assert log == [("w", release_at, held[3])]
    assert pool.stats()["timers"] == 1 and pool.stats()["waited"] == 1
    assert pool.stats()["wait_max"] == pytest.approx(release_at - 0.25)
    # the model's three timeouts and the pool's one, at the release time itself
    assert [t for t, _ in env.timeouts] == [0.2, 0.25, release_at]


def test_put_that_frees_wakes_the_first_waiter_at_once(backend):
    env, pool = make_pool(backend)
    held = fill(pool)
    log = []
    env.process(getter(env, pool, log, "first", delay=1))
    env.process(getter(env, pool, log, "second", delay=2))
    at(env, 3, lambda: pool.put(held[4]))
    env.run()
    assert log == [("first", 3, held[4])]
    assert [r.requested_at for r in pool.get_queue] == [2]
    assert pool.stats()["timers"] == 0      # nothing was ever QUARANTINED
    pool.put(held[0])
    env.run()
    assert log[1] == ("second", 3, held[0])


def test_waiters_are_served_in_request_order(backend):
    env, pool = make_pool(backend)
    held = fill(pool)
    log = []
    for i, name in enumerate("abcd"):
        env.process(getter(env, pool, log, name, delay=i + 1))
    for k, p in enumerate([held[5], held[2], held[6], held[0]]):
        at(env, 10 + k, lambda p=p: pool.put(p))
    env.run()
    assert log == [("a", 10, held[5]), ("b", 11, held[2]), ("c", 12, held[6]),
                   ("d", 13, held[0])]


def test_first_fit_a_later_request_takes_only_what_the_head_cannot_use(backend):
    env, pool = make_pool(backend)
    fill(pool)                     # 1..7 ACTIVE
    log = []
    env.process(getter(env, pool, log, "narrow", delay=1, min=1, max=2))   # the head
    env.process(getter(env, pool, log, "wide", delay=2))
    env.process(getter(env, pool, log, "wide2", delay=3))
    at(env, 5, lambda: pool.put(6))          # outside the head's range: the next one gets it
    at(env, 6, lambda: pool.put(2))          # both could use it: the head gets it
    at(env, 7, lambda: pool.put(1))
    env.run()
    assert log == [("wide", 5, 6), ("narrow", 6, 2), ("wide2", 7, 1)]
    # the allocator refused each request once, when made; the head's retry at t=5 (6 is
    # outside its range) is not an allocation
    assert pool.allocator.stats()["failures"] == pool.stats()["waited"] == 3


class Watched:
    """An allocator seen through: counts the calls of each method the pool makes."""

    def __init__(self, allocator):
        self.allocator, self.calls = allocator, {}

    def __getattr__(self, name):
        method = getattr(self.allocator, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)
        return call


def test_a_wakeup_skips_ranges_already_found_empty(backend):
    env, pool = make_pool(backend)
    fill(pool)
    requests = [pool.get(min=1, max=3) for _ in range(5)]
    assert pool.allocator.stats()["failures"] == 5     # each refused once, when made
    watched = pool._allocator = Watched(pool.allocator)
    pool.put(7)                                        # FREE, but in nobody's range
    assert watched.calls.get("states") == 1            # the head looked, the others skipped
    assert "alloc" not in watched.calls                # and nothing was asked to fail
    assert all(r.waiting for r in requests)
    pool.put(3)                                        # the head looks and gets it; the
    assert requests[0].triggered and requests[0].value == 3     # next looks, the rest skip
    assert watched.calls.get("states") == 3 and watched.calls["alloc"] == 1
    assert [r.waiting for r in requests] == [False, True, True, True, True]
    assert pool.allocator.stats()["failures"] == 5     # retries are not refusals


def test_timer_is_replaced_by_an_earlier_release(backend):
    env, pool = make_pool(backend, grace=5)
    pool.add_device("slow", drain=30)
    held = fill(pool)
    pool.bind(held[0], "slow")
    log = []
    pool.put(held[0])                       # DRAINING, the device answers at once: held to 30
    env.process(getter(env, pool, log, "a"))
    env.process(getter(env, pool, log, "b"))
    at(env, 1, lambda: pool.put(held[1]))   # no device: FREE at 1 + 5 = 6, before 30
    env.run()
    assert log == [("a", 6, held[1]), ("b", 30, held[0])]
    assert pool.stats()["timers"] == 2      # 30, then 6 (the first one fires unused)


def test_nothing_polls(backend):
    env, pool = make_pool(backend, grace=10)
    held = fill(pool)
    log = []
    env.process(getter(env, pool, log, "w"))
    env.run(until=1000)
    # nothing QUARANTINED: the waiting request scheduled no timeout at all
    assert env.timeouts == [] and pool.stats()["timers"] == 0 and log == []
    pool.put(held[0])                       # QUARANTINED until 1010
    assert env.timeouts == [(1010, 10)]
    env.run()
    assert log == [("w", 1010, held[0])] and env.now == 1010
    assert len(env.timeouts) == 1


def test_no_timer_without_waiters(backend):
    env, pool = make_pool(backend, grace=10)
    p = pool.allocator.alloc()
    pool.put(p)                             # QUARANTINED until 10, nobody waits
    assert env.timeouts == []
    r = pool.get()                          # something else is FREE: served at once
    assert r.triggered and env.timeouts == []


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize(
    ("grace", "ack", "drain"),
    [(5, 3, 4),          # unbind at 1+3, reusable at max(1+5, 4+4) = 8
     (5, 1, 1),          # unbind at 2, reusable at max(6, 3) = 6
     (0, 2, 0),          # unbind at 3, reusable at once: the unbind wakes the waiter
     (0.1, 0.2, 0.3)],   # floats
)
def test_drain_process_unbinds_after_its_ack(backend, grace, ack, drain):
    env, pool = make_pool(backend, grace=grace)
    assert pool.add_device("gpu", drain=drain, ack=ack) == 0
    held = fill(pool)
    p = held[0]
    pool.bind(p, "gpu")
    pool.bind(p, "gpu")                     # counted per pair: the drain unbinds both
    log = []
    at(env, 1, lambda: pool.put(p))
    env.process(getter(env, pool, log, "w", delay=1))
    env.run(until=1 + ack / 2)
    assert pool.allocator.state(p) is State.DRAINING and pool.allocator.pending("gpu") == [p]
    env.run()
    unbound = 1 + ack
    assert log == [("w", max(1 + grace, unbound + drain), p)]
    assert pool.stats()["drains"] == 1 and pool.allocator.devices(p) == []
    assert pool.allocator.generation(p) == 2


def test_two_devices_the_later_answer_and_the_longer_drain_win(backend):
    env, pool = make_pool(backend, grace=1)
    pool.add_device("gpu", drain=2, ack=lambda pasid: 3)   # unbinds at 3, holds to 5
    pool.add_device("nic", drain=6, ack=1)                 # unbinds at 1, holds to 7
    held = fill(pool)
    pool.bind(held[2], "gpu")
    pool.bind(held[2], "nic")
    log = []
    env.process(getter(env, pool, log, "w"))
    pool.put(held[2])
    env.run(until=2)
    assert pool.allocator.devices(held[2]) == ["gpu"]
    env.run()
    assert log == [("w", 7, held[2])] and pool.stats()["drains"] == 2


def test_a_device_that_never_answers_keeps_the_pasid(backend):
    env, pool = make_pool(backend)
    pool.add_device("hung", ack=None)
    held = fill(pool)
    pool.bind(held[0], "hung")
    log = []
    env.process(getter(env, pool, log, "w"))
    pool.put(held[0])
    env.run(until=100)
    assert log == [] and pool.allocator.state(held[0]) is State.DRAINING
    assert env.timeouts == [] and pool.stats()["drains"] == 0
    at(env, 5, lambda: pool.unbind(held[0], "hung"))      # the model answers for it
    env.run()
    assert log == [("w", 105, held[0])]


def test_a_drain_after_the_model_unbound_does_nothing(backend):
    env, pool = make_pool(backend)
    pool.add_device("gpu", ack=5)
    held = fill(pool)
    pool.bind(held[0], "gpu")
    log = []
    pool.put(held[0])
    pool.unbind(held[0], "gpu")             # the model answered first: FREE
    env.process(getter(env, pool, log, "w"))
    p = pool.allocator.alloc()              # reuse it before the drain fires
    assert p == held[0]
    pool.bind(p, "gpu")                     # a new life, bound again
    env.run()
    assert pool.allocator.devices(p) == ["gpu"] and pool.allocator.state(p) is State.ACTIVE
    assert log == []


def test_remove_device_wakes_and_cancels_its_drains(backend):
    env, pool = make_pool(backend)
    pool.add_device("gpu", ack=50)
    held = fill(pool)
    pool.bind(held[1], "gpu")
    log = []
    env.process(getter(env, pool, log, "w"))
    pool.put(held[1])
    at(env, 4, lambda: pool.remove_device("gpu"))
    env.run()
    assert log == [("w", 4, held[1])]
    assert pool.allocator.state(held[1]) is State.ACTIVE


def test_exit_owner_and_unreserve_wake(backend):
    env, pool = make_pool(backend, reserved=[(0, 1)])
    a = pool.allocator
    for _ in range(6):
        a.alloc(owner="vm")
    log = []
    env.process(getter(env, pool, log, "x"))
    env.process(getter(env, pool, log, "y"))
    env.process(getter(env, pool, log, "z"))
    at(env, 2, lambda: pool.exit_owner("vm"))
    at(env, 1, lambda: pool.unreserve(1))
    env.run()
    assert log == [("x", 1, 1), ("y", 2, 2), ("z", 2, 3)]


def test_teardown_callbacks_run_after_the_release_and_call_back_in(backend):
    # the drain process starts from on_teardown, which reads the allocator
    # (generation) while the release is complete; with ack 0 it unbinds at once
    env, pool = make_pool(backend)
    pool.add_device("gpu", ack=0)
    pool.add_device("nic", ack=0)
    a = pool.allocator
    ps = [a.alloc(owner="proc") for _ in range(3)]
    for p in ps:
        pool.bind(p, "gpu")
        pool.bind(p, "nic")
    assert pool.exit_owner("proc") == ps
    assert all(a.state(p) is State.DRAINING for p in ps)
    env.run()
    assert all(a.state(p) is State.FREE for p in ps) and pool.stats()["drains"] == 6


# ---------------------------------------------------------------- cancelling


def test_cancel_removes_a_waiting_request(backend):
    env, pool = make_pool(backend)
    held = fill(pool)
    first, second = pool.get(), pool.get()
    first.cancel()
    assert pool.get_queue == [second] and not first.waiting
    pool.put(held[0])
    assert second.value == held[0] and not first.triggered
    first.cancel()                          # idempotent
    second.cancel()                         # granted: nothing undone
    assert pool.allocator.state(held[0]) is State.ACTIVE
    assert pool.stats()["cancelled"] == 1


def test_with_block_cancels_on_interrupt(backend):
    env, pool = make_pool(backend)
    held = fill(pool)
    log = []

    def patient():
        try:
            with pool.get() as request:
                p = yield request
            log.append(("patient", env.now, p))
        except simpy.Interrupt:
            log.append(("interrupted", env.now, None))

    proc = env.process(patient())
    env.process(getter(env, pool, log, "next", delay=1))
    at(env, 2, lambda: proc.interrupt())
    at(env, 3, lambda: pool.put(held[0]))
    env.run()
    assert log == [("interrupted", 2, None), ("next", 3, held[0])]
    assert pool.get_queue == []


def test_an_interrupted_waiter_leaves_the_queue_without_a_cancel(backend):
    env, pool = make_pool(backend)
    held = fill(pool)
    log = []

    def careless():
        try:
            p = yield pool.get()
            log.append(("careless", env.now, p))
        except simpy.Interrupt:
            log.append(("interrupted", env.now, None))

    proc = env.process(careless())
    env.process(getter(env, pool, log, "next", delay=1))
    at(env, 2, lambda: proc.interrupt())
    at(env, 3, lambda: pool.put(held[0]))
    env.run()
    assert log == [("interrupted", 2, None), ("next", 3, held[0])]
    assert pool.stats()["withdrawn"] == 1 and pool.allocator.stats()["active"] == len(held)


def test_renege_with_a_condition(backend):
    env, pool = make_pool(backend)
    held = fill(pool)
    log = []

    def impatient():
        request = pool.get()
        result = yield request | env.timeout(4)
        log.append(("impatient", env.now, result[request] if request in result else None))

    env.process(impatient())
    env.process(getter(env, pool, log, "next", delay=1))
    at(env, 6, lambda: pool.put(held[0]))
    env.run()
    assert log == [("impatient", 4, None), ("next", 6, held[0])]


def test_waiting_again_after_an_interrupt_keeps_the_place(backend):
    env, pool = make_pool(backend)
    held = fill(pool)
    log = []

    def stubborn():
        request = pool.get()
        while True:
            try:
                p = yield request
                break
            except simpy.Interrupt:
                log.append(("interrupted", env.now, None))
        log.append(("stubborn", env.now, p))

    proc = env.process(stubborn())
    env.process(getter(env, pool, log, "later", delay=1))
    at(env, 2, lambda: proc.interrupt())
    at(env, 3, lambda: pool.put(held[0]))
    at(env, 4, lambda: pool.put(held[1]))
    env.run()
    assert log == [("interrupted", 2, None), ("stubborn", 3, held[0]), ("later", 4, held[1])]
    assert pool.stats()["withdrawn"] == 0


def test_a_request_not_yet_yielded_keeps_its_place(backend):
    env, pool = make_pool(backend)
    held = fill(pool)
    request = pool.get()                    # made now, yielded later
    log = []

    def late():
        yield env.timeout(5)
        p = yield request
        log.append(("late", env.now, p))

    env.process(late())
    env.process(getter(env, pool, log, "other", delay=1))
    at(env, 2, lambda: pool.put(held[0]))
    env.run()
    assert log == [("late", 5, held[0])]
    assert isinstance(request, PasidRequest) and request.granted_at == 2


# ---------------------------------------------------------------- counting what was asked


def busy_host(backend, seed=0):
    """200 processes on 31 PASIDs (grace, devices with drain processes), a third of them
    asking for a PASID below 8: every request is served, many after waiting, and many
    wake-ups free PASIDs only outside a narrow waiter's range."""
    import random

    rng = random.Random(seed)
    env, pool = make_pool(backend, bits=5, grace=3)
    pool.add_device("gpu", drain=2, ack=lambda p: rng.uniform(0, 4))

    def process(index):
        yield env.timeout(index * 0.2)
        p = yield pool.get(owner=f"proc{index}", max=7 if index % 3 == 0 else None)
        pool.bind(p, "gpu")
        yield env.timeout(rng.uniform(2, 12))
        pool.put(p)

    for index in range(200):
        env.process(process(index))
    env.run()
    return pool


def test_a_request_that_waits_is_one_refusal_not_one_per_retry(backend):
    # stats()["failures"] counts what the model asked: a request the allocator could not
    # serve when made (it waits: pool.stats()["waited"]), never the pool's retries
    pool = busy_host(backend)
    counts, allocator = pool.stats(), pool.allocator.stats()
    assert counts["granted"] == allocator["allocations"] == 200
    assert counts["waited"] > 50 and counts["timers"] > 0
    assert allocator["failures"] == counts["waited"]


def test_a_guest_request_that_waits_is_one_refusal_too(vm_backend):
    import random

    rng = random.Random(1)
    env, pool = make_pool(vm_backend, bits=5, grace=3)
    for device in ("vf0", "vf1"):
        pool.add_device(device, drain=2, ack=lambda p: rng.uniform(0, 4))
    vms = [pool.add_vm("quota", quota=4, devices=["vf0"]),          # waits at its quota
           pool.add_vm("narrow", mode="identity", min=1, max=6, devices=["vf1"])]

    def process(vm, index):
        yield env.timeout(index * 0.3)
        g = yield vm.get(owner=index)
        vm.bind(g, vm.vm.devices[0])
        yield env.timeout(rng.uniform(2, 12))
        vm.put(g)

    for index in range(100):
        env.process(process(vms[index % 2], index))
    env.run()
    waited = [vm.stats()["waited"] for vm in vms]
    assert all(count > 10 for count in waited)
    assert [vm.vm.stats()["allocations"] for vm in vms] == [50, 50]
    assert [vm.vm.stats()["failures"] for vm in vms] == waited
    assert pool.allocator.stats()["failures"] == sum(waited) == pool.stats()["waited"]


# ---------------------------------------------------------------- quota


def test_quota_fails_the_request_at_once(backend):
    env, pool = make_pool(backend)
    pool.set_quota("vm", 1)
    log = []

    def proc():
        p = yield pool.get(owner="vm")
        log.append(("first", env.now, p))
        try:
            yield pool.get(owner="vm")
        except QuotaExceeded as exc:
            log.append(("refused", env.now, type(exc).__name__))

    env.process(proc())
    env.run()
    assert log == [("first", 0, 1), ("refused", 0, "QuotaExceeded")]
    assert pool.stats()["refused"] == 1 and pool.get_queue == []


def test_quota_reached_while_waiting_fails_when_tried(backend):
    env, pool = make_pool(backend)
    held = fill(pool)
    pool.set_quota("vm", 1)
    log = []

    def proc(name):
        try:
            p = yield pool.get(owner="vm")
            log.append((name, env.now, p))
        except QuotaExceeded:
            log.append((name, env.now, "quota"))

    env.process(proc("a"))
    env.process(proc("b"))
    env.process(getter(env, pool, log, "c", delay=1))
    at(env, 2, lambda: pool.put(held[0]))   # a gets it: vm is at its quota
    at(env, 3, lambda: pool.put(held[1]))   # b is tried: refused; c, behind it, is served
    env.run()
    assert log == [("a", 2, held[0]), ("b", 3, "quota"), ("c", 3, held[1])]



@pytest.mark.parametrize("owner_frees", [False, True], ids=["still at quota", "below it"])
def test_a_waiter_at_its_quota_is_tried_when_its_range_has_a_pasid(backend, owner_frees):
    # tried means: a PASID in its range is FREE; a wake-up that frees PASIDs elsewhere
    # leaves it waiting (and counts nothing), whatever its owner holds meanwhile
    env, pool = make_pool(backend)
    held = fill(pool)                       # 1..7
    pool.allocator.put(held[0])             # FREE again: 1, outside 2..3
    log = []

    def proc():
        try:
            p = yield pool.get(owner="vm", min=2, max=3)      # waits
            log.append((env.now, p))
        except QuotaExceeded:
            log.append((env.now, "quota"))

    env.process(proc())
    env.step()                              # the process has asked
    mine = pool.get(owner="vm")             # takes 1: the owner is at its quota
    pool.set_quota("vm", 1)
    at(env, 1, lambda: pool.put(held[5]))   # 6: outside the range
    if owner_frees:
        at(env, 2, lambda: pool.put(mine.value))
    at(env, 3, lambda: pool.put(held[1]))   # 2: in the range
    env.run()
    assert mine.value == 1
    assert log == ([(3, 2)] if owner_frees else [(3, "quota")])
    # one refusal when made (nothing in 2..3), and the quota's if it came to that
    assert pool.allocator.stats()["failures"] == (1 if owner_frees else 2)

# ---------------------------------------------------------------- virtual machines


@pytest.fixture
def vm_backend(backend):
    """``backend``, for the tests of GuestPool."""
    return backend


def guest_getter(env, vm, log, name, delay=0, **kwargs):
    """A process: after ``delay``, get a guest PASID from ``vm`` and log
    (name, time, guest PASID, host PASID)."""
    if delay:
        yield env.timeout(delay)
    g = yield vm.get(**kwargs)
    log.append((name, env.now, g, vm.vm.host_pasid(g)))


@pytest.mark.parametrize(("bound", "served_at"), [(False, 1 + 5), (True, 8)])
def test_a_guest_request_waits_for_the_quota_grace_and_drain(vm_backend, bound, served_at):
    env, pool = make_pool(vm_backend, grace=5)
    acked = []
    pool.add_device("vf0", drain=4, ack=lambda pasid: acked.append(pasid) or 3)
    vm = pool.add_vm("vm0", quota=2, min=4, devices=["vf0"])
    first, second = vm.get(owner="init"), vm.get()
    assert (first.value, second.value) == (1, 2)          # served inside get
    h = vm.vm.host_pasid(1)
    assert h == 4 and pool.allocator.owner(h) == "vm0" and vm.vm.owner(1) == "init"
    if bound:
        vm.bind(1, "vf0")
    log = []
    env.process(guest_getter(env, vm, log, "w"))
    at(env, 1, lambda: vm.put(1))
    env.run(until=1.5)
    assert log == [] and [r.pool for r in pool.get_queue] == [vm] and vm.get_queue
    assert vm.vm.state(1) is State.FREE                   # the guest number at once
    assert pool.allocator.state(h) is (State.DRAINING if bound else State.QUARANTINED)
    env.run()
    # unbound: FREE at 1 + grace; bound: the drain process unbinds the HOST PASID at
    # 1 + 3, FREE at max(1 + 5, 4 + 4)
    assert log == [("w", served_at, 1, h)]
    assert acked == ([h] if bound else []) and pool.allocator.devices(h) == []
    assert pool.stats()["timers"] == 1 and pool.stats()["drains"] == int(bound)
    stats = vm.stats()
    assert (stats["requests"], stats["granted"], stats["waited"]) == (3, 3, 1)
    assert stats["wait_max"] == served_at and pool.stats()["requests"] == 3


def test_the_vms_quota_makes_guests_wait_where_a_host_owner_is_refused(vm_backend):
    env, pool = make_pool(vm_backend)
    pool.set_quota("proc", 0)
    vm = pool.add_vm("vm0", quota=0)
    host_request, guest_request = pool.get(owner="proc"), vm.get()
    assert not host_request.ok and isinstance(host_request.value, QuotaExceeded)
    host_request.defused = True
    assert guest_request.waiting and not guest_request.triggered
    pool.allocator.set_quota("vm0", 1)
    pool.wake()
    assert guest_request.value == 1 and vm.stats()["refused"] == 0


def test_a_host_release_wakes_an_identity_guest_in_its_range(vm_backend):
    env, pool = make_pool(vm_backend)
    held = fill(pool)                                     # the host holds 1..7
    vm = pool.add_vm("vm0", mode="identity", min=5, max=6)
    log = []
    env.process(guest_getter(env, vm, log, "guest"))
    env.process(getter(env, pool, log, "host", delay=1))
    at(env, 2, lambda: pool.put(held[1]))                 # 2: outside the VM's range
    at(env, 3, lambda: pool.put(held[5]))                 # 6: the guest's, then its number
    env.run()
    assert log == [("host", 2, 2), ("guest", 3, 6, 6)]
    assert vm.vm.guest_pasid(6) == 6 and pool.allocator.owner(6) == "vm0"


def test_two_vms_on_one_host_are_served_in_request_order(vm_backend):
    env, pool = make_pool(vm_backend)
    held = fill(pool)
    a, b = pool.add_vm("a", quota=1), pool.add_vm("b")
    log = []
    env.process(guest_getter(env, a, log, "a1", delay=1))
    env.process(guest_getter(env, b, log, "b1", delay=2))
    env.process(guest_getter(env, a, log, "a2", delay=3))  # a is at its quota by then
    env.process(getter(env, pool, log, "host", delay=4))
    at(env, 5, lambda: pool.put(held[6]))                 # the oldest: a
    at(env, 6, lambda: pool.put(held[2]))                 # a at its quota: b
    at(env, 7, lambda: pool.put(held[0]))                 # a skipped again: the host
    at(env, 8, lambda: a.put(1))                          # no grace: FREE, a takes it back
    env.run()
    # two VMs hold guest PASID 1, each over its own host PASID
    assert log == [("a1", 5, 1, 7), ("b1", 6, 1, 3), ("host", 7, 1), ("a2", 8, 1, 7)]
    assert pool.get_queue == [] and (a.stats()["granted"], b.stats()["granted"]) == (2, 1)


def test_translated_numbers_come_back_at_once_identity_ones_after_the_host(vm_backend):
    env, pool = make_pool(vm_backend, grace=10)
    translated = pool.add_vm("t", bits=1)                 # guest PASIDs: 1 only
    identity = pool.add_vm("i", mode="identity", min=7, max=7)
    assert translated.get().value == 1 and identity.get().value == 7
    log = []
    env.process(guest_getter(env, translated, log, "t"))
    env.process(guest_getter(env, identity, log, "i"))
    at(env, 2, lambda: (translated.put(1), identity.put(7)))
    env.run()
    # translated: the guest number at once, on another host PASID; identity: 7 itself,
    # once the host's quarantine of 7 ends
    assert log == [("t", 2, 1, 2), ("i", 12, 7, 7)]
    assert env.now == 12 and pool.allocator.state(1) is State.FREE   # t's first host PASID


def test_guest_requests_are_withdrawn_and_cancelled_as_host_ones(vm_backend):
    env, pool = make_pool(vm_backend)
    vm = pool.add_vm("vm0", quota=1)
    assert vm.get().value == 1
    log = []

    def careless():
        try:
            g = yield vm.get()
            log.append(("careless", env.now, g))
        except simpy.Interrupt:
            log.append(("interrupted", env.now, None))

    def impatient():
        request = vm.get()
        yield request | env.timeout(3)
        log.append(("impatient", env.now, request.value if request.triggered else None))

    cancelled = vm.get()
    proc = env.process(careless())
    env.process(impatient())
    env.process(guest_getter(env, vm, log, "last", delay=1))
    cancelled.cancel()
    at(env, 2, lambda: proc.interrupt())
    at(env, 5, lambda: vm.put(1))
    env.run()
    assert log == [("interrupted", 2, None), ("impatient", 3, None), ("last", 5, 1, 1)]
    assert not cancelled.triggered and pool.get_queue == []
    stats = vm.stats()
    assert (stats["cancelled"], stats["withdrawn"], stats["waiting"]) == (1, 2, 0)
    assert pool.stats()["withdrawn"] == 2


@pytest.mark.parametrize("grace", [0, 5])   # 5: nothing FREE when it goes, still refused
def test_removing_a_vm_fails_its_waiters_and_wakes_the_others(vm_backend, grace):
    env, pool = make_pool(vm_backend, grace=grace)
    doomed, other = pool.add_vm("doomed"), pool.add_vm("other")
    mine = [doomed.get().value for _ in range(7)]         # the host is full
    log = []

    def waiter(vm, name):
        try:
            g = yield vm.get()
            log.append((name, env.now, g))
        except StateError as exc:
            log.append((name, env.now, str(exc)))

    env.process(waiter(doomed, "doomed"))
    env.process(waiter(other, "other"))
    env.process(getter(env, pool, log, "host", delay=1))
    at(env, 2, lambda: log.append(("removed", env.now, pool.remove_vm("doomed"))))
    env.run()
    assert mine == list(range(1, 8))
    assert log == [("removed", 2, mine), ("doomed", 2, "VM 'doomed' has been removed"),
                   ("other", 2 + grace, 1), ("host", 2 + grace, 2)]
    assert doomed.stats()["refused"] == 1 and "removed" in repr(doomed)
    with pytest.raises(StateError, match="has been removed"):
        doomed.get()
    with pytest.raises(StateError):
        pool.vm("doomed")


def test_a_vm_removed_on_the_allocator_fails_its_waiters_on_wake(vm_backend):
    env, pool = make_pool(vm_backend, bits=1)
    vm = pool.add_vm("vm0")
    assert vm.get().value == 1
    request = vm.get()
    pool.allocator.remove_vm("vm0")
    assert request.waiting
    pool.wake()
    assert not request.ok and isinstance(request.value, StateError)
    request.defused = True


def test_guest_errors_are_the_guest_spaces(vm_backend):
    env, pool = make_pool(vm_backend, grace=5)
    pool.add_device("vf0")
    pool.add_device("vf1")
    with pytest.raises(InvalidPasid):
        pool.add_vm("wide", bits=4)                       # wider than the host's 3 bits
    with pytest.raises(StateError):
        pool.vm("nobody")
    vm = pool.add_vm("vm0", devices=["vf0"])
    with pytest.raises(StateError):
        pool.add_vm("vm1", devices=["vf0"])               # a device belongs to one VM
    g = vm.get().value
    before = (pool.allocator.stats(), list(pool.allocator), [list(pool.allocator.vm(n)) for n in pool.allocator.vms()])
    with pytest.raises(StateError):
        vm.bind(g, "vf1")                                 # not the VM's
    with pytest.raises(StateError):
        vm.put(g + 1)
    with pytest.raises(StateError):
        vm.unbind(g, "vf0")
    with pytest.raises(InvalidPasid):
        vm.put(8)
    with pytest.raises(TypeError):
        vm.put(1.0)
    assert (pool.allocator.stats(), list(pool.allocator), [list(pool.allocator.vm(n)) for n in pool.allocator.vms()]) == before and pool.get_queue == []
    vm.put(g)
    with pytest.raises(StateError):
        vm.put(g)                                         # already freed
    assert vm.stats()["requests"] == 1


def test_vcmd_through_the_pool_wakes(vm_backend):
    from pasid._vcmd import ALLOC, FREE, Status, respond

    env, pool = make_pool(vm_backend, bits=1)
    vm = pool.add_vm("vm0")
    assert vm.vcmd(ALLOC) == 1 << 16                      # success, guest PASID 1
    assert vm.vcmd(ALLOC) == respond(Status.NO_PASID, 0, "3.3")   # no wait: a status
    assert len(vm.vm) == 1
    request = vm.get()
    assert request.waiting
    vm.vcmd(FREE | 1 << 16)
    assert request.value == 1


def test_a_vm_migrates_between_two_host_pools(vm_backend):
    env = simpy.Environment()
    pools = [PasidPool(env, 4, grace=5, allocator_class=vm_backend.PasidAllocator)
             for _ in range(2)]
    for pool in pools:
        pool.add_device("vf0", drain=1, ack=2)
    src, dst = pools
    dst.allocator.alloc_many(3)                           # so the host PASIDs differ
    vm = src.add_vm("vm0", devices=["vf0"])
    gs = [vm.get(owner=f"p{i}").value for i in range(3)]
    vm.bind(gs[1], "vf0")
    moved = dst.import_vm(vm.vm.export(), "vm0")
    released = src.remove_vm("vm0")
    assert sorted(moved.vm) == gs and moved.vm.owner(gs[2]) == "p2"
    assert [moved.vm.host_pasid(g) for g in gs] == [4, 5, 6] and released == [1, 2, 3]
    assert dst.allocator.devices(5) == ["vf0"] and src.allocator.state(2) is State.DRAINING
    env.run()
    # the source's drain process unbound its host PASID at 2: FREE at max(0 + 5, 2 + 1)
    assert env.now == 2 and src.allocator.devices(2) == []
    assert src.allocator.state(2) is State.QUARANTINED
    env.run(until=5)
    assert src.allocator.state(2) is State.FREE and src.allocator.stats()["free"] == 15
    moved.put(gs[0])
    assert moved.get().value == gs[0]                     # a translated number: at once


# ---------------------------------------------------------------- the module


def test_doctests():
    import pasid.simpy as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def run_python(code):
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)


def test_import_pasid_does_not_import_simpy():
    proc = run_python("import sys, pasid; assert 'simpy' not in sys.modules, sys.modules.keys()")
    assert proc.returncode == 0, proc.stderr


def test_missing_simpy_gives_one_clear_error():
    proc = run_python(
        "import sys\n"
        "sys.modules['simpy'] = None\n"
        "try:\n"
        "    import pasid.simpy\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "pasid.simpy needs simpy: pip install 'pasid[simpy]'"


def readme_simpy_example():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = text.index("```python\n", text.index("### SimPy\n")) + len("```python\n")
    return text[start:text.index("```", start)]


@pytest.mark.parametrize("pure", [False, True], ids=["default backend", "pure backend"])
def test_the_readmes_simpy_example_counts_each_wait_once(pure):
    code = readme_simpy_example()
    assert "PasidPool(env, bits=8" in code and "pool.bind(p, \"gpu\")" in code
    env = {**os.environ, **({"PASID_NO_EXTENSION": "1"} if pure else {})}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "45 45\n"               # waited, failures: one per request that waited
