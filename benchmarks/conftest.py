"""pytest-benchmark glue for the workloads defined in :mod:`pasid.bench`.

The candidates, the seeded plan, the prepared states and every round (its
setup, body, operations and check) live in ``pasid.bench``, shared with
``pasid bench``; this file only parametrises.

Every workload test is marked ``@pytest.mark.variants(*pasid.bench.ROWS[key])``
with the rows it runs; ``pytest_generate_tests`` turns that into
``(rep, variant)`` parameters, ``REPS`` repetitions, each repetition with the
list rotated by one (:func:`pasid.bench.rotated`) so that the order changes
while compiled and pure rows keep alternating. ``ratios.py`` takes medians
over the repetitions and computes ratios within each one.

With ``--benchmark-disable`` there is a single repetition and every benchmark
body runs once, on the quick sizes of ``pasid bench --quick`` (the CI smoke run:
the same bodies and checks, smaller rounds). ``PASID_BENCH_REPS`` overrides the count.

The benchmarks measure the compiled core: under ``PASID_NO_EXTENSION=1``
they are skipped; otherwise a compiled core that fails to import is an error.
"""

import os

import pytest

from pasid import bench

NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "variants(*names): the candidate rows a workload runs, in interleaved order",
    )


def reps_for(config):
    env = os.environ.get("PASID_BENCH_REPS")
    if env:
        return max(1, int(env))
    return 1 if config.getoption("benchmark_disable", False) else bench.DEFAULT_REPS


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("variants")
    if marker is None or "variant" not in metafunc.fixturenames:
        return
    variants = list(marker.args)
    params, ids = [], []
    for rep in range(reps_for(metafunc.config)):
        for variant in bench.rotated(variants, rep):
            params.append((rep, variant))
            ids.append(f"r{rep}-{variant}")
    metafunc.parametrize(("rep", "variant"), params, ids=ids)


@pytest.fixture(scope="session")
def session(request):
    """The prepared objects (stages, replay trace) shared by the whole run."""
    if NO_EXTENSION:
        pytest.skip("the benchmarks measure the compiled core (PASID_NO_EXTENSION=1)")
    bench.require_core(replay=True)     # RuntimeError (not a skip) if the build is broken
    # timing off (the smoke run, one repetition): the smaller rounds of `pasid bench --quick`,
    # the same bodies and checks
    return bench.Session(quick=bool(request.config.getoption("benchmark_disable", False)))


@pytest.fixture
def disabled(request):
    return bool(request.config.getoption("benchmark_disable", False))


@pytest.fixture(scope="session")
def write_table(request):
    """``write_table(lines)``: print lines past pytest's capture, after a blank line (the
    tables some benchmark files print when their module ends)."""
    def write(lines):
        capture = request.config.pluginmanager.getplugin("capturemanager")
        reporter = request.config.pluginmanager.getplugin("terminalreporter")
        if reporter is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)
    return write
