"""Threads sharing one PasidAllocator: the engine of tests/test_threads.py and fuzz/stress.py.

``ThreadStress(module, ...).run()`` starts ``threads`` workers on one allocator
with a Python clock (a shared, monotone counter; it may call back into the
allocator), owners and devices whose ``__hash__``/``__eq__`` are Python code
(they may yield the GIL or call back), ``on_teardown`` callbacks, and a mix of
every operation; one more thread takes snapshots all along (``to_bytes`` when
the owners are plain data, ``pickle``, ``copy.deepcopy``). Each worker owns its
owners, its device and the PASIDs it allocated, so it knows exactly what it
holds; a registry shared by all says which worker holds which PASID.

Checked: an allocation never returns a PASID another worker (or the same one)
still holds; every exception is a documented one; each worker's PASIDs stay
ACTIVE with its refcount and owner; ``exit_owner`` returns exactly the
owner's PASIDs; every snapshot loads and passes ``_check()`` and its counters
add up (a snapshot taken half-way through an operation would not); at quiet
points (every worker parked at a barrier) ``_check()`` passes, the ACTIVE
PASIDs are exactly the registry's and the counters add up; at the end, the
same after every worker has released what it held.

Failures are collected (thread, operation log, traceback) and raised from
``run()`` as one ``fuzzlib.Bug``. A run that does not finish within
``timeout`` seconds dumps every thread's stack and fails (a deadlock).
"""

from __future__ import annotations

import copy
import faulthandler
import pickle
import random
import sys
import threading
import time
import traceback

import pasid
from pasid import PasidError, PasidExhausted, StateError

from fuzzlib import KNOWN, Bug, counters_add_up

TOLERATED = (PasidError, ValueError, OverflowError)


class TKey:
    """An owner or device with a Python ``__hash__``/``__eq__``: they may yield the GIL
    (``time.sleep(0)``) or call back into the allocator (read-only calls, and
    ``advance()``). Pickled or copied, a plain ``TKey``."""

    __slots__ = ("name", "stress")

    def __init__(self, name, stress=None):
        self.name = name
        self.stress = stress

    def __hash__(self):
        if self.stress is not None:
            self.stress.user_code("hash")
        return hash(self.name)

    def __eq__(self, other):
        if self.stress is not None:
            self.stress.user_code("eq")
        return isinstance(other, TKey) and other.name == self.name

    def __repr__(self):
        return f"TKey({self.name!r})"

    def __reduce__(self):
        return (TKey, (self.name,))


class TickClock:
    """A shared monotone clock in Python: each reading moves it on by ``step``; now and
    then a reading calls back into the allocator (allocates and frees a PASID)."""

    def __init__(self, stress, step):
        self.stress = stress
        self.step = step
        self.t = 0.0
        self.lock = threading.Lock()
        self.reads = 0

    def __call__(self):
        with self.lock:
            self.t += self.step
            self.reads += 1
            t = self.t
        self.stress.user_code("clock")
        return t


class Worker:
    """One thread's view: what it holds and what it did."""

    def __init__(self, stress, index, seed):
        self.stress = stress
        self.index = index
        self.rnd = random.Random(seed)
        plain = stress.plain
        self.owners = [f"t{index}a", (f"t{index}", "b")] if plain else [
            TKey(f"t{index}a", stress), TKey(f"t{index}b", stress)]
        self.device = f"dev{index}" if plain else TKey(f"dev{index}", stress)
        self.device_declared = False
        self.held = {}                      # p -> [refs, owner, generation]
        self.handles = []                   # PasidHandle objects (this worker's)
        self.binds = {}                     # p -> bind count on self.device (ACTIVE or DRAINING)
        self.reserved = []                  # (lo, hi) ranges this worker reserved
        self.log = []
        self.ops = 0
        self.errors = {}
        self.teardowns = []

    # ---- bookkeeping

    def note(self, text):
        self.log.append(text)
        if len(self.log) > 60:
            del self.log[:20]

    def fail(self, message):
        raise Bug(f"worker {self.index}: {message}")

    def took(self, p, owner, what):
        """Register ``p`` (just handed out) as this worker's; nobody may hold it."""
        stress = self.stress
        a = stress.a
        with stress.registry_lock:
            other = stress.registry.get(p)
            if other is not None:
                self.fail(f"{what} handed out PASID {p}, which worker {other} holds")
            stress.registry[p] = self.index
        self.held[p] = [1, owner, a.generation(p)]

    def unregister(self, p):
        with self.stress.registry_lock:
            if self.stress.registry.pop(p, None) != self.index:
                self.fail(f"PASID {p} was not registered to this worker")

    def reregister(self, p):
        with self.stress.registry_lock:
            other = self.stress.registry.get(p)
            if other is not None:
                self.fail(f"a failed release of PASID {p}: worker {other} holds it meanwhile")
            self.stress.registry[p] = self.index

    def tolerate(self, exc, what):
        """A documented exception a worker's operation may meet; anything else fails."""
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        if isinstance(exc, TOLERATED):
            return
        if type(exc) is RuntimeError and "re-entrant" in str(exc):
            return
        if isinstance(exc, TypeError) and what.startswith("to_bytes"):
            return
        raise exc

    # ---- operations

    def step(self):
        a = self.stress.a
        rnd = self.rnd
        self.ops += 1
        op = rnd.choices(OPS, WEIGHTS)[0]
        op(self, a, rnd)

    def owner(self):
        return self.rnd.choice(self.owners + [None])


def op_alloc(w, a, rnd):
    owner = w.owner()
    how = rnd.randrange(5)
    data = rnd.choice([None, None, "ctx", [w.index]])
    if w.stress.finalizers and not w.stress.plain and rnd.random() < 0.1:
        data = Context(w.stress)
    try:
        if how == 0:
            p = a.alloc(owner, data=data)
        elif how == 1:
            p = a.try_alloc(owner, data=data, min=rnd.choice([None, 1, a_size(a) // 2]))
        elif how == 2:
            h = a.open(owner, data=data)
            p = h.pasid
            w.handles.append(h)
        elif how == 3:
            q = rnd.randrange(a_size(a))
            p = a.alloc_exact(q, owner, data=data)
            if p != q:
                w.fail(f"alloc_exact({q}) returned {p}")
        else:
            n = rnd.choice([1, 2, 3])
            ids = a.alloc_many(n, owner, data=data).tolist()
            w.note(f"alloc_many({n}, {owner!r}) -> {ids}")
            for p in ids:
                w.took(p, owner, "alloc_many")
            return
    except Exception as exc:
        w.note(f"alloc#{how}({owner!r}) -> {type(exc).__name__}")
        w.tolerate(exc, "alloc")
        return
    w.note(f"alloc#{how}({owner!r}) -> {p}")
    if p is not None:
        w.took(p, owner, "alloc")


def a_size(a):
    return 1 << a.bits


def release(w, p, n, call, what):
    """Drop ``n`` of this worker's references to ``p`` by ``call()``: unregistered first
    when they are the last (so another worker may get ``p`` the moment it is FREE)."""
    held = w.held[p]
    last = held[0] == n
    if last:
        w.unregister(p)
    try:
        call()
    except Exception as exc:
        w.note(f"{what}({p}) -> {type(exc).__name__}: {exc}")
        if last:
            w.reregister(p)
        if isinstance(exc, StateError):
            w.fail(f"{what} of PASID {p}, which this worker holds: {exc}")
        w.tolerate(exc, what)
        return False
    w.note(f"{what}({p})")
    held[0] -= n
    if held[0] == 0:
        del w.held[p]
    return True


def op_free(w, a, rnd):
    if not w.held:
        return op_alloc(w, a, rnd)
    p = rnd.choice(list(w.held))
    how = rnd.randrange(4)
    if how == 0:
        release(w, p, 1, lambda: a.free(p), "free")
    elif how == 1:
        release(w, p, 1, lambda: a.put(p), "put")
    elif how == 2:
        # a batch: up to two of this worker's PASIDs, one possibly twice
        ids = [p]
        other = rnd.choice(list(w.held))
        if other != p or w.held[p][0] >= 2:
            ids.append(other)
        drops = {q: ids.count(q) for q in ids}
        last = [q for q, n in drops.items() if w.held[q][0] == n]
        for q in last:
            w.unregister(q)
        try:
            a.free_many(ids)
        except Exception as exc:
            for q in last:
                w.reregister(q)
            if isinstance(exc, StateError):
                w.fail(f"free_many({ids}) of this worker's PASIDs: {exc}")
            w.tolerate(exc, "free_many")
            return
        w.note(f"free_many({ids})")
        for q, n in drops.items():
            w.held[q][0] -= n
            if w.held[q][0] == 0:
                del w.held[q]
    else:
        try:
            a.get(p)
        except Exception as exc:
            w.fail(f"get({p}) of a PASID this worker holds: {exc!r}")
        w.held[p][0] += 1
        w.note(f"get({p})")


def op_handle(w, a, rnd):
    if not w.handles:
        return op_alloc(w, a, rnd)
    h = rnd.choice(w.handles)
    p = h.pasid
    held = w.held.get(p)
    live = held is not None and held[2] == h.generation and not h.closed
    if rnd.random() < 0.5:
        w.handles.remove(h)
        if live:
            if not release(w, p, 1, h.close, "close"):
                w.handles.append(h)
        else:
            h.close()                     # stale or closed: a no-op
        return
    try:
        h2 = h.dup()
    except StateError:
        if live:
            w.fail(f"dup of a live handle on PASID {p} refused")
        return
    if not live:
        w.fail(f"dup of a stale handle on PASID {p} worked")
    held[0] += 1
    w.handles.append(h2)


def op_bind(w, a, rnd):
    if rnd.random() < 0.5 and w.binds:
        p = rnd.choice(list(w.binds))
        try:
            a.unbind(p, w.device)
        except Exception as exc:
            w.fail(f"unbind({p}) of this worker's binding: {exc!r}")
        w.binds[p] -= 1
        if not w.binds[p]:
            del w.binds[p]
        w.note(f"unbind({p})")
        return
    if rnd.random() < 0.2:
        # the shared device: any worker may bind, unbind or remove it
        p = rnd.choice(list(w.held)) if w.held else 1
        try:
            if rnd.random() < 0.6:
                a.bind(p, "shared")
            elif rnd.random() < 0.7:
                a.unbind(p, "shared")
            else:
                a.remove_device("shared")
        except Exception as exc:
            w.tolerate(exc, "shared device")
        return
    if not w.held:
        return op_alloc(w, a, rnd)
    p = rnd.choice(list(w.held))
    try:
        a.bind(p, w.device, data=rnd.choice([None, w.index]))
    except Exception as exc:
        w.fail(f"bind({p}) of a PASID this worker holds: {exc!r}")
    w.binds[p] = w.binds.get(p, 0) + 1
    w.note(f"bind({p})")


def op_device(w, a, rnd):
    how = rnd.randrange(3)
    try:
        if how < 2:
            callback = Teardown(w)
            a.add_device(w.device, drain=rnd.choice([0, 0.01, 0.05]),
                         on_teardown=rnd.choice([callback, None]))
            w.device_declared = True
        elif w.device_declared or w.binds:
            a.remove_device(w.device)
            w.binds.clear()
            w.device_declared = False
        w.note(f"device#{how}")
    except Exception as exc:
        if isinstance(exc, StateError):
            w.fail(f"device#{how} on this worker's device: {exc!r}")
        w.tolerate(exc, "device")


class Context:
    """Data whose finalizer yields the GIL (as one closing a file would)."""

    def __init__(self, stress):
        self.stress = stress

    def __del__(self):
        if not self.stress.quieting:
            time.sleep(0)

    def __reduce__(self):
        return (str, ("context",))


class Teardown:
    """A worker device's on_teardown: checks the PASID is one the worker released."""

    def __init__(self, worker):
        self.worker = worker

    def __call__(self, p):
        self.worker.teardowns.append(p)
        self.worker.stress.user_code("teardown")


def op_exit(w, a, rnd):
    owner = rnd.choice(w.owners)
    mine = sorted(p for p, held in w.held.items() if held[1] == owner)
    for p in mine:
        w.unregister(p)
    try:
        got = a.exit_owner(owner)
    except Exception as exc:
        for p in mine:
            w.reregister(p)
        w.tolerate(exc, "exit_owner")
        return
    w.note(f"exit_owner({owner!r}) -> {got}")
    if got != mine:
        w.fail(f"exit_owner({owner!r}) returned {got}; this worker held {mine} for it")
    for p in mine:
        del w.held[p]


def op_quota(w, a, rnd):
    owner = rnd.choice(w.owners)
    n = rnd.choice([None, 2, 8, 100])
    if n is None and w.stress.keep_quota:
        n = 100
    try:
        a.set_quota(owner, n)
    except Exception as exc:
        w.tolerate(exc, "set_quota")


def op_reserve(w, a, rnd):
    if w.reserved and rnd.random() < 0.6:
        lo, hi = w.reserved.pop()
        try:
            a.unreserve(lo, hi)
        except Exception as exc:
            w.fail(f"unreserve({lo}, {hi}) of this worker's reservation: {exc!r}")
        return
    lo = rnd.randrange(1, a_size(a))
    hi = min(a_size(a) - 1, lo + rnd.randrange(3))
    try:
        a.reserve(lo, hi)
    except Exception as exc:
        w.tolerate(exc, "reserve")
        return
    for p in range(lo, hi + 1):
        with w.stress.registry_lock:
            if p in w.stress.registry:
                w.fail(f"reserve({lo}, {hi}) took PASID {p}, held by worker "
                       f"{w.stress.registry[p]}")
    w.reserved.append((lo, hi))


def op_query(w, a, rnd):
    how = rnd.randrange(5)
    if how == 0:
        a.advance()
    elif how == 1 and w.held:
        p = rnd.choice(list(w.held))
        refs, owner, generation = w.held[p]
        got = (int(a.state(p)), a.refcount(p), a.owner(p), a.generation(p))
        if got != (pasid.State.ACTIVE, refs, owner, generation):
            w.fail(f"PASID {p}: state, refcount, owner, generation {got}; this worker holds "
                   f"{refs} references for {owner!r}, generation {generation}")
    elif how == 2 and w.held:
        ids = list(w.held)
        states = a.states(ids).tolist()
        if any(s != pasid.State.ACTIVE for s in states):
            w.fail(f"states({ids}) -> {states}: this worker holds them")
    elif how == 3:
        problems = counters_add_up(a.stats(), a_size(a))
        # stats() is one atomic read: its counters add up at any moment
        if problems:
            w.fail(f"stats() counters do not add up: {problems}")
    else:
        a.next_release_time(), len(a), a.now


OPS = [op_alloc, op_free, op_handle, op_bind, op_device, op_exit, op_quota, op_reserve,
       op_query]
WEIGHTS = [30, 26, 10, 14, 3, 3, 2, 3, 9]


class ThreadStress:
    """One stress run: ``threads`` workers of ``ops`` operations each on one allocator."""

    def __init__(self, module, *, threads=6, ops=300, seed=0, plain=False, bits=7,
                 strategy=None, grace=None, check_every=50, callbacks=True, yields=True,
                 snapshots=True, timeout=120.0, avoid=None):
        self.module = module
        self.threads = threads
        self.ops = ops
        self.seed = seed
        self.plain = plain
        self.check_every = check_every
        self.callbacks = callbacks
        self.yields = yields
        self.snapshots = snapshots
        self.timeout = timeout
        self.avoid = set(KNOWN) if avoid is None else set(avoid)
        # an owner's record dropped by a reclaim inside its own allocation (KNOWN): owners
        # with a quota keep their record, so with the bug avoided every owner keeps one
        self.keep_quota = "owner-record-reclaimed" in self.avoid
        rnd = random.Random(seed)
        self.rnd_lock = threading.Lock()
        self.rnd = rnd
        self.clock = TickClock(self, step=0.001)
        self.a = module.PasidAllocator(
            bits, reserved=[0], strategy=strategy or rnd.choice(
                ["lowest", "cyclic", "fifo", "random"]),
            grace=grace if grace is not None else rnd.choice([0, 0.002, 0.01]),
            clock=self.clock, seed=seed)
        self.registry = {}                 # p -> worker index
        self.registry_lock = threading.Lock()
        self.transient = threading.Lock()  # a clock callback's own PASID vs. a quiet point
        self.local = threading.local()
        self.quieting = False
        # the compiled core on the GIL build: snapshots only at quiet points while the
        # bug is known (KNOWN["gil-critical-section"]); the pure backend takes a real lock
        self.concurrent_snapshots = not (
            "gil-critical-section" in self.avoid and module.__name__ == "pasid._core")
        self.finalizers = "gil-critical-section" not in self.avoid
        self.failures = []
        self.stop = threading.Event()
        self.barrier = threading.Barrier(threads)
        self.snapshots_taken = {"to_bytes": 0, "pickle": 0, "deepcopy": 0}
        self.callbacks_run = 0
        self.quiet_points = 0
        self.workers = [Worker(self, i, rnd.getrandbits(64)) for i in range(threads)]

    # ---- user code: hashes, __eq__, the clock, teardown callbacks

    def user_code(self, site):
        """Python code the allocator runs: maybe yield the GIL, maybe call back in."""
        local = self.local
        if getattr(local, "busy", False) or self.quieting:
            return
        rnd = getattr(local, "rnd", None)
        if rnd is None:
            rnd = local.rnd = random.Random(threading.get_ident() ^ self.seed)
        x = rnd.random()
        if self.yields and x < 0.2:
            time.sleep(0)
        if not self.callbacks or x < 0.9:
            return
        local.busy = True
        try:
            self.callbacks_run += 1
            a = self.a
            if site == "clock" and x > 0.97:
                # a reading that allocates and frees a PASID of its own (not while a quiet
                # point counts the ACTIVE PASIDs)
                with self.transient:
                    p = a.try_alloc()
                    if p is not None:
                        with self.registry_lock:
                            holder = self.registry.get(p)
                        if holder is not None:
                            self.failures.append((f"clock callback: try_alloc handed out "
                                                  f"PASID {p}, held by worker {holder}", ""))
                            self.stop.set()
                        a.free(p)
            elif x > 0.95:
                a.advance()
            else:
                len(a), a.stats(), a.next_release_time()
        except RuntimeError as exc:
            if "re-entrant" not in str(exc):
                self.failures.append((f"{site} callback: {exc!r}", traceback.format_exc()))
        except (PasidExhausted, StateError):
            pass
        except Exception as exc:                   # noqa: BLE001 - reported
            self.failures.append((f"{site} callback: {exc!r}", traceback.format_exc()))
        finally:
            local.busy = False

    # ---- checks

    def quiet_check(self, where):
        """Every worker is parked: the whole state is the workers' bookkeeping."""
        a = self.a
        self.quiet_points += 1
        a._check()
        active = set(a)
        with self.registry_lock:
            registered = set(self.registry)
        if active != registered:
            raise Bug(f"{where}: ACTIVE {sorted(active - registered)} not held by any worker, "
                      f"held {sorted(registered - active)} not ACTIVE")
        for w in self.workers:
            for p, (refs, owner, generation) in w.held.items():
                if a.refcount(p) != refs or a.owner(p) != owner or a.generation(p) != generation:
                    raise Bug(f"{where}: PASID {p} of worker {w.index}: refcount "
                              f"{a.refcount(p)}, owner {a.owner(p)!r}, generation "
                              f"{a.generation(p)}; held {refs} for {owner!r}, generation "
                              f"{generation}")
        problems = counters_add_up(a.stats(), 1 << a.bits)
        if problems:
            raise Bug(f"{where}: counters do not add up: {problems}: {a.stats()}")

    def check_snapshot(self, kind):
        a = self.a
        if kind == "to_bytes":
            try:
                blob = a.to_bytes()
            except TypeError:
                if self.plain:
                    raise
                return
            b = type(a).from_bytes(blob)
            again = b.to_bytes()
            if again != blob:
                raise Bug("a snapshot loads into an allocator that saves different bytes")
        elif kind == "pickle":
            b = pickle.loads(pickle.dumps(a))
        else:
            b = copy.deepcopy(a)
        b._check()
        problems = counters_add_up(b.stats(), 1 << b.bits)
        if problems:
            raise Bug(f"a {kind} snapshot taken while the workers ran does not add up "
                      f"(not atomic): {problems}: {b.stats()}")
        self.snapshots_taken[kind] += 1

    # ---- threads

    def worker_main(self, w):
        try:
            if self.keep_quota:
                for owner in w.owners:
                    self.a.set_quota(owner, 100)
            for i in range(self.ops):
                if self.stop.is_set():
                    return
                w.step()
                if (i + 1) % self.check_every == 0:
                    self.quiet(w, f"the quiet point after {i + 1} operations")
            self.quiet(w, "the end of the operations")
            self.cleanup(w)
            self.quiet(w, "the end, everything released")
        except threading.BrokenBarrierError:
            if not self.stop.is_set():
                self.failures.append((f"worker {w.index}: a quiet point timed out", ""))
                self.stop.set()
        except BaseException as exc:               # noqa: BLE001 - collected, re-raised in run
            self.failures.append((f"worker {w.index}: {exc!r}", traceback.format_exc()
                                  + "\n--- its last operations:\n" + "\n".join(w.log[-25:])))
            self.stop.set()
            self.barrier.abort()

    def quiet(self, w, where):
        if self.barrier.wait(timeout=self.timeout) == 0:
            # no user code calls back or yields meanwhile (_check() hashes the owners in
            # its critical section: it is a debugging aid, not an operation)
            self.quieting = True
            try:
                with self.transient:
                    self.quiet_check(where)
                    if self.snapshots and not self.concurrent_snapshots:
                        for kind in ("pickle", "deepcopy", "to_bytes"):
                            self.check_snapshot(kind)
            except BaseException:
                self.stop.set()
                self.barrier.abort()
                raise
            finally:
                self.quieting = False
        self.barrier.wait(timeout=self.timeout)

    def cleanup(self, w):
        a = self.a
        for h in w.handles:
            if not h.closed and h.pasid in w.held and w.held[h.pasid][2] == h.generation:
                release(w, h.pasid, 1, h.close, "close")
        for p in list(w.held):
            release(w, p, w.held[p][0], lambda p=p, n=w.held[p][0]: [a.free(p) for _ in
                                                                       range(n)], "free all")
        for p, n in list(w.binds.items()):
            for _ in range(n):
                a.unbind(p, w.device)
        w.binds.clear()
        for lo, hi in w.reserved:
            a.unreserve(lo, hi)
        w.reserved.clear()

    def snapshot_main(self):
        rnd = random.Random(self.seed ^ 0x5EED)
        kinds = ["to_bytes", "pickle", "deepcopy"] if self.plain else ["pickle", "deepcopy",
                                                                        "to_bytes"]
        try:
            while not self.stop.is_set():
                self.check_snapshot(rnd.choice(kinds))
                time.sleep(0.001)
        except BaseException as exc:               # noqa: BLE001
            self.failures.append((f"snapshots: {exc!r}", traceback.format_exc()))
            self.stop.set()
            self.barrier.abort()

    def run(self):
        """Run every thread; raise Bug on the first failures. Returns counts for a report."""
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        started = time.perf_counter()
        try:
            threads = [threading.Thread(target=self.worker_main, args=(w,), daemon=True,
                                        name=f"worker-{w.index}") for w in self.workers]
            snap = threading.Thread(target=self.snapshot_main, daemon=True, name="snapshots")
            for t in threads:
                t.start()
            if self.snapshots and self.concurrent_snapshots:
                snap.start()
            deadline = time.monotonic() + self.timeout
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            hung = [t.name for t in threads if t.is_alive()]
            self.stop.set()
            if self.snapshots and self.concurrent_snapshots:
                snap.join(max(1.0, deadline - time.monotonic()))
                if snap.is_alive():
                    hung.append(snap.name)
        finally:
            sys.setswitchinterval(old)
        if hung:
            faulthandler.dump_traceback(all_threads=True)
            raise Bug(f"threads still running after {self.timeout} s (a deadlock?): {hung}")
        if self.failures:
            text = "\n\n".join(f"{what}\n{detail}" for what, detail in self.failures[:3])
            raise Bug(f"{len(self.failures)} failure(s) with {self.threads} threads "
                      f"(seed {self.seed}, {self.a!r}):\n{text}")
        self.quieting = True
        try:
            self.a.remove_device("shared")     # what it kept DRAINING settles
        except StateError:
            pass
        self.a._check()
        if len(self.a) or self.a.stats()["reserved"] != 1 or self.a.stats()["draining"]:
            raise Bug(f"everything was released, yet {self.a.stats()}")
        return {
            "threads": self.threads,
            "operations": sum(w.ops for w in self.workers),
            "snapshots": dict(self.snapshots_taken),
            "callbacks": self.callbacks_run,
            "quiet points": self.quiet_points,
            "clock reads": self.clock.reads,
            "seconds": round(time.perf_counter() - started, 2),
            "errors": merge_errors(self.workers),
        }


def merge_errors(workers):
    total = {}
    for w in workers:
        for name, n in w.errors.items():
            total[name] = total.get(name, 0) + n
    return total
