"""Races around the batch calls: the caller's memory, fork(), and readers.

Batches run their C loops without the GIL from 65,536 IDs on (``pasid/_allocator.pxi``,
"Threads"). Each test here is a way a hostile program once broke that:

* a caller's array changed by another thread after its values were checked (an
  unchecked ID reached the C tables: the process died);
* ``fork()`` while a batch ran in another thread (the child inherited a held gate
  or lock and half-changed tables: its first call never returned);
* readers that did not wait for a running batch (half a batch seen), and
  ``_check()`` taking an owner record made by an operation still in flight for a
  leak.

What can crash or hang runs in a child process with a timeout, so a failure is a
failed test, never a dead or stuck suite. Each child runs for a time budget
(``RACE_SECONDS``) and prints what it did; the tests check those counts too, so
a race that never ran cannot pass.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backends import BACKEND_NAMES, NO_EXTENSION

ROOT = Path(__file__).resolve().parent.parent
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
RACE_SECONDS = 3.0 if PROFILE == "ci" else 1.5
MODULES = {"cython": "pasid._core", "python": "pasid.pure"}


def run_child(script, *args, timeout=60):
    """Run ``script`` in a new interpreter (this checkout first on its path); returns the
    counts of its last line, ``name=value ...``, as a dict of ints and its stderr as
    ``"stderr"``. A crash, a non-zero exit or a hang fails the test with what it printed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, (
        f"exit status {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    found = {k: int(v) for k, v in (item.split("=") for item in proc.stdout.split("\n")[-2].split())}
    return dict(found, stderr=proc.stderr)


# ---------------------------------------------------------------- the caller's memory

CHANGED_MEANWHILE = """
    import importlib, sys, threading, time
    import numpy as np
    from pasid import InvalidPasid

    module, call, seconds = importlib.import_module(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    # the compiled core: above the size from which a batch lets the GIL go; the
    # pure backend takes longer per ID, so fewer (numpy still lets the GIL go)
    N = 70_000 if module.__name__ == "pasid._core" else 5_000
    a = module.PasidAllocator(18, reserved=())
    ids = a.alloc_many(N).astype(np.int64)     # not uint32: the path that converts
    expected = ids.copy()
    stop = threading.Event()

    def pause():                     # a call: the thread may lose the GIL here
        pass

    def writer():                    # flips the last ID to -1 and back, all along
        good = int(ids[-1])
        while not stop.is_set():
            ids[-1] = -1
            pause()
            ids[-1] = good

    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=writer)
    thread.start()
    done = refused = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                if call == "states":
                    assert set(a.states(ids).tolist()) == {2}
                else:
                    a.free_many(ids)
                    assert np.array_equal(a.alloc_many(N), expected)
                done += 1
            except InvalidPasid:     # the copy taken held -1: refused, nothing changed
                refused += 1
    finally:
        stop.set()
        thread.join()
    a._check()
    assert len(a) == N
    print(f"done={done} refused={refused}")
"""


@pytest.mark.parametrize("call", ["free_many", "states"])
@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_an_array_changed_while_it_is_checked_never_reaches_the_tables(name, call):
    # The IDs are copied first and the copy is checked: another thread writing -1
    # into the caller's array makes the call refuse (InvalidPasid) or succeed,
    # never hand PASID 4294967295 to the tables.
    found = run_child(CHANGED_MEANWHILE, MODULES[name], call, RACE_SECONDS)
    assert found["done"] > 0 and found["refused"] > 0, found


TRACE_CHANGED = """
    import sys
    import numpy as np
    from pasid.sim import generate, preset, replay
    from pasid.sim.trace import OP_ALLOC, OP_BIND, OP_EXIT, TraceError

    engine = sys.argv[1]
    column, op, value = "handle", OP_ALLOC, 0
    refused = 0
    for column, op, value in [("handle", OP_ALLOC, 10**7), ("handle", OP_ALLOC, -5),
                              ("owner", OP_EXIT, 10**6), ("device", OP_BIND, 99),
                              ("op", OP_ALLOC, 200)]:
        trace = generate(preset("default"), 1)         # checked when built
        getattr(trace, column)[np.flatnonzero(trace.op == op)[5]] = value
        try:
            replay(trace, engine=engine)
        except TraceError as error:
            assert "changed after it was checked" in str(error), error
            refused += 1
    print(f"refused={refused}")
"""


def test_a_trace_changed_after_it_was_checked_is_refused_by_the_compiled_loop():
    # The compiled replay loop reads each column value once and checks it before it
    # indexes a table: a trace changed after read_trace/TraceBuilder checked it is a
    # TraceError, never a write outside the tables.
    if NO_EXTENSION:
        pytest.skip("PASID_NO_EXTENSION=1: no compiled replay loop")
    assert run_child(TRACE_CHANGED, "compiled")["refused"] == 5


SNAPSHOT_CHANGED = """
    import importlib, sys
    module = importlib.import_module(sys.argv[1])
    a = module.PasidAllocator(8)
    owners = [a.alloc(owner=f"owner{i}") for i in range(4)]
    a.add_device("gpu")
    load, (state,) = a.__reduce__()
    keys = state["owner_keys"] = list(state["owner_keys"])

    class Device(str):
        # a device whose __hash__ takes an owner key out of the list being loaded:
        # it runs after the owner keys were checked against the owners column
        popped = False

        def __hash__(self):
            if not Device.popped:
                Device.popped = True
                keys.pop()
            return str.__hash__(self)

    state["devices"] = [(Device("gpu"), 20, 0.0)]
    b = load(state)
    assert [b.owner(p) for p in owners] == [a.owner(p) for p in owners] and Device.popped
    b._check()
    print("loaded=1")
"""


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_a_snapshot_changed_while_it_is_checked_loads_what_was_checked(name):
    # The snapshot checker copies the lists it reads (owner keys, devices, quotas)
    # before the checks run user code (a key's __hash__): the copy is what is checked
    # and what is loaded, so an owner column checked against four keys never indexes
    # a table of three.
    assert run_child(SNAPSHOT_CHANGED, MODULES[name])["loaded"] == 1


# ---------------------------------------------------------------- fork()

FORK_DURING_BATCHES = """
    import faulthandler, importlib, os, random, sys, threading, time, traceback, warnings
    warnings.filterwarnings("ignore", category=DeprecationWarning)   # fork() with threads
    import numpy as np

    module, forks = importlib.import_module(sys.argv[1]), int(sys.argv[2])
    # the compiled core: batches large enough to let the GIL go, two at once fit
    N, BITS = (70_000, 18) if module.__name__ == "pasid._core" else (3_000, 14)

    class Key:
        # an owner or device whose __hash__ is Python code that may lose the GIL: the
        # registry lock is held while it runs
        def __init__(self, name):
            self.name = name
        def __hash__(self):
            time.sleep(0)
            return hash(self.name)
        def __eq__(self, other):
            return isinstance(other, Key) and other.name == self.name

    a = module.PasidAllocator(BITS, reserved=[0])
    ida = module.IDA()
    stop = threading.Event()
    in_batch = [False]

    def batches():
        while not stop.is_set():
            in_batch[0] = True
            ids = a.alloc_many(N, owner=random.choice([None, "batch"]))
            a.free_many(ids)
            in_batch[0] = False

    def registry():                  # new owners and devices all along
        i = 0
        while not stop.is_set():
            i += 1
            p = a.try_alloc(owner=Key(f"owner{i}"))
            if p is not None:
                a.bind(p, Key(f"device{i}"))
                a.free(p)
                a.remove_device(Key(f"device{i}"))

    def ida_churn():
        while not stop.is_set():
            ida.free(ida.alloc())

    def child():
        # the child's allocators must be whole and working; stuck, it says where
        faulthandler.dump_traceback_later(10, exit=True)
        try:
            a._check()
            s = a.stats()
            assert sum(s[k] for k in ("free", "reserved", "active", "draining",
                                      "quarantined")) == 1 << BITS, s
            p = a.alloc(owner=Key("child"))
            a.bind(p, Key("child-device"))
            a.free(p)
            a.unbind(p, Key("child-device"))
            ids = a.alloc_many(N)
            a.free_many(ids)
            a.set_quota("child", 1)
            a._check()
            held = len(ida)              # 0, or 1 taken by the churning thread
            ida.free(ida.alloc())
            assert len(ida) == held <= 1
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)

    threads = [threading.Thread(target=f) for f in (batches, registry, ida_churn)]
    for t in threads:
        t.start()
    hung = failed = during = 0
    try:
        for i in range(forks):
            time.sleep(random.uniform(0, 0.01))
            during += in_batch[0]
            pid = os.fork()
            if pid == 0:
                child()
            deadline = time.monotonic() + 20
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    failed += status != 0
                    break
                if time.monotonic() > deadline:
                    hung += 1
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    a._check()
    print(f"forks={forks} during={during} hung={hung} failed={failed}")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_a_fork_during_batches_gives_a_child_that_works(name):
    # Threads run batches (without the GIL, on the compiled core), declare owners and
    # devices (a Python __hash__: the registry lock held while it runs) and churn an
    # IDA; the main thread forks meanwhile. Every child finds the allocators whole
    # (_check, the counts) and working (alloc, bind, batches, quotas).
    forks = 20 if PROFILE == "ci" else 10
    found = run_child(FORK_DURING_BATCHES, MODULES[name], forks, timeout=300)
    assert (found["hung"], found["failed"]) == (0, 0), found["stderr"]
    assert found["during"] > 0, found


# ---------------------------------------------------------------- readers during a batch

def test_readers_see_a_batch_whole_or_not_at_all(backend):
    # One thread allocates and frees N PASIDs at a time (0..N-1, lowest first); one
    # allocates and frees single PASIDs above them for a new owner each time (a record
    # made in phase 1, while a batch may hold the allocator); readers meanwhile:
    # generation() of the first and the last PASID of the batch (a batch runs in
    # ascending order, so a later reading of the last one below an earlier reading
    # of the first is half a batch seen), repr() (ACTIVE counts a batch wholly or not
    # at all), and _check() (an owner record made by an operation in flight is not
    # an idle record kept).
    import re
    import threading
    import time

    n = 70_000 if backend.__name__ == "pasid._core" else 3_000
    a = backend.PasidAllocator(18, reserved=())
    stop = threading.Event()
    problems = []
    tally = {"batches": 0, "owners": 0, "generations": 0, "reprs": 0, "checks": 0}

    def run(name, step):
        def loop():
            try:
                while not stop.is_set():
                    step()
                    tally[name] += 1
            except Exception as exc:
                problems.append(f"{name}: {exc!r}")
                stop.set()
        return threading.Thread(target=loop)

    def batch():
        a.free_many(a.alloc_many(n))

    owner_ids = iter(range(10**9))

    def owner():
        a.free(a.alloc(owner=f"owner{next(owner_ids)}", min=n))

    def generations():
        first, last = a.generation(0), a.generation(n - 1)
        if last < first:
            problems.append(f"generation {first} of PASID 0, then {last} of PASID {n - 1}")

    def representation():
        active = int(re.search(r"active=(\d+)", repr(a)).group(1))
        if active % n > 1:                          # the owner thread holds 0 or 1
            problems.append(f"{repr(a)}: half a batch")

    threads = [run("batches", batch), run("owners", owner), run("generations", generations),
               run("reprs", representation), run("checks", a._check)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for t in threads:
            t.start()
        time.sleep(RACE_SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in threads)
    assert problems == []
    assert min(tally.values()) > 0, tally
    a._check()
    assert len(a) == 0
