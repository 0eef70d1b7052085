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
a race that never ran cannot pass. Those runs are marked ``slow``: their budget
follows the Hypothesis profile (3 s under ``ci``, 1.5 s under ``dev``).
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


def run(argv, timeout):
    """Run ``python argv...`` (this checkout first on the path) and return the counts of
    its last line, ``name=value ...``, as a dict of ints. A crash, a non-zero exit or
    a hang fails the test with what it printed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    proc = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, (
        f"exit status {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    last = proc.stdout.rstrip("\n").split("\n")[-1]
    return {k: int(v) for k, v in (item.split("=") for item in last.split())}


def batchstress(scenario, name):
    """fuzz/batchstress.py's ``scenario`` on backend ``name`` for RACE_SECONDS: its counts."""
    return run([ROOT / "fuzz" / "batchstress.py", "--scenario", scenario, "--backend", name,
                "--seconds", RACE_SECONDS], timeout=300)


def batchstress_module():
    sys.path.insert(0, str(ROOT / "fuzz"))
    try:
        import batchstress
    finally:
        sys.path.remove(str(ROOT / "fuzz"))
    return batchstress


def run_child(script, *args, timeout=60):
    """Run ``script`` in a new interpreter (see :func:`run`)."""
    return run(["-c", textwrap.dedent(script), *args], timeout)


# ---------------------------------------------------------------- the caller's memory

@pytest.mark.slow
@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_an_array_changed_while_it_is_checked_never_reaches_the_tables(name):
    # free_many and states copy the IDs first and check the copy: another thread
    # writing -1 into the caller's array makes the call refuse (InvalidPasid) or act
    # on the IDs as they were, never hand PASID 4294967295 to the tables
    # (fuzz/batchstress.py, "mutate").
    found = batchstress("mutate", name)
    assert found["calls"] > 0 and found["refused"] > 0, found


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
        rows = np.flatnonzero(trace.op == op)
        if op == OP_ALLOC:
            # an alloc without FITS: for one with FITS, Trace.fits() (before the loop)
            # indexes by the handle column first (IndexError, or -5 wraps around)
            rows = rows[trace.device[rows] < 0]
        getattr(trace, column)[rows[5]] = value
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

@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_a_fork_during_batches_gives_a_child_that_works(name):
    # Threads run batches (without the GIL, on the compiled core), declare owners and
    # devices (a Python __hash__: the registry lock held while it runs) and churn an
    # IDA; the main thread forks meanwhile. Every child finds the allocators whole
    # (_check, the counts) and working (alloc, bind, batches, quotas) within 20 s
    # (fuzz/batchstress.py, "fork").
    found = batchstress("fork", name)
    assert found["forks"] >= batchstress_module().MIN_FORKS and found["during_batch"] > 0, found


# ---------------------------------------------------------------- readers during a batch

@pytest.mark.slow
@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_readers_see_a_batch_whole_or_not_at_all(name):
    # generation(), repr(), stats() and _check() while batches run, and owners made
    # in phase 1 while a batch holds the allocator (fuzz/batchstress.py, "readers").
    found = batchstress("readers", name)
    assert min(found.values()) > 0, found
