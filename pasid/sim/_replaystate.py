"""What a replay carries between calls of its loop: below both loops and their caller.

``pasid.sim.replay`` makes a :class:`ReplayState` and hands it, a chunk of
operations at a time, to one of the two loops: ``pasid/sim/_replay_py.py``
(one public-API call per operation) or ``pasid/sim/_replay.pyx`` (compiled).
Both read and write only what is here, and on an error mid-chunk both leave
in it what the operations before the error did. The imports run one way:
``replay -> _replay_py, _replay -> _replaystate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from typing import Union

    from typing_extensions import TypeAlias

    import pasid
    from pasid.sim.trace import Trace

    # An allocator of either backend (the public class, or the pure one by
    # name). Only for checkers: at run time the public class may be the pure one.
    _Allocator: TypeAlias = Union[pasid.PasidAllocator, pasid.pure.PasidAllocator]

__all__ = ["COUNTERS", "ReplayState"]

# The counters a replay keeps between chunks (ReplayState.counters), by slot.
COUNTERS = ("done", "allocations", "failures", "skipped", "stale", "peak_active", "peak_held",
            "blocks_live", "blocks_peak", "highest", "distances", "samples", "active", "held")


class ReplayState:
    """What a replay carries from one chunk of operations to the next.

    Per handle: ``pasid`` (-1 when its allocation was refused), ``generation``
    (the PASID's generation when the handle got it), ``limit`` (the highest
    PASID it may take). Per PASID: ``last_release`` (the time it last left
    ACTIVE, -1 before). Per 64-PASID block: ``block_live`` (ACTIVE or
    DRAINING PASIDs in it). ``distances``: reuse distances so far.
    ``sample_at``: the times at which ``sample_active``/``sample_held``/``sample_blocks`` are
    taken (after the first operation at or after each). ``counters``: the
    ``COUNTERS`` slots. ``owners``, ``device_keys``, ``device_handle``: the
    trace's owners and devices as the allocator knows them.
    """

    def __init__(self, trace: Trace, allocator: _Allocator, samples: int) -> None:
        size = 1 << allocator.bits          # the tables cover every PASID the allocator has
        nhandles = len(trace.handles)
        self.owners = list(trace.owners)
        self.device_keys = [d.name for d in trace.devices]
        self.device_handle = np.array(
            [allocator.add_device(d.name, bits=d.bits, drain=d.drain) for d in trace.devices],
            dtype=np.int32)
        self.limit = np.ascontiguousarray(trace.fits(), dtype=np.int64)
        self.pasid = np.full(nhandles, -1, dtype=np.int32)
        self.generation = np.zeros(nhandles, dtype=np.int64)
        self.last_release = np.full(size, -1.0)
        self.block_live = np.zeros((size >> 6) + 1, dtype=np.int32)
        self.distances = np.empty(nhandles)
        end = trace.duration
        self.sample_at: npt.NDArray[np.float64] = (
            np.linspace(0.0, end, samples, dtype=np.float64) if samples and len(trace)
            else np.empty(0, dtype=np.float64))
        self.sample_active = np.zeros(len(self.sample_at), dtype=np.int64)
        self.sample_held = np.zeros(len(self.sample_at), dtype=np.int64)
        self.sample_blocks = np.zeros(len(self.sample_at), dtype=np.int64)
        self.counters = np.zeros(len(COUNTERS), dtype=np.int64)
        self.counters[COUNTERS.index("highest")] = -1

    def counter(self, name: str) -> int:
        return int(self.counters[COUNTERS.index(name)])
