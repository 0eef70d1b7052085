"""Scenario tests for the lifecycle asks of SPEC §1 and §3.1-3.2.

Each test tells one driver's story: a GPU with VM contexts, a process with
file descriptors, a grace period, devices draining their queues, the OOM
killer, teardown callbacks, hot-unplug, device widths and quotas.
"""

import pytest

from pasid import InvalidPasid, PasidExhausted, PasidHandle, QuotaExceeded, State, StateError

from observe import observable


# ---------------------------------------------------------------- 1. PASIDs without a process


def test_vm_contexts_without_owner(backend):
    a = backend.PasidAllocator(bits=6)
    contexts = [a.alloc(data=("vm", i)) for i in range(10)]
    assert contexts == list(range(1, 11))
    for i, p in enumerate(contexts):
        assert a.owner(p) is None
        assert a.data(p) == ("vm", i)
        assert a.state(p) == State.ACTIVE
    a.bind(contexts[0], "gpu")
    a.free(contexts[0])
    assert a.state(contexts[0]) == State.DRAINING
    with pytest.raises(ValueError):
        a.exit_owner(None)
    assert a.state(contexts[1]) == State.ACTIVE
    a._check()


# ---------------------------------------------------------------- 3. lifetime by reference


def test_fd_open_dup_close(backend):
    a = backend.PasidAllocator(bits=5)
    h = a.open("proc", data="mm")
    assert isinstance(h, PasidHandle)
    p = h.pasid
    assert (p, h.generation, h.closed, h.valid) == (1, 1, False, True)
    assert a.owner(p) == "proc" and a.data(p) == "mm"
    h2 = h.dup()
    h3 = h2.dup()
    assert h3.pasid == p and h3.generation == 1
    assert a.refcount(p) == 3
    h.close()
    assert h.closed and not h.valid and h2.valid
    h.close()                                  # closing twice is a no-op
    assert a.refcount(p) == 2
    with pytest.raises(StateError):
        h.dup()
    h3.close()
    assert a.state(p) == State.ACTIVE
    h2.close()                                 # the last close releases
    assert a.state(p) == State.FREE
    assert a.stats()["releases"] == 1
    a._check()


def test_fd_context_manager(backend):
    a = backend.PasidAllocator(bits=5, grace=1)
    with a.open(min=4) as h:
        assert h.pasid == 4 and a.state(4) == State.ACTIVE
        with h.dup() as h2:
            assert a.refcount(4) == 2
        assert h2.closed and a.refcount(4) == 1
    assert h.closed
    assert a.state(4) == State.QUARANTINED
    with pytest.raises(RuntimeError):
        with a.open() as h:
            raise RuntimeError("boom")
    assert h.closed and a.state(h.pasid) == State.QUARANTINED
    a._check()


def test_open_refused_like_alloc(backend):
    a = backend.PasidAllocator(bits=2)
    handles = [a.open() for _ in range(3)]
    with pytest.raises(PasidExhausted):
        a.open()
    a.set_quota("o", 0)
    handles[0].close()
    with pytest.raises(QuotaExceeded):
        a.open("o")
    assert a.stats()["failures"] == 2
    a._check()


def test_reused_handle_does_not_touch_new_life(backend):
    a = backend.PasidAllocator(bits=3)
    h = a.open()
    p = h.pasid
    a.free(p)                                  # released behind the handle's back
    q = a.alloc()
    assert q == p and a.generation(p) == 2
    assert not h.valid
    with pytest.raises(StateError):
        h.dup()
    h.close()
    assert a.state(p) == State.ACTIVE and a.refcount(p) == 1
    a._check()


# ---------------------------------------------------------------- 4. grace, the clocks


def test_grace_logical_clock(backend):
    a = backend.PasidAllocator(bits=4, grace=10)
    assert a.now == 0
    assert a.next_release_time() is None
    p = a.alloc()
    a.advance(by=3)
    a.free(p)
    assert a.state(p) == State.QUARANTINED
    assert a.next_release_time() == 13
    assert a.alloc() == 2                      # p is not reused yet
    q = a.alloc()
    a.advance(to=5)
    a.free(q)
    assert a.next_release_time() == 13
    assert a.advance(to=12.5) == 0
    assert a.state(p) == State.QUARANTINED
    assert a.advance(by=0.5) == 1              # now 13 >= release_at
    assert a.now == 13
    assert a.state(p) == State.FREE
    assert a.next_release_time() == 15
    assert a.advance(to=100) == 1
    assert a.next_release_time() is None
    assert a.advance(by=0) == 0
    s = a.stats()
    assert (s["releases"], s["reclaimed"], s["quarantined"]) == (2, 2, 0)
    a._check()


def test_grace_advance_counts_all_in_one_call(backend):
    a = backend.PasidAllocator(bits=4, grace=2)
    ids = a.alloc_many(5).tolist()
    a.free_many(ids)
    assert a.stats()["quarantined"] == 5
    assert a.advance(by=2) == 5
    assert a.stats()["reclaimed"] == 5
    a._check()


def test_advance_errors(backend):
    a = backend.PasidAllocator(bits=4, grace=1)
    a.advance(to=5)
    before = observable(a)
    for kwargs in ({"to": 6, "by": 1}, {"to": 4}, {"by": -1}):
        with pytest.raises(ValueError):
            a.advance(**kwargs)
    assert a.now == 5 and observable(a) == before


def test_advance_with_no_argument_settles_now(backend):
    """SPEC §3.2: advance() reclaims at the current time, on both clock kinds."""
    t = [0.0]
    for clock in (None, lambda: t[0]):
        a = backend.PasidAllocator(bits=4, grace=2, clock=clock)
        a.free(a.alloc())
        assert a.advance() == 0 and a.stats()["quarantined"] == 1
        if clock is None:
            a.advance(to=2)
        else:
            t[0] = 2.0
            with pytest.raises(ValueError, match="callable clock"):
                a.advance(to=3)
            assert a.advance() == 1       # settled now (any call would also reclaim lazily)
        assert a.stats()["reclaimed"] == 1 and a.next_release_time() is None
        a._check()


def test_callable_clock_reclaims_lazily(backend):
    t = [0.0]
    a = backend.PasidAllocator(bits=3, grace=5, clock=lambda: t[0])
    p = a.alloc()
    t[0] = 2.0
    a.free(p)
    assert a.next_release_time() == 7
    assert a.state(p) == State.QUARANTINED
    t[0] = 6.9
    assert a.now == 6.9
    assert a.state(p) == State.QUARANTINED
    t[0] = 7.0
    # no advance: the next operation sees the allocator as of now
    assert a.state(p) == State.FREE
    assert a.stats()["reclaimed"] == 1
    assert a.next_release_time() is None
    for kwargs in ({"by": 1}, {"to": 10}):
        with pytest.raises(ValueError):
            a.advance(**kwargs)
    a._check()


def test_callable_clock_reclaims_before_alloc(backend):
    t = [0]
    a = backend.PasidAllocator(bits=2, grace=3, clock=lambda: t[0])
    ids = [a.alloc() for _ in range(3)]
    a.free(ids[1])
    with pytest.raises(PasidExhausted):
        a.alloc()
    t[0] = 3
    assert a.alloc() == ids[1]                 # reclaimed lazily inside alloc
    s = a.stats()
    assert (s["reclaimed"], s["failures"], s["free"]) == (1, 1, 0)
    a._check()


# ---------------------------------------------------------------- 5. per-device drain


def test_device_drain_release_at(backend):
    a = backend.PasidAllocator(bits=4, grace=2)
    a.add_device("gpu", drain=10)
    a.add_device("nic", drain=1)
    p = a.alloc()
    a.bind(p, "gpu")
    a.bind(p, "nic")
    a.free(p)                                  # release at 0: release + grace = 2
    assert a.state(p) == State.DRAINING
    assert a.next_release_time() is None
    a.advance(to=3)
    a.unbind(p, "gpu")                         # 3 + 10 = 13
    assert a.state(p) == State.DRAINING
    a.advance(to=4)
    a.unbind(p, "nic")                         # 4 + 1 = 5
    assert a.state(p) == State.QUARANTINED
    assert a.next_release_time() == 13
    assert a.advance(to=12) == 0
    assert a.advance(to=13) == 1
    assert a.state(p) == State.FREE
    a._check()


def test_grace_dominates_short_drain(backend):
    a = backend.PasidAllocator(bits=4, grace=20)
    a.add_device("gpu", drain=3)
    p = a.alloc()
    a.bind(p, "gpu")
    a.advance(to=5)
    a.free(p)
    a.unbind(p, "gpu")
    assert a.next_release_time() == 25
    a._check()


def test_unbind_while_active_counts(backend):
    a = backend.PasidAllocator(bits=4, grace=1)
    a.add_device("gpu", drain=50)
    p = a.alloc()
    a.bind(p, "gpu")
    a.advance(to=10)
    a.unbind(p, "gpu")                         # queues may still hold p: hold until 60
    assert a.state(p) == State.ACTIVE and a.devices(p) == []
    a.advance(to=20)
    a.free(p)                                  # no device bound: QUARANTINED
    assert a.state(p) == State.QUARANTINED
    assert a.next_release_time() == 60
    a.advance(to=59)
    assert a.state(p) == State.QUARANTINED
    a.advance(to=60)
    assert a.state(p) == State.FREE
    a._check()


def test_drain_zero_and_grace_zero_frees_at_once(backend):
    a = backend.PasidAllocator(bits=4)
    a.add_device("nic")
    p = a.alloc()
    a.bind(p, "nic")
    a.free(p)
    assert a.state(p) == State.DRAINING
    a.unbind(p, "nic")
    assert a.state(p) == State.FREE
    s = a.stats()
    assert (s["releases"], s["reclaimed"]) == (1, 1)
    a._check()


def test_bind_counts_per_pair(backend):
    a = backend.PasidAllocator(bits=4)
    p = a.alloc()
    a.bind(p, "gpu", data="ctx-a")
    a.bind(p, "gpu")
    a.bind(p, "nic", data=7)
    assert a.devices(p) == ["gpu", "nic"]
    assert a.binding(p, "gpu") == "ctx-a"
    assert a.binding(p, "nic") == 7
    a.free(p)
    a.unbind(p, "gpu")
    assert a.devices(p) == ["gpu", "nic"]      # one bind of gpu left
    a.unbind(p, "gpu")
    assert a.devices(p) == ["nic"]
    with pytest.raises(StateError):
        a.unbind(p, "gpu")
    with pytest.raises(StateError):
        a.binding(p, "gpu")
    a.unbind(p, "nic")
    assert a.state(p) == State.FREE
    with pytest.raises(StateError):
        a.unbind(p, "nic")
    a._check()


def test_draining_while_bound_and_pending(backend):
    a = backend.PasidAllocator(bits=5)
    a.add_device("gpu")
    ids = [a.alloc() for _ in range(6)]
    for p in (ids[4], ids[1], ids[3], ids[0]):
        a.bind(p, "gpu")
    a.bind(ids[2], "nic")
    assert a.pending("gpu") == []
    for p in (ids[4], ids[0], ids[3]):
        a.free(p)
    assert a.pending("gpu") == sorted([ids[0], ids[3], ids[4]])
    assert a.state(ids[1]) == State.ACTIVE     # bound but ACTIVE: not pending
    with pytest.raises(StateError):
        a.bind(ids[0], "gpu")                  # bind needs ACTIVE
    with pytest.raises(StateError):
        a.get(ids[0])
    with pytest.raises(StateError):
        a.free(ids[0])
    a.unbind(ids[3], "gpu")
    assert a.pending("gpu") == sorted([ids[0], ids[4]])
    assert a.pending("nic") == []
    with pytest.raises(StateError):
        a.pending("never-declared")
    assert a.stats()["draining"] == 2
    a._check()


# ---------------------------------------------------------------- 6. owner exit


def test_oom_exit_with_many_fds(backend):
    a = backend.PasidAllocator(bits=5, grace=4)
    a.add_device("gpu")
    fds = []
    for _ in range(3):
        h = a.open("victim")
        fds += [h, h.dup(), h.dup()]
    other = a.open("survivor")
    plain = a.alloc("victim")
    a.get(plain)
    a.bind(fds[0].pasid, "gpu")
    victims = sorted({h.pasid for h in fds} | {plain})
    before_failures = a.stats()["failures"]

    released = a.exit_owner("victim")
    assert released == victims                 # ascending, whatever the refcount
    assert a.state(fds[0].pasid) == State.DRAINING
    assert all(a.state(p) == State.QUARANTINED for p in victims if p != fds[0].pasid)
    assert all(not h.valid for h in fds)
    assert other.valid and a.refcount(other.pasid) == 1
    assert a.exit_owner("victim") == []
    assert a.exit_owner("nobody") == []
    s = a.stats()
    assert (s["releases"], s["active"], s["failures"]) == (len(victims), 1, before_failures)

    for h in fds:
        with pytest.raises(StateError):
            h.dup()
    a.unbind(fds[0].pasid, "gpu")
    a.advance(by=4)
    # the PASIDs come back; the stale handles must not touch the new lives
    again = [a.alloc("next") for _ in range(len(victims))]
    assert sorted(again) == victims
    for h in fds:
        h.close()
        h.close()
    assert all(a.state(p) == State.ACTIVE and a.refcount(p) == 1 for p in again)
    with pytest.raises(ValueError):
        a.exit_owner(None)
    a._check()


def test_exit_owner_leaves_draining_alone(backend):
    a = backend.PasidAllocator(bits=4)
    p = a.alloc("o")
    q = a.alloc("o")
    a.bind(p, "gpu")
    a.free(p)
    assert a.exit_owner("o") == [q]
    assert a.state(p) == State.DRAINING
    a._check()


# ---------------------------------------------------------------- teardown callbacks


def test_on_teardown_order_and_committed_state(backend):
    a = backend.PasidAllocator(bits=5)
    calls = []

    def make(name):
        def on_teardown(p):
            calls.append((name, p, a.state(p), a.refcount(p), list(a)))
        return on_teardown

    a.add_device("gpu", on_teardown=make("gpu"))
    a.add_device("nic", on_teardown=make("nic"))
    a.add_device("dma", on_teardown=make("dma"))
    p, q, r = (a.alloc("o") for _ in range(3))
    a.bind(r, "nic")
    a.bind(r, "gpu")
    a.bind(p, "dma")
    a.bind(p, "nic")
    a.bind(q, "gpu")
    keep = a.alloc()
    assert a.exit_owner("o") == [p, q, r]
    assert calls == [
        ("dma", p, State.DRAINING, 0, [keep]),
        ("nic", p, State.DRAINING, 0, [keep]),
        ("gpu", q, State.DRAINING, 0, [keep]),
        ("nic", r, State.DRAINING, 0, [keep]),
        ("gpu", r, State.DRAINING, 0, [keep]),
    ]
    calls.clear()
    a.bind(keep, "gpu")
    a.bind(keep, "nic")
    a.free(keep)
    assert [c[:3] for c in calls] == [("gpu", keep, State.DRAINING), ("nic", keep, State.DRAINING)]
    a._check()


def test_on_teardown_not_called_without_binding(backend):
    calls = []
    a = backend.PasidAllocator(bits=4)
    a.add_device("gpu", on_teardown=calls.append)
    p = a.alloc()
    a.bind(p, "gpu")
    a.unbind(p, "gpu")
    a.free(p)                                  # no device bound at release
    assert calls == []
    a._check()


def test_on_teardown_reenters_allocator(backend):
    a = backend.PasidAllocator(bits=4)
    seen = []

    def unbind_at_once(p):
        seen.append(a.state(p))
        a.unbind(p, "gpu")                     # re-entry: the device drains synchronously
        seen.append(a.state(p))
        seen.append(a.alloc())

    a.add_device("gpu", on_teardown=unbind_at_once)
    p = a.alloc()
    a.bind(p, "gpu")
    a.free(p)
    assert seen == [State.DRAINING, State.FREE, p]
    assert a.state(p) == State.ACTIVE
    a._check()


def test_on_teardown_first_exception_propagates_after_others(backend):
    a = backend.PasidAllocator(bits=4)
    calls = []

    def failing(tag):
        def on_teardown(p):
            calls.append((tag, p))
            raise KeyError(f"{tag}-{p}")
        return on_teardown

    a.add_device("a", on_teardown=failing("a"))
    a.add_device("b", on_teardown=failing("b"))
    a.add_device("c", on_teardown=lambda p: calls.append(("c", p)))
    p = a.alloc("o")
    q = a.alloc("o")
    a.bind(p, "a")
    a.bind(p, "c")
    a.bind(q, "b")
    with pytest.raises(KeyError) as info:
        a.exit_owner("o")
    assert info.value.args == (f"a-{p}",)
    assert calls == [("a", p), ("c", p), ("b", q)]
    assert a.state(p) == State.DRAINING and a.state(q) == State.DRAINING
    assert a.stats()["releases"] == 2
    assert list(a) == []
    # with put too
    r = a.alloc()
    a.bind(r, "b")
    with pytest.raises(KeyError):
        a.put(r)
    assert a.state(r) == State.DRAINING and a.stats()["releases"] == 3
    a._check()


# ---------------------------------------------------------------- hot-unplug


def test_remove_device(backend):
    calls = []
    a = backend.PasidAllocator(bits=5, grace=1)
    a.add_device("gpu", drain=100, on_teardown=calls.append)
    a.add_device("nic", drain=3)
    p, q, r = a.alloc(), a.alloc(), a.alloc()
    a.bind(p, "gpu")
    a.bind(p, "gpu")
    a.bind(q, "gpu")
    a.bind(q, "nic")
    a.bind(r, "gpu")
    a.free(p)
    a.free(q)
    calls.clear()
    a.remove_device("gpu")
    assert calls == []
    assert a.state(p) == State.QUARANTINED     # no drain hold: release + grace
    assert a.next_release_time() == 1
    assert a.state(q) == State.DRAINING and a.devices(q) == ["nic"]
    assert a.state(r) == State.ACTIVE and a.devices(r) == []
    with pytest.raises(StateError):
        a.pending("gpu")
    with pytest.raises(StateError):
        a.remove_device("gpu")
    with pytest.raises(StateError):
        a.remove_device("never")
    a.bind(r, "gpu")                           # re-declared with the defaults
    a.free(r)
    assert calls == []                         # the old callback is gone
    a.unbind(r, "gpu")
    assert a.next_release_time() == 1
    a.advance(by=1)
    assert a.state(p) == State.FREE and a.state(r) == State.FREE
    a._check()


# ---------------------------------------------------------------- widths


def test_bind_width_check(backend):
    a = backend.PasidAllocator(bits=8)
    a.add_device("narrow", bits=4)
    p = a.alloc_exact(15)
    q = a.alloc_exact(16)
    a.bind(p, "narrow")
    before = observable(a)
    with pytest.raises(InvalidPasid):
        a.bind(q, "narrow")
    assert observable(a) == before
    a._check()


def test_add_device_narrowing(backend):
    a = backend.PasidAllocator(bits=8)
    a.add_device("gpu", bits=8, drain=5)
    p = a.alloc_exact(40)
    a.bind(p, "gpu")
    before = observable(a)
    with pytest.raises(InvalidPasid):
        a.add_device("gpu", bits=5, drain=0)
    assert observable(a) == before
    a.add_device("gpu", bits=6, drain=7)       # 40 fits in 6 bits
    a.free(p)
    a.unbind(p, "gpu")
    assert a.next_release_time() == 7          # the new drain applies
    a.add_device("gpu", bits=1)                # nothing bound now
    with pytest.raises(InvalidPasid):
        a.bind(a.alloc_exact(2), "gpu")
    a._check()


def test_add_device_bad_settings(backend):
    a = backend.PasidAllocator(bits=8)
    for kwargs in ({"bits": 0}, {"bits": 21}, {"drain": -1}):
        with pytest.raises(ValueError):
            a.add_device("gpu", **kwargs)


# ---------------------------------------------------------------- quotas


def test_quota(backend):
    a = backend.PasidAllocator(bits=5, grace=5)
    a.set_quota("vm", 2)
    p = a.alloc("vm")
    a.alloc("vm")
    with pytest.raises(QuotaExceeded):
        a.alloc("vm")
    assert issubclass(QuotaExceeded, PasidExhausted)
    with pytest.raises(PasidExhausted):
        a.alloc("vm")
    assert a.try_alloc("vm") is None
    with pytest.raises(QuotaExceeded):
        a.alloc_exact(20, "vm")
    assert a.stats()["failures"] == 4
    assert a.alloc("other") == 3               # other owners and no owner unaffected
    assert a.alloc() == 4
    a.bind(p, "gpu")
    a.free(p)                                  # DRAINING still counts
    assert a.try_alloc("vm") is None
    a.unbind(p, "gpu")                         # QUARANTINED still counts
    assert a.state(p) == State.QUARANTINED
    assert a.try_alloc("vm") is None
    a.advance(by=5)                            # FREE: use drops
    r = a.alloc("vm")
    assert a.owner(r) == "vm"
    a.set_quota("vm", None)
    a.alloc("vm")
    a.set_quota("vm", 1)                       # below current use: allowed, refuses new ones
    assert a.try_alloc("vm") is None
    a.exit_owner("vm")
    assert a.try_alloc("vm") is None           # the exited ones are QUARANTINED
    a.advance(by=5)
    assert a.try_alloc("vm") is not None
    assert a.try_alloc("vm") is None
    a.set_quota("vm", 0)
    s = a.stats()
    assert s["failures"] == 9
    a._check()


def test_quota_errors(backend):
    a = backend.PasidAllocator(bits=4)
    with pytest.raises(ValueError):
        a.set_quota(None, 3)
    with pytest.raises(ValueError):
        a.set_quota("o", -1)
    a.set_quota("o", 0)
    before = observable(a)
    with pytest.raises(QuotaExceeded):
        a.alloc("o")
    after = observable(a)
    assert after[1]["failures"] == before[1]["failures"] + 1
    a._check()


def test_quota_with_handles(backend):
    a = backend.PasidAllocator(bits=4)
    a.set_quota("proc", 1)
    with a.open("proc") as h:
        with pytest.raises(QuotaExceeded):
            a.open("proc")
        h.dup().close()
    with a.open("proc"):
        pass
    a._check()


# ---------------------------------------------------------------- counters along the paths


def test_counters_along_lifecycle_paths(backend):
    a = backend.PasidAllocator(bits=4, grace=2)
    a.add_device("gpu", drain=3)
    ids = [a.alloc("o") for _ in range(4)]
    a.bind(ids[0], "gpu")
    a.free(ids[1])                             # QUARANTINED
    a.exit_owner("o")                          # ids 0 (DRAINING), 2, 3 (QUARANTINED)
    s = a.stats()
    assert (s["releases"], s["reclaimed"], s["draining"], s["quarantined"]) == (4, 0, 1, 3)
    a.advance(by=2)
    s = a.stats()
    assert (s["reclaimed"], s["quarantined"], s["free"]) == (3, 0, 14)
    a.unbind(ids[0], "gpu")                    # 2 + 3
    assert a.next_release_time() == 5
    a.advance(to=5)
    s = a.stats()
    assert (s["releases"], s["reclaimed"], s["free"], s["allocations"], s["high_water"]) == (4, 4, 15, 4, 4)
    p = a.alloc()
    a.bind(p, "gpu")
    a.free(p)
    a.remove_device("gpu")                     # DRAINING -> release + grace
    assert a.next_release_time() == 7
    a.advance(to=7)
    s = a.stats()
    assert (s["releases"], s["reclaimed"], s["failures"]) == (5, 5, 0)
    a._check()


# ---------------------------------------------------------------- batches, bad owners, threads

def test_free_many_runs_callbacks_in_ascending_pasid_order(backend):
    """free_many releases in the order given, but the callbacks run ascending, devices in bind order."""
    a = backend.PasidAllocator(bits=6)
    calls = []
    a.add_device("gpu", on_teardown=lambda p: calls.append(("gpu", p)))
    a.add_device("nic", on_teardown=lambda p: calls.append(("nic", p)))
    low, high = a.alloc(), a.alloc()
    a.bind(high, "nic")
    a.bind(high, "gpu")
    a.bind(low, "gpu")
    a.free_many([high, low])
    assert calls == [("gpu", low), ("nic", high), ("gpu", high)]
    assert a.state(low) == a.state(high) == State.DRAINING


def test_unhashable_owner_changes_nothing(backend):
    a = backend.PasidAllocator(bits=4)
    a.alloc("kept")
    before = observable(a)
    for call in (lambda: a.alloc(["unhashable"]), lambda: a.alloc_exact(5, {"a": 1}),
                 lambda: a.alloc_many(2, ["x"]), lambda: a.open(owner=[1])):
        with pytest.raises(TypeError):
            call()
        assert observable(a) == before
    a.set_quota("kept", 5)
    with pytest.raises(TypeError):
        a.alloc(["unhashable"])
    assert observable(a) == before
    a._check()


def test_threads_share_one_allocator(backend):
    """Four threads allocate, bind, free and unbind on one allocator; it ends consistent and empty."""
    import threading

    a = backend.PasidAllocator(bits=10, grace=0)
    a.add_device("gpu", drain=0)
    errors = []
    rounds = 1500 if backend.__name__ == "pasid._core" else 300

    def worker(owner):
        try:
            mine = []
            for i in range(rounds):
                p = a.alloc(owner)
                a.bind(p, "gpu")
                mine.append(p)
                if i % 3 == 2:
                    for q in mine:
                        a.free(q)
                        a.unbind(q, "gpu")
                    mine.clear()
            for q in mine:
                a.free(q)
                a.unbind(q, "gpu")
        except Exception as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    a._check()
    stats = a.stats()
    assert stats["active"] == stats["draining"] == stats["quarantined"] == 0
    assert stats["allocations"] == stats["releases"] == stats["reclaimed"] == 4 * rounds


def test_a_clock_that_raises_changes_nothing(backend):
    """Every call reads the callable clock before it changes anything."""
    broken = [False]

    def clock():
        if broken[0]:
            raise RuntimeError("clock unavailable")
        return 1.0

    a = backend.PasidAllocator(bits=4, grace=2, clock=clock)
    a.add_device("gpu", drain=1)
    p, q = a.alloc("o"), a.alloc("o")
    a.bind(p, "gpu")
    a.bind(q, "gpu")
    a.free(q)
    before = observable(a)
    broken[0] = True
    for call in (lambda: a.unbind(p, "gpu"), lambda: a.unbind(q, "gpu"), lambda: a.free(p),
                 lambda: a.free_many([p]), lambda: a.exit_owner("o"), lambda: a.remove_device("gpu")):
        with pytest.raises(RuntimeError, match="clock unavailable"):
            call()
        broken[0] = False
        assert observable(a) == before
        broken[0] = True
    broken[0] = False
    a._check()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_times_must_be_finite(backend, bad):
    with pytest.raises(ValueError, match="finite"):
        backend.PasidAllocator(bits=4, grace=bad)
    a = backend.PasidAllocator(bits=4)
    with pytest.raises(ValueError, match="finite"):
        a.add_device("gpu", drain=bad)
    with pytest.raises(ValueError, match="finite"):
        a.advance(by=bad)
    with pytest.raises(ValueError, match="finite"):
        a.advance(to=bad)
    b = backend.PasidAllocator(bits=4, clock=lambda: bad)
    with pytest.raises(ValueError, match="finite"):
        b.now
    assert a.now == 0.0


# ---------------------------------------------------------------- the last owner's record


class _Owner:
    """An owner that counts the look-ups it costs (its __hash__) and can be weakly referenced."""

    def __init__(self, name):
        self.name, self.hashes = name, 0

    def __hash__(self):
        self.hashes += 1
        return hash(self.name)

    def __eq__(self, other):
        return isinstance(other, _Owner) and other.name == self.name


def test_the_last_owner_named_keeps_its_record_while_idle(backend):
    import gc
    import weakref

    a = backend.PasidAllocator(bits=8)
    first = _Owner("p1")
    p = a.alloc(owner=first)
    hashes = first.hashes
    assert hashes >= 1                         # its record was made: the table hashed it
    a.free(p)                                  # idle now, but the last named: kept
    a._check()
    q = a.alloc(owner=first)                   # the very object: no look-up at all
    assert first.hashes == hashes and a.owner(q) is first
    a.free(q)
    a.alloc(owner=_Owner("p1"))                # an equal object: looked up, the same record
    assert a.owner(q) is first
    gone = weakref.ref(first)
    del first
    gc.collect()
    assert gone() is not None                  # held by its record: the last one named
    a.exit_owner(_Owner("p1"))
    other = a.alloc(owner="p2")                # another owner named: the idle one is dropped
    gc.collect()
    assert gone() is None
    a._check()
    assert a.owner(other) == "p2"


def test_the_last_owner_named_still_meets_its_quota(backend):
    a = backend.PasidAllocator(bits=8)
    a.set_quota("vm", 1)
    p = a.alloc(owner="vm")
    with pytest.raises(QuotaExceeded):
        a.alloc(owner="vm")                    # the fast path's owner is at its quota
    a.free(p)
    a.set_quota("vm", None)                    # no quota, nothing held: idle, kept (last named)
    a._check()
    assert [a.alloc(owner="vm") for _ in range(3)] == [p, p + 1, p + 2]
    assert a.exit_owner("vm") == [p, p + 1, p + 2]
    a._check()


class _LikeName:
    """Equal to the str it wraps, and hashing as it does: the owner table treats it as that str."""

    def __init__(self, name):
        self.name = name

    def __hash__(self):
        return hash(self.name)

    def __eq__(self, other):
        return other == self.name if isinstance(other, str) else (
            isinstance(other, _LikeName) and other.name == self.name)


def test_owners_are_found_by_the_tables_equality_whatever_object_names_them(backend):
    # equal ints and strs that are not the same object, an int's equal float and bool,
    # a user's object equal to a str: each names the one owner, as a dict would
    a = backend.PasidAllocator(bits=8)
    big = 10**6
    p = a.alloc(owner=big + 1)
    q = a.alloc(owner=int(str(big + 1)))             # equal, not the same object
    assert a.owner(q) == big + 1 and a.exit_owner(big + 1) == [p, q]
    r = a.alloc(owner=1)
    assert a.exit_owner(1.0) == [r]                  # 1 == 1.0: the same key
    s = a.alloc(owner=1)
    assert a.exit_owner(True) == [s]
    name = "".join(["v", "m"])
    t = a.alloc(owner=name)
    assert a.exit_owner(_LikeName("vm")) == [t]
    a._check()
    u = a.alloc(owner=_LikeName("w"))
    v = a.alloc(owner="w")                           # the table's __eq__ says: the same owner
    assert a.exit_owner("w") == [u, v]
    a._check()


@pytest.mark.parametrize("name", ["vm0", "v" * 16, "v" * 17, "gast-\u0125", "gast-\U0001f600",
                                  "x" * 40 + "\u0125"])
def test_the_last_owner_named_is_matched_by_its_name_not_its_object(backend, name):
    # the last owner named is matched by an equal str made anew (length, kind, code
    # units: short names compared in place, longer ones by memcmp); a str of the same
    # length and kind differing in its last code unit names another owner (a match
    # missed would only cost a look-up; a false match would merge two owners)
    a = backend.PasidAllocator(bits=8)
    p = a.alloc(owner=name)
    q = a.alloc(owner="".join(list(name)))         # equal, another object
    assert a.owner(q) == name
    other = name[:-1] + chr(ord(name[-1]) + 1)
    r = a.alloc(owner=other)
    assert a.owner(r) == other and a.owner(p) == name
    s = a.alloc(owner="".join(list(name)))          # back to the first: by the table
    assert a.exit_owner(name) == [p, q, s] and a.exit_owner(other) == [r]
    a._check()


def test_one_pasid_owners_coming_and_going_keep_every_rule(backend):
    # a process per owner, each with one PASID (the records a simulator makes and
    # lets go all the time): quotas, exits, and owners that come back
    a = backend.PasidAllocator(bits=8, grace=0)
    a.add_device("d", drain=0)
    got = []
    for pid in range(1000, 1040):
        p = a.alloc(owner=pid)
        a.bind(p, "d")
        assert a.owner(p) == pid
        assert a.exit_owner(pid) == [p]
        a.unbind(p, "d")
        got.append(p)
        a._check()
    assert got == [got[0]] * 40                       # the lowest PASID every time
    a.set_quota(7, 1)                                 # a quota keeps a record, idle or not
    a.alloc(owner=8)
    first = a.alloc(owner=7)
    with pytest.raises(QuotaExceeded):
        a.alloc(owner=7)
    a.alloc(owner=9)
    with pytest.raises(QuotaExceeded):
        a.alloc(owner=7)
    assert a.exit_owner(7) == [first]
    held = a.alloc(owner=10)                          # 10 holds one; then others come and go
    for pid in range(11, 20):
        a.free(a.alloc(owner=pid))
    assert a.owner(held) == 10 and a.exit_owner(10) == [held]
    a.alloc(owner=("tuple", 1))                       # a key of another kind: the general way
    for pid in range(20, 25):
        a.free(a.alloc(owner=pid))
    assert a.exit_owner(("tuple", 1)) != []
    a._check()
