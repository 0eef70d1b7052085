"""Threads sharing one PasidAllocator: SPEC §3's "every operation is atomic with respect to
other Python threads", under stress.

Each test runs fuzz/threadstress.py's ``ThreadStress`` (its docstring says what
is checked): 4 to 8 worker threads on one allocator, a Python clock (a shared
monotone counter whose readings now and then allocate and free a PASID),
owners and devices whose ``__hash__``/``__eq__`` are Python code that yields
the GIL or calls back into the allocator, ``on_teardown`` callbacks, every
operation (alloc, try_alloc, alloc_exact, open/close/dup, alloc_many, free,
put, get, free_many, bind, unbind, add_device, remove_device, exit_owner,
set_quota, reserve, unreserve, advance(), states and the other queries), and
snapshots (``to_bytes``, ``pickle``, ``copy.deepcopy``) taken meanwhile, each of
which must load, pass ``_check()`` and add up. ``sys.setswitchinterval(1e-6)``
forces interleavings (restored after each run). Quiet points (every worker
parked) check ``_check()``, the ACTIVE PASIDs against what the workers hold,
and the counters.

Size: ``dev`` (the default Hypothesis profile) a few seconds per backend;
``ci`` (``HYPOTHESIS_PROFILE=ci``, or ``CI`` set) more operations, bounded;
``PASID_STRESS_SCALE`` multiplies the operations per thread.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

import threadstress  # noqa: E402

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
OPS = int((1000 if PROFILE == "ci" else 300) * float(os.environ.get("PASID_STRESS_SCALE", "1")))
STRATEGIES = ["lowest", "cyclic", "fifo", "random"]


@pytest.mark.parametrize("owners", ["python", "plain"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_threads_share_one_allocator(backend, strategy, owners):
    # python: owners and devices with Python __hash__/__eq__ (snapshots by pickle and
    # deepcopy; to_bytes refuses them); plain: str and tuple keys (to_bytes too)
    index = STRATEGIES.index(strategy) * 2 + (owners == "plain")
    result = threadstress.ThreadStress(
        backend, threads=4 + index % 5, ops=OPS, seed=1000 + index, plain=owners == "plain",
        strategy=strategy, grace=[0, 0.002, 0.01][index % 3], timeout=120.0).run()
    assert result["operations"] == result["threads"] * OPS


def test_threads_without_user_code_calling_back(backend):
    # the same with Python keys that only yield the GIL: more operations reach the
    # allocator in the same time
    result = threadstress.ThreadStress(backend, threads=8, ops=OPS, seed=7, callbacks=False,
                                       timeout=120.0).run()
    assert result["callbacks"] == 0


def test_the_switch_interval_is_restored(backend):
    before = sys.getswitchinterval()
    threadstress.ThreadStress(backend, threads=4, ops=20, seed=3).run()
    assert sys.getswitchinterval() == before
