"""The examples run and agree with the library.

* ``examples/cython_sim``: built once per run in a temporary directory
  (``build.py`` in a subprocess: Cython and a C compiler; under pytest-xdist the
  first worker to need it builds it for all), then its loops over
  the C-level API are checked against the same calls through the Python
  methods: the same PASIDs, identical ``to_bytes()`` (counters included); its
  guest loops (``vcmd``, ``guest_alloc``/``guest_free``) against the same calls
  on a twin host's GuestSpace (states, generations, stats and ``export()``).
  Then the same build runs, unchanged, against a copy of pasid rebuilt with
  one more private field in ``PasidAllocator`` and ``GuestSpace`` (the C-level API promises no
  layout), and an older table is refused at import. Skipped under
  ``PASID_NO_EXTENSION=1`` (no compiled core to build against).
* ``examples/simpy_iommu.py``, ``examples/strategy_comparison.py`` and
  ``examples/simpy_vms.py``: run as scripts with ``--quick``, and the models
  in-process on each backend (the same seed gives the same summary on both).
"""

import fcntl
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import ALL_BACKENDS, NO_EXTENSION, load_backend

from pasid import InvalidPasid, PasidExhausted, State, StateError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CYTHON_SIM = EXAMPLES / "cython_sim"


def pasid_path():
    """The folder holding the pasid this process imports (a worktree's, say, not the
    installed one): a script run here puts it first on its path, as the example's
    build puts it on Cython's include path."""
    import pasid

    return str(Path(pasid.__file__).resolve().parent.parent)


def script_env():
    path = [pasid_path(), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def run_script(*args, timeout=300):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=script_env())
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# ---------------------------------------------------------------- the Cython example

needs_core = pytest.mark.skipif(
    NO_EXTENSION, reason="PASID_NO_EXTENSION=1: the Cython example builds against the compiled core")


def load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory, pytestconfig):
    if NO_EXTENSION:
        pytest.skip("PASID_NO_EXTENSION=1: the Cython example builds against the compiled core")
    pytest.importorskip("Cython", reason="building the Cython example needs Cython")
    pytest.importorskip("setuptools", reason="building the Cython example needs setuptools")
    # Once a run: under pytest-xdist in the run's temporary directory, above each
    # worker's own, the first worker there building it (under a lock) for the others.
    # Every worker imports the same pasid, the one this run tests.
    base = tmp_path_factory.getbasetemp()
    if hasattr(pytestconfig, "workerinput"):      # a pytest-xdist worker
        base = base.parent
    directory = base / "cython_sim"
    with open(base / "cython_sim.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "built").exists():
            # build against the pasid this process imports, wherever it lives
            run_script(CYTHON_SIM / "build.py", "--build-dir", directory, "--include",
                       pasid_path())
            (directory / "built").touch()
    return directory


@pytest.fixture(scope="session")
def churn(build_dir):
    helper = load_file("pasid_example_build", CYTHON_SIM / "build.py")
    return helper.load(build_dir)


BITS = 20
N = 1 << BITS


def half_state(seed=5):
    """A 20-bit compiled allocator, no reserved ID, a random half allocated: its snapshot."""
    from pasid._core import PasidAllocator

    a = PasidAllocator(BITS, reserved=(), seed=seed)
    a.alloc_many(N)
    a.free_many(np.sort(np.random.default_rng(seed).permutation(N)[: N // 2]))
    return a.to_bytes()


def python_lifecycle(a, cycles):
    """``churn.lifecycle``'s work through the Python methods, on devices dev0 and dev1."""
    for _ in range(cycles):
        p = a.alloc()
        a.bind(p, "dev0")
        a.bind(p, "dev1")
        a.free(p)
        a.unbind(p, "dev0")
        a.unbind(p, "dev1")
        a.advance(by=1)


def churn_victims(a, pairs, seed=6):
    """Victims drawn from the IDs allocated at each moment, played through the
    Python methods on ``a`` (the reference run): (victims, last PASID)."""
    rng = np.random.default_rng(seed)
    allocated = np.flatnonzero(a.states(np.arange(N)) == State.ACTIVE).tolist()
    victims = []
    for j in rng.integers(0, len(allocated), size=pairs).tolist():
        v = allocated[j]
        a.free(v)
        p = a.alloc()
        allocated[j] = p
        victims.append(v)
    return np.array(victims, dtype=np.int64), p


@needs_core
def test_churn_is_the_python_calls(churn):
    from pasid._core import PasidAllocator

    snapshot = half_state()
    by_python = PasidAllocator.from_bytes(snapshot)
    victims, last = churn_victims(by_python, 3000)
    by_c = PasidAllocator.from_bytes(snapshot)
    assert churn.churn(by_c, victims) == last
    assert by_c.to_bytes() == by_python.to_bytes()
    stats = by_c.stats()
    assert stats == by_python.stats()
    assert stats["allocations"] == N + 3000 and stats["releases"] == N // 2 + 3000
    assert churn.counts(by_c) == tuple(stats[k] for k in
                                       ("free", "reserved", "active", "draining", "quarantined"))
    by_c._check()


@needs_core
@pytest.mark.parametrize("reserved", [(), (0,)])
def test_lifecycle_is_the_python_calls(churn, reserved):
    from pasid._core import PasidAllocator

    def allocator():
        a = PasidAllocator(BITS, reserved=reserved, grace=1, seed=0)
        return a, a.add_device("dev0", drain=0.5), a.add_device("dev1", drain=0.5)

    by_c, d0, d1 = allocator()
    assert churn.lifecycle(by_c, d0, d1, 500) == (len(reserved), 500, 0)
    by_python, _, _ = allocator()
    python_lifecycle(by_python, 500)
    assert by_c.to_bytes() == by_python.to_bytes()
    stats = by_c.stats()
    assert stats == by_python.stats()
    assert stats["allocations"] == stats["releases"] == stats["reclaimed"] == 500
    assert by_c.now == 500 and by_c.generation(len(reserved)) == 500


@needs_core
def test_lifecycle_with_a_hold_beyond_one_tick(churn):
    # drain 2 > the advance of 1: each cycle's PASID is still QUARANTINED after
    # its advance, so the next cycle takes another ID
    from pasid._core import PasidAllocator

    a = PasidAllocator(8, grace=1)
    d0, d1 = a.add_device("gpu", drain=2), a.add_device("nic", drain=0)
    last, reclaimed, left_active = churn.lifecycle(a, d0, d1, 10)
    assert (last, left_active) == (2, 0)
    assert reclaimed == 9 and a.stats()["quarantined"] == 1


@needs_core
def test_nothing_free_is_a_counted_failure(churn):
    from pasid._core import PasidAllocator

    def full():
        a = PasidAllocator(4, reserved=(), grace=10, seed=0)
        a.alloc_many(16)
        return a

    by_c, by_python = full(), full()
    with pytest.raises(PasidExhausted, match="after freeing 3"):
        churn.churn(by_c, np.array([3], dtype=np.int64))    # 3 goes QUARANTINED: -1
    by_python.free(3)
    assert by_python.try_alloc() is None
    assert by_c.to_bytes() == by_python.to_bytes() and by_c.stats()["failures"] == 1


@needs_core
def test_misuse_raises_the_python_methods_errors(churn):
    from pasid._core import PasidAllocator

    a = PasidAllocator(8)
    before = a.to_bytes()
    with pytest.raises(StateError, match="free of PASID 5"):
        churn.churn(a, np.array([5], dtype=np.int64))
    with pytest.raises(InvalidPasid):
        churn.churn(a, np.array([256], dtype=np.int64))
    assert a.to_bytes() == before
    assert churn.churn(a, np.array([], dtype=np.int64)) == -1
    # a PASID allocated in C is an ordinary PASID
    p = a.alloc()
    assert churn.churn(a, np.array([p], dtype=np.int64)) == p
    a.free(p)
    assert a.state(p) is State.FREE and a.generation(p) == 2


@needs_core
def test_batch_entry_points_are_the_python_calls(churn):
    from pasid._core import PasidAllocator

    by_c = PasidAllocator(8, strategy="random", seed=3)
    by_python = PasidAllocator(8, strategy="random", seed=3)
    out = np.empty(40, dtype=np.uint32)
    assert churn.batch(by_c, out) == 40                 # taken, then freed, in C
    expected = by_python.alloc_many(40)
    by_python.free_many(expected)
    assert np.array_equal(out, expected)
    assert by_c.to_bytes() == by_python.to_bytes()
    # all or nothing: too many asked is -1, a counted failure, nothing taken
    assert churn.batch(by_c, np.empty(300, dtype=np.uint32)) == -1
    assert by_c.stats()["failures"] == 1 and len(by_c) == 0
    # at the owner's quota: -1, nothing taken
    by_c.set_quota("vm", 2)
    assert churn.batch(by_c, np.empty(3, dtype=np.uint32), "vm") == -1
    kept = np.empty(2, dtype=np.uint32)
    assert churn.batch(by_c, kept, "vm") == 2
    assert sorted(by_c.exit_owner("vm")) == sorted(kept.tolist())


@needs_core
def test_c_free_many_is_all_or_nothing(churn):
    from pasid._core import PasidAllocator

    a = PasidAllocator(8)
    ids = a.alloc_many(4)
    before = a.to_bytes()
    with pytest.raises(StateError, match="already freed"):
        churn.free_many(a, np.array([ids[0], ids[1], ids[0]], dtype=np.uint32))
    with pytest.raises(InvalidPasid, match="out of range"):
        churn.free_many(a, np.array([ids[0], 256], dtype=np.uint32))
    assert a.to_bytes() == before
    assert churn.free_many(a, ids.copy()) == 0 and len(a) == 0
    assert churn.free_many(a, np.empty(0, dtype=np.uint32)) == 0


def _gil_build():
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return is_gil_enabled is None or is_gil_enabled()


@needs_core
@pytest.mark.skipif(not _gil_build(), reason="the free-threaded build has no GIL to let go")
@pytest.mark.parametrize("call", ["alloc_many", "c_alloc_many", "c_free_many"])
def test_a_batch_lets_the_gil_go(churn, call):
    # Another thread counts in a pure-Python loop. While the main thread is inside
    # one batch call, the counter moves only if the call lets the GIL go: with a
    # switch interval of 50 ms nothing forces the main thread to give it up within
    # the few milliseconds from reading the counter before the call to reading it
    # after. The calls measured run no numpy code (which may let the GIL go by
    # itself): alloc_many from Python (its output array is made before), and the C
    # entry points through the example. Getting the GIL back takes up to 50 ms: the
    # counting thread gives it up only when asked.
    import threading
    import time

    from pasid._core import PasidAllocator

    n = N - 1
    a = PasidAllocator(BITS, reserved=[0])
    ids = np.arange(1, N, dtype=np.uint32)
    out = np.empty(n, dtype=np.uint32)
    counter = [0]
    stop = threading.Event()
    interval = sys.getswitchinterval()

    def count():
        while not stop.is_set():
            counter[0] += 1

    seen = []
    sys.setswitchinterval(0.05)
    thread = threading.Thread(target=count)
    thread.start()
    try:
        # until the counter moves in one call, for up to 30 s: on a busy machine the
        # other thread may wake only after the call has ended, many times in a row
        # (each try takes milliseconds); a call that keeps the GIL never moves it
        deadline = time.monotonic() + 30
        while not any(seen) and (len(seen) < 30 or time.monotonic() < deadline):
            if call == "c_free_many":
                a.alloc_many(n)
            before = counter[0]
            if call == "alloc_many":
                a.alloc_many(n)
            elif call == "c_alloc_many":
                churn.batch(a, out, "owner")      # an owner: no free_many in C after
            else:
                churn.free_many(a, ids)
            seen.append(counter[0] - before)
            if call != "c_free_many":
                a.free_many(ids)
    finally:
        stop.set()
        thread.join(10)
        sys.setswitchinterval(interval)
    assert max(seen) > 0, seen
    assert len(a) == 0
    a._check()


CALLER_BUFFER_CHANGED = """
    import sys, threading, time
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import build
    from pasid import InvalidPasid, StateError
    from pasid._core import PasidAllocator

    churn, call, seconds = build.load(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    N = 70_000                       # above the size from which a batch lets the GIL go
    a = PasidAllocator(18, reserved=())
    buffer = np.arange(N, dtype=np.uint32)    # lowest first: the IDs alloc_many gives
    stop = threading.Event()

    def pause():                     # a call: the thread may lose the GIL here
        pass

    def writer():                    # writes 2**32 - 1 into the buffer and back, all along
        while not stop.is_set():
            buffer[-1] = 0xFFFFFFFF
            pause()
            buffer[-1] = N - 1
            pause()

    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=writer)
    thread.start()
    done = refused = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if call == "c_free_many":
                a.alloc_many(N)
                try:
                    churn.free_many(a, buffer)
                    done += 1
                except (InvalidPasid, StateError):
                    # the copy held 2**32 - 1 (or, read in pieces while written, as
                    # AddressSanitizer's memcpy may, a FREE ID): nothing freed
                    assert len(a) == N
                    refused += 1
                    a.free_many(np.arange(N, dtype=np.uint32))
            else:
                assert churn.batch(a, buffer, "vm") == N    # an owner: kept, not freed
                assert a.exit_owner("vm") == list(range(N))
                done += 1
            assert len(a) == 0
    finally:
        stop.set()
        thread.join()
    a._check()
    print(f"done={done} refused={refused}")
"""


@needs_core
@pytest.mark.parametrize("call", ["c_free_many", "c_alloc_many"])
def test_the_c_batches_work_from_the_allocators_memory(build_dir, call):
    # Another thread writes 2**32 - 1 into the caller's buffer while the batch runs
    # without the GIL: c_free_many copies the IDs first and checks the copy (refused
    # or freed, never an unchecked ID in the tables); c_alloc_many fills the
    # allocator's own memory, tags the owner from it, and copies to the buffer last.
    import textwrap

    env = script_env()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CALLER_BUFFER_CHANGED), str(CYTHON_SIM),
         str(build_dir), call, "2"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    found = dict(item.split("=") for item in proc.stdout.split())
    assert int(found["done"]) > 0, found
    if call == "c_free_many":
        assert int(found["refused"]) > 0, found


@needs_core
def test_c_generation_waits_for_a_running_batch(churn):
    # One thread allocates and frees N PASIDs at a time, lowest first; the main thread
    # reads c_generation of the first, then of the last: a later reading of the last
    # below an earlier one of the first is half a batch seen.
    import threading
    import time

    from pasid._core import PasidAllocator

    n = 70_000
    a = PasidAllocator(18, reserved=())
    stop = threading.Event()
    rounds = [0]

    def batches():
        while not stop.is_set():
            a.free_many(a.alloc_many(n))
            rounds[0] += 1

    thread = threading.Thread(target=batches)
    thread.start()
    half = readings = 0
    deadline = time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline or rounds[0] < 10:
            first = churn.generation(a, 0)
            half += churn.generation(a, n - 1) < first
            readings += 1
    finally:
        stop.set()
        thread.join(60)
    assert half == 0 and readings > 0 and rounds[0] >= 10
    assert churn.generation(a, 0) == churn.generation(a, n - 1) == rounds[0]


@needs_core
def test_exact_and_next_release_time(churn):
    from pasid._core import PasidAllocator

    a = PasidAllocator(8, grace=2)
    assert churn.next_release(a) is None
    assert churn.exact(a, 42) == 42 and a.state(42) is State.ACTIVE
    assert churn.exact(a, 42) == -1                     # not FREE: no exception
    assert a.stats()["failures"] == 0                   # as alloc_exact: not a refusal
    a.free(42)
    assert churn.next_release(a) == 2.0 == a.next_release_time()
    a.set_quota("vm", 0)
    assert churn.exact(a, 43, "vm") == -1 and a.stats()["failures"] == 1
    with pytest.raises(InvalidPasid):
        churn.exact(a, 256)
    assert churn.exact(a, 44, "other") == 44 and a.owner(44) == "other"


@needs_core
def test_ida_entry_points(churn):
    from pasid._core import IDA

    ida = IDA()
    kept = ida.alloc_range(0, 9)
    assert churn.ida_churn(ida, 100) == (1, False, -1)
    assert list(ida) == [kept] and len(ida) == 1


@needs_core
@pytest.mark.parametrize("strategy", ["lowest", "random"])
def test_prefetch_changes_nothing(churn, strategy):
    # version 3's hint, on every kind of PASID and outside the space (ignored): no error,
    # nothing observable changed, the same bytes out
    from pasid._core import PasidAllocator

    a = PasidAllocator(bits=20, strategy=strategy, seed=3, grace=1.0)
    a.add_device("dev")
    held = [a.alloc(owner=f"o{i % 3}", data=i) for i in range(6)]
    a.bind(held[0], "dev")
    a.free(held[0])                             # DRAINING
    a.free(held[1])                             # QUARANTINED
    a.get(held[2])
    a.reserve(5000, 5003)
    before = (a.to_bytes(), a.stats(), [a.state(p) for p in held])
    for p in [*held, 0, 5001, (1 << 20) - 1, 1 << 20, -1, -(1 << 62), 1 << 62]:
        assert churn.prefetch(a, p) is None
    assert (a.to_bytes(), a.stats(), [a.state(p) for p in held]) == before
    a._check()
    with pytest.raises(TypeError):
        churn.prefetch(object(), 0)


# ---------------------------------------------------------------- guests (table version 2)


def python_vcmd_churn(vm, n, encoding):
    """``churn.vcmd_churn``'s work through ``GuestSpace.vcmd`` and pasid._vcmd's codec."""
    from pasid import _vcmd

    layout = _vcmd.LAYOUTS[encoding]
    last, refused = -1, 0
    for _ in range(n):
        in_progress, code, pasid = _vcmd.parse_response(vm.vcmd(_vcmd.ALLOC, encoding=encoding),
                                                        encoding)
        if in_progress or code != layout.codes[_vcmd.Status.SUCCESS]:
            refused += 1
            continue
        response = vm.vcmd(_vcmd.FREE | pasid << layout.operand_shift, encoding=encoding)
        assert _vcmd.parse_response(response, encoding)[:2] == (0, 0), hex(response)
        last = pasid
    return last, refused


def python_guest_churn(vm, n, hold, owner=None):
    """``churn.guest_churn``'s work through try_alloc, host_pasid, guest_pasid, free."""
    ring, last, refused, host_sum = [], -1, 0, 0
    for _ in range(n):
        g = vm.try_alloc(owner)
        if g is None:
            refused += 1
            continue
        h = vm.host_pasid(g)
        assert vm.guest_pasid(h) == g
        host_sum += h
        last = g
        ring.append(g)
        if len(ring) > hold:
            vm.free(ring.pop(0))
    return last, refused, host_sum


def twin_hosts(mode, quota=None, grace=0):
    """Two identical 12-bit hosts, each with 100 PASIDs of its own and a VM "vm0"."""
    from pasid._core import PasidAllocator

    twins = []
    for _ in range(2):
        host = PasidAllocator(12, grace=grace, seed=4)
        host.alloc_many(100)
        twins.append((host, host.add_vm("vm0", mode=mode, quota=quota)))
    return twins


def assert_same_hosts(by_c, by_python):
    """The hosts (a host holding VMs has no snapshot yet) and their VMs agree."""
    (host_c, vm_c), (host_py, vm_py) = by_c, by_python
    everything = np.arange(1 << host_c.bits)
    assert np.array_equal(host_c.states(everything), host_py.states(everything))
    assert [host_c.generation(p) for p in everything.tolist()] == \
        [host_py.generation(p) for p in everything.tolist()]
    assert host_c.stats() == host_py.stats() and vm_c.stats() == vm_py.stats()
    assert list(vm_c) == list(vm_py) and vm_c.export() == vm_py.export()
    host_c._check()


@needs_core
@pytest.mark.parametrize("mode", ["translated", "identity"])
@pytest.mark.parametrize("encoding", ["3.1", "3.3"])
def test_vcmd_churn_is_the_python_calls(churn, mode, encoding):
    from pasid._vcmd import LAYOUTS

    # grace 5 and a frozen clock: every freed host PASID stays QUARANTINED, held by the
    # VM, so the quota of 100 refuses the ALLOCs after the 100th (counted failures)
    by_c, by_python = twin_hosts(mode, quota=100, grace=5)
    result = churn.vcmd_churn(by_c[1], 300, LAYOUTS[encoding].index)
    assert result == python_vcmd_churn(by_python[1], 300, encoding)
    assert result[1] == 200 and by_c[1].stats()["failures"] == 200
    assert_same_hosts(by_c, by_python)


@needs_core
@pytest.mark.parametrize("mode", ["translated", "identity"])
@pytest.mark.parametrize(("quota", "owner"), [(None, None), (5, "proc")])
def test_guest_churn_is_the_python_calls(churn, mode, quota, owner):
    by_c, by_python = twin_hosts(mode, quota=quota)
    result = churn.guest_churn(by_c[1], 500, 8, owner)
    assert result == python_guest_churn(by_python[1], 500, 8, owner)
    assert_same_hosts(by_c, by_python)
    assert len(by_c[1]) == (8 if quota is None else quota)
    assert result[1] == (0 if quota is None else 495)
    assert {by_c[1].owner(g) for g in by_c[1]} == {owner}


@needs_core
@pytest.mark.parametrize("mode", ["translated", "identity"])
def test_the_guest_entries_answer_as_the_methods(churn, mode):
    from pasid._core import PasidAllocator
    from pasid._vcmd import ALLOC, FREE, LAYOUTS, respond, Status

    host = PasidAllocator(8, grace=0)
    vm, other = host.add_vm("vm0", mode=mode, max=99), host.add_vm("vm1", mode=mode, min=100)
    g, g1 = vm.alloc(), other.alloc()
    h = vm.host_pasid(g)
    assert churn.guest_to_host(vm, g) == h and churn.host_to_guest(vm, h) == g
    # not mapped: -1 where the methods raise StateError
    assert churn.guest_to_host(vm, 7) == -1
    assert churn.host_to_guest(vm, other.host_pasid(g1)) == -1     # another VM's
    assert churn.host_to_guest(vm, 0) == -1                        # the host's
    # outside the range: InvalidPasid, as the methods
    for call, bad in ((churn.guest_to_host, 256), (churn.guest_to_host, -1),
                      (churn.host_to_guest, 256), (churn.guest_free, 256)):
        with pytest.raises(InvalidPasid, match="out of range 0..255"):
            call(vm, bad)
    with pytest.raises(StateError, match="free of PASID 7, which is"):
        churn.guest_free(vm, 7)
    # a bad word is answered, never raised, and changes nothing
    before = (vm.stats(), host.stats(), list(vm))
    for word, layout in ((3, "3.3"), (FREE | 7 << 16, "3.3"), (FREE | 1 << 40, "3.3"),
                         (2**64 - 1, "3.1")):
        assert churn.vcmd(vm, word, LAYOUTS[layout].index) == vm.vcmd(word, encoding=layout)
    assert churn.vcmd(vm, FREE | 7 << 16) == respond(Status.INVALID_PASID, 0, "3.3")
    assert (vm.stats(), host.stats(), list(vm)) == before
    with pytest.raises(ValueError, match="PASID_VCMD_31 .0. or PASID_VCMD_33 .1., not 2"):
        churn.vcmd(vm, ALLOC, 2)
    assert (vm.stats(), host.stats(), list(vm)) == before
    # guest_alloc/guest_free: the PASID and its tag, as try_alloc/free
    p = churn.guest_alloc(vm, "proc")
    assert p in vm and vm.owner(p) == "proc"
    vm.get(p)
    assert churn.guest_free(vm, p) == 0 and p in vm                 # one reference left
    assert churn.guest_free(vm, p) == 0 and p not in vm             # the last releases
    # a removed VM: StateError from every entry (a bad encoding is still ValueError)
    host.remove_vm("vm0")
    for call, args in ((churn.vcmd, (ALLOC,)), (churn.guest_alloc, ()),
                       (churn.guest_free, (g,)), (churn.guest_to_host, (g,)),
                       (churn.host_to_guest, (h,)), (churn.vcmd_churn, (1,)),
                       (churn.guest_churn, (1,))):
        with pytest.raises(StateError, match="VM 'vm0' has been removed"):
            call(vm, *args)
    with pytest.raises(ValueError):
        churn.vcmd(vm, ALLOC, -1)
    host._check()


@needs_core
def test_guest_alloc_refusals_are_counted(churn):
    from pasid._core import PasidAllocator

    host = PasidAllocator(8)
    vm = host.add_vm("vm0", quota=1)
    assert churn.guest_alloc(vm) == 1 and churn.guest_alloc(vm) == -1      # the quota
    full = host.add_vm("vm1", mode="identity", min=200, max=200)
    assert churn.guest_alloc(full) == 200 and churn.guest_alloc(full) == -1   # none FREE
    assert vm.stats()["failures"] == full.stats()["failures"] == 1
    assert host.stats()["failures"] == 2


@needs_core
def test_run_script(build_dir):
    out = run_script(CYTHON_SIM / "run.py", "--build-dir", build_dir, "--pairs", 500,
                     "--cycles", 100, "--commands", 500, "--repeat", 1)
    assert "W1 churn" in out and "W6 lifecycle" in out
    assert "vcmd pair" in out and "guest churn" in out


def test_build_finds_the_installed_pxd():
    import pasid

    helper = load_file("pasid_example_build", CYTHON_SIM / "build.py")
    assert helper.pasid_include_dir() == str(Path(pasid.__file__).resolve().parent.parent)


# ------------------------------------------------ the C API promises functions, not a layout

@needs_core
def test_the_table_refuses_other_objects(churn):
    import pasid.pure

    victims = np.array([1], dtype=np.int64)
    with pytest.raises(TypeError, match="needs a pasid._core.PasidAllocator, not "
                                        "pasid.pure.allocator.PasidAllocator"):
        churn.churn(pasid.pure.PasidAllocator(8), victims)
    with pytest.raises(TypeError, match="needs a pasid._core.IDA, not builtins.object"):
        churn.ida_churn(object(), 1)
    with pytest.raises(TypeError, match="needs a pasid._core.GuestSpace, not "
                                        "pasid.pure.guest.GuestSpace"):
        churn.vcmd_churn(pasid.pure.PasidAllocator(8).add_vm("vm0"), 1)
    with pytest.raises(TypeError, match="needs a pasid._core.GuestSpace, not "
                                        "pasid._core.PasidAllocator"):
        churn.guest_alloc(pasid._core.PasidAllocator(8))


# Run in a child: load the example built in argv[2] (build.py in argv[1]) against the
# pasid first on its path, whose folder is argv[3]; use every entry and check each
# against the same calls through the Python methods. Prints the class's basicsize.
EXAMPLE_AGAINST = """
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import build
    import pasid
    from pasid import State
    from pasid._core import IDA, PasidAllocator

    assert pasid.__file__.startswith(sys.argv[3]), pasid.__file__
    churn = build.load(sys.argv[2])

    # W1: put(victim) + alloc() in C and through the Python methods, on twins
    by_c, by_python = PasidAllocator(10, seed=1), PasidAllocator(10, seed=1)
    ids = by_c.alloc_many(600)
    by_python.alloc_many(600)
    victims = np.random.default_rng(2).permutation(ids.astype(np.int64))[:300]
    for v in victims.tolist():
        by_python.free(v)
        last = by_python.alloc()
    assert churn.churn(by_c, victims) == last
    assert by_c.to_bytes() == by_python.to_bytes()
    stats = by_c.stats()
    assert churn.counts(by_c) == tuple(stats[k] for k in
                                       ("free", "reserved", "active", "draining", "quarantined"))

    # W6: the lifecycle with a logical clock (python_lifecycle: the test file's, put first)
    def lifecycle_pair():
        a = PasidAllocator(10, grace=1, seed=0)
        return a, a.add_device("dev0", drain=0.5), a.add_device("dev1", drain=0.5)

    (by_c, d0, d1), (by_python, _, _) = lifecycle_pair(), lifecycle_pair()
    assert churn.lifecycle(by_c, d0, d1, 50) == (1, 50, 0)
    python_lifecycle(by_python, 50)
    assert by_c.to_bytes() == by_python.to_bytes()

    # the other entries, once each
    a = PasidAllocator(8, grace=2)
    out = np.empty(40, dtype=np.uint32)
    assert churn.batch(a, out) == 40 and a.stats()["quarantined"] == 40  # taken, freed
    assert churn.batch(a, out, "vm") == 40 and out[0] == 41
    assert churn.free_many(a, out) == 0 and a.stats()["quarantined"] == 80
    assert churn.exact(a, 100) == 100 and churn.exact(a, 100) == -1
    assert churn.generation(a, 100) == 1 and churn.next_release(a) == 2.0
    assert a.state(100) is State.ACTIVE
    ida = IDA()
    ida.alloc_range(0, 9)
    assert churn.ida_churn(ida, 100) == (1, False, -1) and len(ida) == 1

    # guests: the virtual command and guest_alloc/guest_free
    (host, vm), (twin, twin_vm) = [(a, a.add_vm("vm0", min=50)) for a in
                                   (PasidAllocator(8), PasidAllocator(8))]
    assert churn.vcmd_churn(vm, 20) == (1, 0) and churn.vcmd_churn(vm, 20, 0) == (1, 0)
    for _ in range(40):
        twin_vm.free(twin_vm.alloc())
    assert churn.guest_churn(vm, 20, 4) == python_guest_churn(twin_vm, 20, 4)
    assert list(vm) == list(twin_vm) and host.stats() == twin.stats()
    print(PasidAllocator.__basicsize__)
"""


def copy_with_a_private_field(destination):
    """A copy of this checkout's package source (no build outputs) with one private
    field added to the compiled PasidAllocator and GuestSpace: what any release may do."""
    import shutil

    shutil.copytree(ROOT / "pasid", destination / "pasid",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "*.html",
                                                  "__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, destination / name)
    pxd = destination / "pasid" / "_core.pxd"
    text = pxd.read_text()
    for header in ("cdef class PasidAllocator:\n", "cdef class GuestSpace:\n"):
        assert text.count(header) == 1
        text = text.replace(header, header + "    cdef int64_t _padding_for_test\n")
    pxd.write_text(text)
    return destination


@needs_core
@pytest.mark.skipif(not (ROOT / "pasid" / "_core.pyx").exists(),
                    reason="rebuilds the package's sources, not beside these tests")
def test_the_example_survives_a_private_field_added_to_the_class(build_dir, tmp_path):
    # Issue 16: the example, built against this pasid, runs unchanged against a pasid
    # rebuilt with one more private field. Built against pasid/_core.pxd instead (the
    # class layout), it stopped at import: Cython's size check, "pasid._core.
    # PasidAllocator size changed, may indicate binary incompatibility" (a
    # RuntimeWarning: an error here, and a ValueError for an older pasid). One build
    # of the copy (PASID_DEBUG_BUILD=1: -O0, the quickest), then the example's checks
    # in a child with warnings as errors.
    import textwrap

    from pasid._core import PasidAllocator

    copy = copy_with_a_private_field(tmp_path / "changed")
    env = {key: value for key, value in os.environ.items() if key != "PASID_SANITIZE"}
    env["PASID_DEBUG_BUILD"] = "1"
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                          capture_output=True, text=True, timeout=900, cwd=copy, env=env)
    assert proc.returncode == 0, f"building the copy failed\n{proc.stdout}\n{proc.stderr}"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c",
         inspect.getsource(python_lifecycle) + inspect.getsource(python_guest_churn)
         + textwrap.dedent(EXAMPLE_AGAINST),
         str(CYTHON_SIM), str(build_dir), str(copy)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(copy)))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    # the copy's objects really are larger than those the example was built with
    assert int(proc.stdout.split()[-1]) == PasidAllocator.__basicsize__ + 8


# Run in a child: replace pasid._core._C_API by argv[3] ("missing", or "old": a table
# of version 0), then load the example built in argv[2]. Prints the ImportError.
TABLE_REFUSED = """
    import ctypes, sys
    sys.path.insert(0, sys.argv[1])
    import build
    import pasid._core

    if sys.argv[3] == "missing":
        del pasid._core._C_API
    else:
        version, size = {"old": (0, 16), "v1": (1, 176), "v2": (2, 224)}[sys.argv[3]]
        table = (ctypes.c_int64 * 2)(version, size)
        name = ctypes.create_string_buffer(b"pasid._core._C_API")
        new = ctypes.pythonapi.PyCapsule_New
        new.restype = ctypes.py_object
        new.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        pasid._core._C_API = new(ctypes.addressof(table), ctypes.addressof(name), None)
    try:
        build.load(sys.argv[2])
    except ImportError as error:
        print(error)
"""


@needs_core
@pytest.mark.parametrize(("table", "message"), [
    ("missing", "pasid's C API (pasid._core._C_API) is not available"),
    ("old", "pasid's C API is version 0 (16 bytes), older than the version 3"),
    # version 1's table (20 entries after version and size): the guests' entries missing
    ("v1", "pasid's C API is version 1 (176 bytes), older than the version 3"),
    # version 2's (26 entries): ``prefetch`` missing
    ("v2", "pasid's C API is version 2 (224 bytes), older than the version 3"),
])
def test_an_older_pasid_is_refused_at_import(build_dir, table, message):
    import textwrap

    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TABLE_REFUSED), str(CYTHON_SIM),
         str(build_dir), table],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=script_env())
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert message in proc.stdout



# Run in a child: replace pasid._core._C_API by a newer table (the real one copied into
# a larger one: version + 1, 8 bytes more), then load the example built in argv[2] and
# call entries of both versions through it. Prints the table's version and size.
NEWER_TABLE = """
    import ctypes, sys
    sys.path.insert(0, sys.argv[1])
    import build
    import pasid._core
    from pasid._core import PasidAllocator

    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    real = get(pasid._core._C_API, b"pasid._core._C_API")
    version, size = ctypes.cast(real, ctypes.POINTER(ctypes.c_int64))[:2]
    table = ctypes.create_string_buffer(size + 8)
    ctypes.memmove(table, real, size)
    header = ctypes.cast(table, ctypes.POINTER(ctypes.c_int64))
    header[0], header[1] = version + 1, size + 8
    name = ctypes.create_string_buffer(b"pasid._core._C_API")
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    pasid._core._C_API = new(ctypes.addressof(table), ctypes.addressof(name), None)
    churn = build.load(sys.argv[2])
    host = PasidAllocator(8)
    assert churn.vcmd_churn(host.add_vm("vm0"), 10) == (1, 0)
    assert churn.alloc_put(host, 10) == 1
    print(version, size)
"""


@needs_core
def test_a_newer_table_is_taken(build_dir):
    import textwrap

    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NEWER_TABLE), str(CYTHON_SIM), str(build_dir)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=script_env())
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.split() == ["3", "232"]      # version 3: 27 entries after the header

# ---------------------------------------------------------------- the SimPy examples


@pytest.fixture
def model(monkeypatch):
    pytest.importorskip("simpy", reason="the SimPy examples need simpy (pip install 'pasid[simpy]')")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("simpy_iommu")


def test_simpy_iommu_script(model):
    out = run_script(EXAMPLES / "simpy_iommu.py", "--quick", "--strategy", "fifo")
    assert out.startswith(f"IOMMU model: {model.QUICK.processes} processes, strategy fifo")
    assert "at the end ACTIVE 0, DRAINING 0," in out


def test_strategy_comparison_script(model):
    out = run_script(EXAMPLES / "strategy_comparison.py", "--quick", "--seed", 3)
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["strategy", "served", "waited"]
    assert [line.split()[0] for line in lines[2:]] == ["lowest", "cyclic", "fifo", "random"]


def test_the_model_is_the_same_on_both_backends(model):
    params = model.Params(processes=200, bits=7)     # 127 PASIDs: some processes wait
    runs = {}
    for name in ALL_BACKENDS:
        allocator_class = load_backend(name).PasidAllocator
        runs[name] = [model.run(strategy, 11, params, allocator_class)
                      for strategy in ("lowest", "cyclic", "fifo", "random")]
    first = runs[ALL_BACKENDS[0]]
    for name in ALL_BACKENDS[1:]:
        assert runs[name] == first
    for summary in first:
        assert summary["served"] + summary["gave_up"] == params.processes
        assert summary["end_states"][:2] == (0, 0)      # nothing ACTIVE or DRAINING left
        assert summary["min_reuse"] >= params.grace
        assert summary["waited"] > 0                    # the model does make processes wait


@pytest.fixture
def vms_model(monkeypatch):
    pytest.importorskip("simpy", reason="the SimPy examples need simpy (pip install 'pasid[simpy]')")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("simpy_vms")


def test_simpy_vms_script(vms_model):
    lines = run_script(EXAMPLES / "simpy_vms.py", "--quick").splitlines()
    assert lines[0].startswith(f"Two hosts, {vms_model.QUICK.vms} VMs")
    assert [line.split(":")[0] for line in lines[1::2]] == ["translated", "identity"]


def test_the_vms_model_is_the_same_on_both_backends(vms_model):
    params = vms_model.QUICK
    runs = {}
    for name in ALL_BACKENDS:
        allocator_class = load_backend(name).PasidAllocator
        runs[name] = [vms_model.run(mode, 5, params, allocator_class)
                      for mode in ("translated", "identity")]
    first = next(iter(runs.values()))
    assert all(run == first for run in runs.values())
    translated, identity = first
    tried = -(-params.until // params.migrate_every) - 1   # moves due before the run ends
    assert translated["done"] == translated["kept"] == tried     # numbers kept, none refused
    assert identity["done"] + identity["conflicts"] + identity["short"] == tried
    assert identity["conflicts"] > 0 and identity["done"] > 0    # the model does both
    for summary in first:
        assert summary["granted"] > summary["waited"] > 0
