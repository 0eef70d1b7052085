"""Shared fixtures: the backend fixture and the Hypothesis profiles; the suite in parallel.

Every behavioural test takes ``backend`` and runs once per backend (see
``tests/backends.py``, where the helpers live so tests can import them).

``python -m pytest`` runs the suite on one pytest-xdist worker a core (``-n auto``)
unless ``-n`` is given (``-n0``: one process, as without pytest-xdist). Only the
suite: this file is not loaded for ``pytest benchmarks``, whose timings need a
process to themselves (pytest-benchmark turns itself off under xdist). A fixture
that builds something once a run shares it between the workers
(``build_dir`` in ``tests/test_examples.py``).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

from backends import BACKEND_NAMES, load_backend

settings.register_profile(
    "dev", max_examples=25, stateful_step_count=25, deadline=None
)
settings.register_profile(
    "ci",
    max_examples=120,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(params=BACKEND_NAMES)
def backend(request):
    """``pasid._core`` or ``pasid.pure``: the module whose classes are tested."""
    return load_backend(request.param)


@pytest.hookimpl(hookwrapper=True)
def pytest_cmdline_main(config):
    """``-n auto`` unless ``-n`` was given (see the module docstring).

    A wrapper, so that it runs before pytest-xdist reads the option. Under xdist the
    suite's runs (the workers too, which pytest-xdist starts without ``-n``) also say
    ``--benchmark-disable``: the suite holds no benchmark, and pytest-benchmark would
    otherwise warn that xdist turned it off, a warning the suite makes an error.
    """
    if config.pluginmanager.hasplugin("xdist"):
        worker = hasattr(config, "workerinput")
        if not worker and config.option.numprocesses is None:
            config.option.numprocesses = "auto"
        if (worker or config.option.numprocesses) and config.pluginmanager.hasplugin("benchmark"):
            config.option.benchmark_disable = True
    yield
