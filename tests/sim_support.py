"""The replay engines the simulator tests run on, as ``(engine, allocator)`` pairs.

``compiled``: the C loop over the compiled allocator (``pasid.sim._replay``);
``python``: one public-API call per operation, over either allocator. Under
``PASID_NO_EXTENSION=1`` only the pure pair runs; otherwise a compiled loop or
core that fails to import fails the tests that ask for it, never a skip.
"""

import os

NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"

ENGINES = (
    [("python", "python")]
    if NO_EXTENSION
    else [("compiled", "cython"), ("python", "cython"), ("python", "python")]
)
