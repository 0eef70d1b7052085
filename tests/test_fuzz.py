"""Short, bounded runs of the fuzzers in fuzz/ (fuzzlib.py says what each checks).

Hypothesis draws every choice of a run (``fuzzlib.DataSource``), so a failure
shrinks to a short operation log:

- re-entrant operation sequences, on each backend: owners and devices whose
  ``__hash__``/``__eq__`` are Python code, a Python clock, ``on_teardown``
  callbacks, each of which may call back into the allocator (any operation,
  snapshots included) or raise; after every operation ``_check()`` passes,
  the exception (if any) is a documented one, and the ACTIVE PASIDs,
  refcounts, generations and owners are exactly what the run holds;
- differential sequences: the compiled core and the pure backend agree on
  every result, error and snapshot byte, and a failed call changes nothing;
- ``from_bytes`` of mutated, truncated, extended and re-checksummed snapshots
  (of plain allocators and of hosts with VMs, format version 3):
  ``SnapshotError`` or an allocator that passes ``_check()`` and saves bytes
  that load back the same, on both backends alike.

The fuzzers steer around failures already reported (``fuzzlib.KNOWN``), each
of which has its own test in tests/test_hardening.py. For long runs:
``python fuzz/fuzz_ops.py --seconds 600``, ``python fuzz/fuzz_snapshot.py``.
"""

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import NO_EXTENSION

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))

import fuzzlib  # noqa: E402

RELAXED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow, HealthCheck.data_too_large])
OPS = 30


@pytest.fixture(scope="module")
def seeds():
    """The snapshots the from_bytes fuzzing mutates."""
    return fuzzlib.seed_snapshots(8)


@RELAXED
@given(data=st.data())
def test_reentrant_operations(backend, data):
    fuzzlib.run_reentrant(backend, fuzzlib.DataSource(data), OPS, rate=0.1)


@pytest.mark.skipif(NO_EXTENSION, reason="needs the compiled core beside the pure one")
@RELAXED
@given(data=st.data())
def test_backends_agree_on_operation_sequences(data):
    fuzzlib.run_differential(fuzzlib.backends("both"), fuzzlib.DataSource(data), OPS)


@RELAXED
@given(data=st.data())
def test_from_bytes_of_mutated_snapshots(seeds, data):
    fuzzlib.snapshot_case(fuzzlib.DataSource(data), fuzzlib.backends("both"), seeds, ops=8)


def test_mutated_snapshots_of_hosts_with_vms_are_refused_or_load_whole(seeds):
    # version 3 seeds (fuzzlib.vm_host), half their structured changes inside a VM:
    # a SnapshotError or a host that passes _check() and saves what loads back the same
    vm_seeds = [blob for blob in seeds if blob[8] == 3]
    assert len(vm_seeds) >= 2
    src = fuzzlib.RandomSource(3)
    outcomes = [fuzzlib.snapshot_case(src, fuzzlib.backends("both"), vm_seeds, ops=4)
                for _ in range(300)]
    assert outcomes.count("ok") >= 5 and outcomes.count("SnapshotError") >= 100


@pytest.mark.parametrize("script", ["fuzz_ops", "fuzz_snapshot"])
def test_the_harnesses_run(script, capsys):
    # the command-line harnesses, for a moment, with the random engine
    module = __import__(script)
    assert module.main(["--seconds", "0.5", "--engine", "random"]) == 0
    assert "final: runs" in capsys.readouterr().out


def test_the_stress_script_runs(capsys):
    import stress

    backend = "python" if NO_EXTENSION else "cython"
    assert stress.main(["--seconds", "0.5", "--backend", backend, "--seed", "1"]) == 0
    assert "no failure" in capsys.readouterr().out
