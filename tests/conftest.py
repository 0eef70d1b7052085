"""Shared fixtures: the backend fixture and the Hypothesis profiles.

Every behavioural test takes ``backend`` and runs once on the compiled core
(``pasid._core``) and once on the pure backend (``pasid.pure``). With
``PASID_NO_EXTENSION=1`` only the pure backend runs; otherwise a compiled core
that fails to import is an error, never a skip.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

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

NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"
BACKEND_NAMES = ["python"] if NO_EXTENSION else ["cython", "python"]


def load_backend(name):
    """The module implementing ``IDA`` and ``PasidAllocator`` for *name*."""
    if name == "cython":
        import pasid._core as module
    else:
        import pasid.pure as module
    return module


@pytest.fixture(params=BACKEND_NAMES)
def backend(request):
    """``pasid._core`` or ``pasid.pure``: the module whose classes are tested."""
    return load_backend(request.param)
