"""Which backends the tests run on, importable by any test (never ``from conftest import``).

Every behavioural test takes the ``backend`` fixture (``tests/conftest.py``) and
runs once on the compiled core (``pasid._core``) and once on the pure backend
(``pasid.pure``). With ``PASID_NO_EXTENSION=1`` only the pure backend runs;
otherwise a compiled core that fails to import is an error, never a skip.
"""

import os

NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"
BACKEND_NAMES = ["python"] if NO_EXTENSION else ["cython", "python"]


def load_backend(name):
    """The module implementing ``IDA`` and ``PasidAllocator`` for *name*."""
    if name == "cython":
        import pasid._core as module
    else:
        import pasid.pure as module
    return module
