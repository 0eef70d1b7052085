"""A trace a piece at a time: what generation, checking, replay and metrics pass along.

A big trace is never whole in memory: the workload generator, the text and
binary readers and :meth:`pasid.sim.trace.Trace.chunks` each produce it as a
sequence of :class:`Chunk` objects, consecutive runs of its operations in time
order, and the checker, the no-quarantine rewrite and the replay take it so,
keeping between chunks only what is live (the handles' references and
bindings, the allocator's tables). A :class:`~pasid.sim.trace.Trace` is the one
case where every operation is in one chunk.

Numbering is global, across chunks: a handle is its allocation's rank in the
whole trace (0, 1, ...), an owner its first appearance's rank, a device its
index in :attr:`Chunk.devices` (which only grows: a trace file declares all its
devices up front, but a chunk of another source may list more than the one
before). Each chunk says how many handles and owners the trace has named up
to its end, so a consumer sizes its per-handle tables as it goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Chunk", "Numbered", "StreamHeader", "concatenate"]


@dataclass(frozen=True)
class StreamHeader:
    """What a trace says before its first operation: its PASID width, its grace
    period, where it comes from (for errors: ``source:line: ...``), the names of
    its handles and owners by number (``handle_name(3)``), and a note on where
    it came from that writers keep as a comment (a generated trace names its
    generator's version, workload and seed), or None."""

    bits: int
    grace: float
    source: str
    handle_name: Callable[[int], str]
    owner_name: Callable[[int], str]
    comment: str | None = None


@dataclass(frozen=True, eq=False)
class Chunk:
    """A run of consecutive operations of a trace, as columns (see
    :mod:`pasid.sim.trace` for the codes).

    ``time`` (float64), ``op`` (uint8), ``handle`` (int32: the global handle
    number, or -1), ``owner`` (int32: the global owner number, or -1),
    ``device`` (int32: an index into ``devices``, or -1): one entry per
    operation, C-contiguous. ``lines``: each operation's line in the source
    (int64), or None where operations have no line (then an error names the
    operation by its index in the trace, from 0). ``start``: the index of the
    first operation in the whole trace. ``handles``, ``owners``: how many the
    trace has named up to the end of this chunk. ``devices``: the trace's
    devices up to the end of this chunk (:class:`pasid.sim.trace.Device`).
    """

    time: npt.NDArray[np.float64]
    op: npt.NDArray[np.uint8]
    handle: npt.NDArray[np.int32]
    owner: npt.NDArray[np.int32]
    device: npt.NDArray[np.int32]
    lines: npt.NDArray[np.int64] | None
    start: int
    handles: int
    owners: int
    devices: tuple[Any, ...]    # of pasid.sim.trace.Device (this module is below trace.py)

    def __len__(self) -> int:
        return len(self.op)

    @property
    def end(self) -> float | None:
        """The time of the chunk's last operation (None for an empty chunk)."""
        return float(self.time[-1]) if len(self.time) else None


class Numbered:
    """Names made from a prefix and a number, ``Numbered("h")(3) == "h3"``: a
    generated trace's handles and owners, named without a list of strings.

    >>> Numbered("p")(12)
    'p12'
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, number: int) -> str:
        return f"{self.prefix}{number}"

    def __repr__(self) -> str:
        return f"Numbered({self.prefix!r})"


def concatenate(chunks: Iterable[Chunk]) -> Chunk | None:
    """The chunks as one (None if there are none). O(n)."""
    pieces = list(chunks)
    if not pieces:
        return None
    lines = (None if any(c.lines is None for c in pieces)
             else np.concatenate([c.lines for c in pieces if c.lines is not None]))
    last = pieces[-1]
    return Chunk(
        time=np.concatenate([c.time for c in pieces]),
        op=np.concatenate([c.op for c in pieces]),
        handle=np.concatenate([c.handle for c in pieces]),
        owner=np.concatenate([c.owner for c in pieces]),
        device=np.concatenate([c.device for c in pieces]),
        lines=lines, start=pieces[0].start, handles=last.handles, owners=last.owners,
        devices=last.devices)
