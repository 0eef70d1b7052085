"""Type stubs for the compiled replay loop (``pasid/sim/_replay.pyx``; Cython writes none)."""

from pasid._core import PasidAllocator
from pasid.sim._replaystate import ReplayState
from pasid.sim.chunk import Chunk

__test__: dict[str, str]    # Cython's table of docstrings for doctest

def run(allocator: PasidAllocator, trace: Chunk, st: ReplayState, start: int, stop: int) -> None:
    """Replay operations ``start..stop-1`` of ``trace`` (a chunk) on ``allocator``, updating
    ``st``."""
