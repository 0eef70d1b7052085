"""What a replay carries between calls of its loop: below both loops and their caller.

``pasid.sim.replay`` makes a :class:`ReplayState`, and for each
:class:`~pasid.sim.chunk.Chunk` of the trace grows it (:meth:`ReplayState.take`)
and hands it to one of the two loops: ``pasid/sim/_replay_py.py`` (one public-API
call per operation) or ``pasid/sim/_replay.pyx`` (compiled). Both read and write
only what is here, and on an error mid-chunk both leave in it what the
operations before the error did. The imports run one way:
``replay -> _replay_py, _replay -> _replaystate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pasid._args import MAX_BITS
from pasid.sim._tracerules import OP_ALLOC
from pasid.sim.chunk import Chunk

if TYPE_CHECKING:
    from typing import Union

    from typing_extensions import TypeAlias

    import pasid

    # An allocator of either backend (the public class, or the pure one by
    # name). Only for checkers: at run time the public class may be the pure one.
    _Allocator: TypeAlias = Union[pasid.PasidAllocator, pasid.pure.PasidAllocator]

__all__ = ["COUNTERS", "ReplayState"]

# The counters a replay keeps between chunks (ReplayState.counters), by slot.
COUNTERS = ("done", "allocations", "failures", "skipped", "stale", "peak_active", "peak_held",
            "blocks_live", "blocks_peak", "highest", "distances", "samples", "active", "held")

def _grown(array: npt.NDArray[Any], size: int, fill: float) -> npt.NDArray[Any]:
    """``array`` with room for ``size`` entries (by an eighth at least: few copies, little
    room unused), the new ones ``fill``."""
    if len(array) >= size:
        return array
    bigger = np.full(max(size, len(array) + (len(array) >> 3)), fill, dtype=array.dtype)
    bigger[:len(array)] = array
    return bigger


class ReplayState:
    """What a replay carries from one chunk of operations to the next.

    Per handle (grown to the trace's handles so far): ``pasid`` (-1 when its
    allocation was refused), ``generation`` (the PASID's generation when the
    handle got it, its low 32 bits: a replay's allocations number fewer than
    2**32, so the low bits tell two apart exactly). Per operation of the chunk
    in hand: ``row_limit`` (the highest PASID an ``alloc`` may take, from its
    FITS device). Per PASID: ``last_release`` (the time it last
    left ACTIVE, -1 before). Per 64-PASID block: ``block_live`` (ACTIVE or
    DRAINING PASIDs in it). ``distances``: reuse distances so far (one slot per
    handle: at most one each), kept only when ``distances`` is true (a
    replay whose distances nobody reads, the no-quarantine one of
    :func:`~pasid.sim.replay.simulate`, keeps none). ``sample_at``: the times at which
    ``sample_active``/``sample_held``/``sample_blocks`` are taken (after the
    first operation at or after each): ``samples`` points from 0 to ``end``,
    and when the trace runs past the last, every other point kept and the
    spacing doubled (so a trace of unknown length is sampled at most
    ``samples`` times, at even spacing). ``counters``: the ``COUNTERS`` slots.
    ``handles``, ``owners``: how many the trace has named so far (an owner's
    key in the allocator is its number). ``device_keys``, ``device_handle``,
    ``widths``: the trace's devices as the allocator knows them, and their
    widths.

    Memory: per PASID and per block, fixed; per handle 8 bytes (its PASID and
    generation) and 8 for a distance slot when kept; per device and sample, a
    few; per operation of the chunk in hand, 8.
    """

    def __init__(self, allocator: _Allocator, samples: int, end: float | None = None, *,
                 distances: bool = True) -> None:
        size = 1 << allocator.bits          # the tables cover every PASID the allocator has
        self.allocator = allocator
        self.bits = allocator.bits
        self.owners = 0
        self.handles = 0
        self.device_keys: list[str] = []
        self.device_handle = np.zeros(0, dtype=np.int32)
        self.widths = np.zeros(0, dtype=np.int64)
        self.row_limit = np.zeros(0, dtype=np.int64)
        self.pasid = np.zeros(0, dtype=np.int32)
        self.generation = np.zeros(0, dtype=np.uint32)
        self.keep_distances = distances
        self.last_release = np.full(size, -1.0)
        self.block_live = np.zeros((size >> 6) + 1, dtype=np.int32)
        self.distances = np.empty(0)
        self.samples = samples
        self.sample_at: npt.NDArray[np.float64] = (
            np.linspace(0.0, end, samples, dtype=np.float64) if samples and end is not None
            else np.empty(0, dtype=np.float64))
        self.sample_active = np.zeros(len(self.sample_at), dtype=np.int64)
        self.sample_held = np.zeros(len(self.sample_at), dtype=np.int64)
        self.sample_blocks = np.zeros(len(self.sample_at), dtype=np.int64)
        self.counters = np.zeros(len(COUNTERS), dtype=np.int64)
        self.counters[COUNTERS.index("highest")] = -1

    def counter(self, name: str) -> int:
        return int(self.counters[COUNTERS.index(name)])

    def take(self, chunk: Chunk) -> None:
        """Make room for ``chunk``: its devices added to the allocator, the handle tables
        grown to its handles, the limits of its allocations set, the sampling grid
        stretched to its last time. O(len(chunk)) in numpy, plus the new devices."""
        for device in chunk.devices[len(self.device_keys):]:
            handle = self.allocator.add_device(device.name, bits=device.bits, drain=device.drain)
            self.device_keys.append(device.name)
            self.device_handle = np.append(self.device_handle, np.int32(handle))
            self.widths = np.append(self.widths, np.int64(min(device.bits, self.bits)))
        self.owners = max(self.owners, chunk.owners)
        self.handles = max(self.handles, chunk.handles)
        self.pasid = _grown(self.pasid, chunk.handles, -1)
        self.generation = _grown(self.generation, chunk.handles, 0)
        if self.keep_distances:
            self.distances = _grown(self.distances, chunk.handles, 0.0)
        # per operation of the chunk, the highest PASID an alloc may take (its FITS device's)
        self.row_limit = np.full(len(chunk), (1 << min(self.bits, MAX_BITS)) - 1, dtype=np.int64)
        allocs = np.flatnonzero((chunk.op == OP_ALLOC) & (chunk.device >= 0)
                                & (chunk.device < len(self.widths)))
        if len(allocs):
            self.row_limit[allocs] = (np.int64(1) << self.widths[chunk.device[allocs]]) - 1
        end = chunk.end
        if self.samples and end is not None:
            self._stretch(end)

    def _stretch(self, end: float) -> None:
        """The sampling grid reaching past ``end``: a first grid from 0 to ``end`` when
        there is none, else every other point kept and the spacing doubled until it does."""
        if not len(self.sample_at):
            if end > 0:
                self._grid(np.linspace(0.0, end, self.samples, dtype=np.float64), 0)
            return
        while len(self.sample_at) > 1 and self.sample_at[-1] < end:
            step = 2 * (self.sample_at[1] - self.sample_at[0])
            if not step > 0:
                return
            kept = self.sample_at[::2]
            taken = self.counter("samples")
            old = [getattr(self, name)[:taken:2] for name in
                   ("sample_active", "sample_held", "sample_blocks")]
            self._grid(np.concatenate(
                [kept, kept[-1] + step * np.arange(1, self.samples - len(kept) + 1)]),
                (taken + 1) // 2)
            for name, values in zip(("sample_active", "sample_held", "sample_blocks"), old):
                getattr(self, name)[:len(values)] = values

    def _grid(self, grid: npt.NDArray[np.float64], taken: int) -> None:
        """A new sampling grid, its first ``taken`` points taken (the caller fills them)."""
        self.sample_at = grid
        self.sample_active = np.zeros(len(grid), dtype=np.int64)
        self.sample_held = np.zeros(len(grid), dtype=np.int64)
        self.sample_blocks = np.zeros(len(grid), dtype=np.int64)
        self.counters[COUNTERS.index("samples")] = taken
