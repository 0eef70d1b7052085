"""Type stubs for the compiled VM replay loop (``pasid/sim/_vmreplay.pyx``; Cython writes none)."""

from collections.abc import Callable
from typing import Any

__test__: dict[str, str]    # Cython's table of docstrings for doctest

def run(trace: Any, setup: Any, out: Any,
        progress: Callable[[int, int], object] | None = None) -> None:
    """Replay ``trace`` on ``setup``'s hosts and VMs, filling ``out`` (a VMRun)."""
