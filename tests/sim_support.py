"""What the simulator tests share: the replay engines to run on, and the hand-worked trace.

``ENGINES``: ``(engine, allocator)`` pairs, every one this run can load (the tests that
compare the engines with each other); ``TESTED_ENGINES``: those whose allocator is one of
``PASID_TEST_BACKENDS``'s (``tests/backends.py``), for the tests run once per pair.

``compiled``: the C loop over the compiled allocator (``pasid.sim._replay``);
``python``: one public-API call per operation, over either allocator. Under
``PASID_NO_EXTENSION=1`` only the pure pair runs; otherwise a compiled loop or
core that fails to import fails the tests that ask for it, never a skip.
"""

from pathlib import Path

from backends import BACKEND_NAMES, NO_EXTENSION

ENGINES = (
    [("python", "python")]
    if NO_EXTENSION
    else [("compiled", "cython"), ("python", "cython"), ("python", "python")]
)
TESTED_ENGINES = [(engine, allocator) for engine, allocator in ENGINES if allocator in BACKEND_NAMES]

# 8-bit space, grace 1, two devices; its metrics are worked by hand in test_replay.py
HAND_TRACE = Path(__file__).parent / "data" / "hand.trace"
