"""What the simulator tests share: the replay engines to run on, and the hand-worked trace.

``ENGINES``: ``(engine, allocator)`` pairs.

``compiled``: the C loop over the compiled allocator (``pasid.sim._replay``);
``python``: one public-API call per operation, over either allocator. Under
``PASID_NO_EXTENSION=1`` only the pure pair runs; otherwise a compiled loop or
core that fails to import fails the tests that ask for it, never a skip.
"""

from pathlib import Path

from backends import NO_EXTENSION

ENGINES = (
    [("python", "python")]
    if NO_EXTENSION
    else [("compiled", "cython"), ("python", "cython"), ("python", "python")]
)

# 8-bit space, grace 1, two devices; its metrics are worked by hand in test_replay.py
HAND_TRACE = Path(__file__).parent / "data" / "hand.trace"
