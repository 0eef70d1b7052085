"""Shared fixtures: the backend fixture and the Hypothesis profiles.

Every behavioural test takes ``backend`` and runs once per backend (see
``tests/backends.py``, where the helpers live so tests can import them).
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
