#!/usr/bin/env python
"""Batches without the GIL, under threads and fork(): the engine of tests/test_races.py.

The compiled core runs a batch's C loop without the GIL from 65,536 IDs on
(``pasid/_allocator.pxi``, "Threads"); the pure backend holds its lock through
a batch while other threads run Python code. Three scenarios, each on one
allocator for a time budget, each checking what it promises:

* ``mutate``: a thread flips an ID of the caller's array to -1 and back while
  the main thread calls ``free_many``/``states`` with it (int64: the path that
  converts). Each call must refuse, changing nothing (InvalidPasid: the copy
  taken held -1), or act on the IDs as copied; never hand PASID 4294967295 to
  the tables.
* ``readers``: a thread allocates and frees a batch at a time (0..N-1, lowest
  first); one allocates and frees single PASIDs above them for a new owner each
  time; readers meanwhile: ``generation()`` of the batch's first then last
  PASID (a later reading of the last below an earlier one of the first is
  half a batch seen), ``repr()``, ``stats()`` (a batch counted wholly or not at
  all) and ``_check()`` (an owner record made by an operation in flight is not
  an idle record kept).
* ``fork``: threads run batches (some for an owner), declare owners and
  devices whose ``__hash__`` is Python code (the registry lock held while it
  runs) and churn an IDA; the main thread forks meanwhile. Every child must
  find the allocators whole (``_check()``, the counts) and working (alloc,
  bind, a batch, a quota), within 20 s.

Each returns its counts (operations, refusals, forks, forks during a batch...)
and raises ``fuzzlib.Bug`` on a broken promise. A crash or a hang is a failure
too: tests run these in a child process with a timeout.

    python fuzz/batchstress.py --scenario fork --backend cython --seconds 3

prints ``name=value ...`` as its last line; ``fuzz/stress.py`` runs all three
each round (on the sanitized build in CI).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import random
import re
import sys
import threading
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":
    sys.path.insert(1, os.path.dirname(HERE))    # the pasid of this checkout (built in place)

import numpy as np  # noqa: E402

from pasid import InvalidPasid, StateError  # noqa: E402

from fuzzlib import Bug, backends  # noqa: E402

SCENARIOS = ("mutate", "readers", "fork")
MIN_FORKS = 5           # the fork scenario forks at least this often, however slow the machine


def batch_size(module):
    """IDs per batch: on the compiled core enough to let the GIL go; the pure backend
    takes longer per ID, so fewer (its numpy calls still let the GIL go)."""
    return 70_000 if module.__name__ == "pasid._core" else 3_000


class Threads:
    """Run ``step`` functions in threads until ``stop``; count their rounds; the first
    exception stops them all and is kept."""

    def __init__(self):
        self.stop = threading.Event()
        self.tally = {}
        self.problems = []
        self.threads = []

    def add(self, name, step):
        self.tally[name] = 0

        def loop():
            try:
                while not self.stop.is_set():
                    step()
                    self.tally[name] += 1
            except BaseException as exc:  # reported by end()
                self.problems.append(f"{name}: {exc!r}\n{traceback.format_exc()}")
                self.stop.set()
        self.threads.append(threading.Thread(target=loop, name=name))

    def run_for(self, seconds, interval=1e-5, enough=lambda: True):
        """Run the threads for ``seconds``, and on until ``enough()`` (at most a minute
        more: a slow machine still does what the scenario promises to count)."""
        before = sys.getswitchinterval()
        sys.setswitchinterval(interval)
        try:
            for t in self.threads:
                t.start()
            self.stop.wait(seconds)
            deadline = time.monotonic() + 60
            while not enough() and not self.stop.is_set() and time.monotonic() < deadline:
                self.stop.wait(0.01)
        finally:
            self.end()
            sys.setswitchinterval(before)

    def end(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        if any(t.is_alive() for t in self.threads):
            faulthandler.dump_traceback()
            raise Bug("a thread did not stop within 60 s")


# ---------------------------------------------------------------- the scenarios

def mutate(module, seconds, seed=0):
    """free_many and states on an int64 array another thread changes all along."""
    n = batch_size(module)
    a = module.PasidAllocator(18, reserved=())
    ids = a.alloc_many(n).astype(np.int64)
    expected = ids.copy()
    good = int(ids[-1])
    counts = {"calls": 0, "refused": 0}
    work = Threads()

    def pause():                     # a call: the thread may lose the GIL here
        pass

    def flip():
        ids[-1] = -1
        pause()
        ids[-1] = good
        pause()

    # The copy may hold -1, the ID, or (a copy that reads the element in pieces while
    # it is written, as AddressSanitizer's memcpy may) a mix of their bytes: another
    # ID, maybe FREE (states says so; free_many refuses it as a double free).
    def calls():
        try:
            if counts["calls"] % 2:
                states = a.states(ids)
                if set(states[:-1].tolist()) != {2}:
                    raise Bug("states() of ACTIVE PASIDs not all ACTIVE")
            else:
                a.free_many(ids)
                if not np.array_equal(a.alloc_many(n), expected):
                    raise Bug("the PASIDs freed did not come back")
        except (InvalidPasid, StateError):     # refused, nothing changed
            if len(a) != n:
                raise Bug(f"a refused call changed the allocator: {len(a)} ACTIVE") from None
            counts["refused"] += 1
        counts["calls"] += 1

    work.add("writer", flip)
    work.add("caller", calls)
    work.run_for(seconds, interval=1e-6,
                 enough=lambda: counts["calls"] >= 10 and counts["refused"] >= 1)
    if work.problems:
        raise Bug("\n".join(work.problems))
    a._check()
    if len(a) != n:
        raise Bug(f"{len(a)} ACTIVE after the calls, not {n}")
    return counts


def readers(module, seconds, seed=0):
    """Readers, and owners made in phase 1, while batches run."""
    n = batch_size(module)
    a = module.PasidAllocator(18, reserved=())
    owner_ids = iter(range(10**9))
    work = Threads()

    def batch():
        a.free_many(a.alloc_many(n))

    def owner():
        a.free(a.alloc(owner=f"owner{next(owner_ids)}", min=n))

    def generations():
        first, last = a.generation(0), a.generation(n - 1)
        if last < first:
            raise Bug(f"generation {first} of PASID 0, then {last} of PASID {n - 1}: "
                      "half a batch seen")

    def representation():
        active = int(re.search(r"active=(\d+)", repr(a)).group(1))
        if active % n > 1:                          # the owner thread holds 0 or 1
            raise Bug(f"{a!r}: half a batch seen")

    def stats():
        s = a.stats()
        if s["active"] % n > 1 or s["free"] + s["active"] != 1 << 18:
            raise Bug(f"stats() {s}: half a batch seen")

    for name, step in (("batches", batch), ("owners", owner), ("generations", generations),
                       ("reprs", representation), ("stats", stats), ("checks", a._check)):
        work.add(name, step)
    work.run_for(seconds, enough=lambda: min(work.tally.values()) >= 1)
    if work.problems:
        raise Bug("\n".join(work.problems))
    a._check()
    if len(a) != 0:
        raise Bug(f"{len(a)} ACTIVE after the threads ended")
    return work.tally


class Key:
    """An owner or device whose ``__hash__`` is Python code that may lose the GIL (the
    registry lock is held while it runs)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __hash__(self):
        time.sleep(0)
        return hash(self.name)

    def __eq__(self, other):
        return isinstance(other, Key) and other.name == self.name


def _child(a, ida, n, bits):
    """In a forked child: the allocators must be whole and working (exit 0), else the
    traceback and exit 1; stuck for 10 s, where it is and exit 1."""
    faulthandler.dump_traceback_later(10, exit=True)
    try:
        a._check()
        s = a.stats()
        states = ("free", "reserved", "active", "draining", "quarantined")
        if sum(s[k] for k in states) != 1 << bits:
            raise Bug(f"the counts do not add up: {s}")
        p = a.alloc(owner=Key("child"))
        a.bind(p, Key("child-device"))
        a.free(p)
        a.unbind(p, Key("child-device"))
        a.free_many(a.alloc_many(n))
        a.set_quota("child", 1)
        a._check()
        held = len(ida)                 # 0, or 1 taken by the churning thread
        ida.free(ida.alloc())
        if len(ida) != held or held > 1:
            raise Bug(f"the IDA holds {len(ida)} IDs")
        os._exit(0)
    except BaseException:
        traceback.print_exc()
        os._exit(1)


def fork(module, seconds, seed=0):
    """fork() while threads run batches, declare owners and devices, churn an IDA."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)   # fork() with threads
    rnd = random.Random(seed)
    n = batch_size(module)
    bits = 18 if module.__name__ == "pasid._core" else 14   # two batches at once fit
    a = module.PasidAllocator(bits, reserved=[0])
    ida = module.IDA()
    in_batch = [False]
    names = iter(range(10**9))
    work = Threads()

    def batch():
        in_batch[0] = True
        a.free_many(a.alloc_many(n, owner=rnd.choice([None, "batch"])))
        in_batch[0] = False

    def registry():
        i = next(names)
        p = a.try_alloc(owner=Key(f"owner{i}"))
        if p is not None:
            a.bind(p, Key(f"device{i}"))
            a.free(p)
            a.remove_device(Key(f"device{i}"))

    def ida_churn():
        ida.free(ida.alloc())

    for name, step in (("batches", batch), ("registry", registry), ("ida", ida_churn)):
        work.add(name, step)
    counts = {"forks": 0, "during_batch": 0, "hung": 0, "failed": 0}
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    for t in work.threads:
        t.start()
    try:
        deadline = time.monotonic() + seconds
        cap = deadline + 60
        # for the time given, and on until MIN_FORKS (at most a minute more)
        while ((time.monotonic() < deadline or counts["forks"] < MIN_FORKS)
               and time.monotonic() < cap and not work.stop.is_set()):
            time.sleep(rnd.uniform(0, 0.01))
            counts["during_batch"] += in_batch[0]
            pid = os.fork()
            if pid == 0:
                _child(a, ida, n, bits)
            counts["forks"] += 1
            waited = time.monotonic() + 20
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    counts["failed"] += status != 0
                    break
                if time.monotonic() > waited:
                    counts["hung"] += 1
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)
    finally:
        work.end()
        sys.setswitchinterval(before)
    if work.problems:
        raise Bug("\n".join(work.problems))
    if counts["hung"] or counts["failed"]:
        raise Bug(f"forked children: {counts} (their output is above)")
    a._check()
    return counts


def run(name, module, seconds, seed=0):
    """Run scenario ``name`` on ``module``; its counts."""
    return {"mutate": mutate, "readers": readers, "fork": fork}[name](module, seconds, seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--backend", choices=["cython", "python"], default="cython")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (module,) = backends(args.backend)
    try:
        counts = run(args.scenario, module, args.seconds, args.seed)
    except Bug as bug:
        print(f"[batchstress] {args.scenario} on {module.__name__}: FAILURE\n{bug}", flush=True)
        return 1
    print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
