"""Traces: what an IOMMU sees, one operation a line, and their encoded form.

A trace is a header (the PASID width, the grace period, the devices) and a
list of operations in time order. Operations name PASIDs by *handle*, not by
number: an ``alloc`` line names a fresh handle, and later lines refer to it, so
one trace replays under any strategy (each gives the handle its own PASID).

The text format, version 1 (``#`` starts a comment; blank lines are ignored;
fields are separated by blanks)::

    pasid-trace 1                     first line: the format and its version
    bits 20                           header (optional, once): the PASID width, 1..20
    grace 0.5                         header (optional, once): release-to-reuse time
    device gpu0 bits=20 drain=2       header: a device, its PASID width and drain time
    0.0   alloc  h0 proc1             TIME alloc HANDLE [OWNER|-] [FITS]
    0.1   bind   h0 gpu0              TIME bind HANDLE DEVICE
    0.2   get    h0                   TIME get HANDLE          (one more reference)
    5.0   put    h0                   TIME put HANDLE          (the last put releases)
    5.3   access h0 gpu0              TIME access HANDLE DEVICE (the device touches the PASID)
    5.4   unbind h0 gpu0              TIME unbind HANDLE DEVICE (the device has drained it)
    6.0   exit   proc1                TIME exit OWNER          (the owner dies: exit_owner)
    9.0   advance                     TIME advance             (settle: reclaim at TIME)

``alloc``'s OWNER is ``-`` (or absent) for a PASID without a process; FITS
names a device the PASID must fit (the allocation asks for
``max = 2**bits - 1`` of that device). Times are at least 0 and never
decrease. Handle, owner and device names are tokens without blanks;
a handle is allocated once. Every device an operation names is declared in
the header: any other (``bind h0 gpu11`` where the header declares ``gpu1``)
is a :class:`TraceError` naming the line and the devices declared. (The
Python API, :class:`TraceBuilder`, declares a device at its first bind, with
the defaults: 20 bits, drain 0.)

Numbers are ASCII decimal: a sign (optional), digits, a fraction and an
exponent (optional): ``5``, ``+5``, ``0.25``, ``.5``, ``2.``, ``2.5e-3``,
``1e+300``; ``-0`` is 0. Widths are integers (a sign, digits). Not numbers
here, though Python's ``float()`` or ``int()`` takes them: ``inf``,
``nan``, underscores (``1_000``), digits of other scripts; nor are hex
floats (``0x1p3``). The values follow the allocator's own rules
(``pasid._args``): times, the grace and drains at least 0 and at most 1e300
(so that a time plus a grace or a drain is still finite); widths in 1..20.

A trace is UTF-8 text. A byte-order mark at its very start is skipped;
anywhere else it is a character like any other.

Every line is checked before anything runs: a syntax error, a number out of
range, a header line or device setting given twice, an unknown device or
handle, a time going backwards, or an operation the trace's own history
forbids (a ``put`` of a released handle, an ``unbind`` of a pair not bound, an
``access`` by a device not bound to the handle, before its ``bind`` or after
its ``unbind``, a ``bind`` of a device narrower than the allocation was limited
to) raises :class:`TraceError` naming the line. What depends on the strategy (an
allocation that finds nothing FREE) is not an error: the operations on that
handle are skipped and counted.

The encoded form (:class:`Trace`) is five columns of numpy arrays, what the
replay loop walks: ``time`` (float64), ``op`` (uint8, the ``OP_*`` codes),
``handle`` (int32: the handle's number, allocation order, or -1),
``owner`` (int32: an index into ``owners``, or -1) and ``device`` (int32: an
index into ``devices``, or -1).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import IO, Any, NoReturn, TypeVar

import numpy as np
import numpy.typing as npt

from pasid._args import MAX_BITS, as_bits, as_drain, as_grace
from pasid.sim._tracerules import (  # noqa: F401 - the text format's words, re-exported
    _BOM, _DECIMAL, _INTEGER, _NAME, _OP_CODES, MAGIC, OP_ACCESS, OP_ADVANCE, OP_ALLOC, OP_BIND,
    OP_EXIT, OP_GET, OP_NAMES, OP_PUT, OP_UNBIND, VERSION, Device, TraceError, _decimal,
    _integer, _keep, _number, _time,
)
from pasid.sim.chunk import Chunk, StreamHeader
from pasid.sim.tracecheck import Checker, Detacher

__all__ = [
    "Device",
    "OP_ACCESS",
    "OP_ADVANCE",
    "OP_ALLOC",
    "OP_BIND",
    "OP_EXIT",
    "OP_GET",
    "OP_NAMES",
    "OP_PUT",
    "OP_UNBIND",
    "Trace",
    "TraceBuilder",
    "TraceError",
    "read_trace",
]


T = TypeVar("T")


@dataclass(eq=False)
class Trace:
    """An encoded, checked trace: the header and five operation columns.

    Build one with :class:`TraceBuilder` or :func:`read_trace`; both check it
    (see the module docstring), so a :class:`Trace` in hand replays.
    """

    bits: int
    grace: float
    devices: list[Device]
    owners: list[str]
    handles: list[str]
    time: npt.NDArray[np.float64]
    op: npt.NDArray[np.uint8]
    handle: npt.NDArray[np.int32]
    owner: npt.NDArray[np.int32]
    device: npt.NDArray[np.int32]
    lines: npt.NDArray[np.int64] | None = None
    source: str | None = None
    comment: str | None = None      # where it came from, written as a '#' line after the first
    _fits: npt.NDArray[np.int64] | None = field(default=None, repr=False)
    _unprotected: Trace | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.op)

    @property
    def duration(self) -> float:
        """The time of the last operation (0 for an empty trace)."""
        return float(self.time[-1]) if len(self.time) else 0.0

    def counts(self) -> dict[str, int]:
        """How many operations of each kind, as ``{name: count}``."""
        found = np.bincount(self.op, minlength=len(OP_NAMES))
        return {name: int(found[code]) for code, name in enumerate(OP_NAMES)}

    def fits(self) -> npt.NDArray[np.int64]:
        """Per handle: the highest PASID its allocation may take (``2**bits - 1`` when unlimited)."""
        if self._fits is None:
            limit = np.full(len(self.handles), (1 << self.bits) - 1, dtype=np.int64)
            allocs = np.flatnonzero(self.op == OP_ALLOC)
            devices = self.device[allocs]
            limited = devices >= 0
            widths = np.array([d.bits for d in self.devices] or [MAX_BITS], dtype=np.int64)
            limit[self.handle[allocs[limited]]] = np.minimum(
                limit[self.handle[allocs[limited]]], (1 << widths[devices[limited]]) - 1)
            self._fits = limit
        return self._fits

    # ------------------------------------------------------------ chunks

    def header(self) -> StreamHeader:
        """The trace's :class:`~pasid.sim.chunk.StreamHeader` (its names by number)."""
        return StreamHeader(bits=self.bits, grace=self.grace, source=self.source or "trace",
                            handle_name=self.handles.__getitem__,
                            owner_name=self.owners.__getitem__, comment=self.comment)

    def chunks(self, size: int | None = None) -> Iterator[Chunk]:
        """The operations as :class:`~pasid.sim.chunk.Chunk` views of ``size`` operations
        (the last may be shorter; all in one by default). O(1) each: no copy.

        >>> t = TraceBuilder().build()
        >>> [len(c) for c in t.chunks()]
        [0]
        """
        n = len(self.op)
        step = max(n, 1) if size is None else size
        if step < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        devices = tuple(self.devices)
        handles = owners = 0        # named so far: the running maximum, plus one
        for start in range(0, max(n, 1), step):
            stop = min(n, start + step)
            if stop < n:       # never more than the trace names (a changed trace's columns)
                handles = min(len(self.handles),
                              max(handles, int(self.handle[start:stop].max()) + 1))
                owners = min(len(self.owners), max(owners, int(self.owner[start:stop].max()) + 1))
            else:
                handles, owners = len(self.handles), len(self.owners)
            yield Chunk(time=self.time[start:stop], op=self.op[start:stop],
                        handle=self.handle[start:stop], owner=self.owner[start:stop],
                        device=self.device[start:stop],
                        lines=None if self.lines is None else self.lines[start:stop],
                        start=start, handles=handles, owners=owners, devices=devices)

    # ------------------------------------------------------------ text

    def write(self, file: str | os.PathLike[str] | IO[Any]) -> None:
        """Write the trace to a path (``.npz``: the binary format of
        :mod:`pasid.sim.traceio`, else text) or a file object (text). O(n)."""
        from pasid.sim.traceio import CHUNK, write_trace

        write_trace(file, self.header(), self.chunks(CHUNK), self.devices)

    def to_text(self) -> str:
        """The trace in the text format, as a string."""
        out = io.StringIO()
        self.write(out)
        return out.getvalue()

    # ------------------------------------------------------------ variants

    def without_quarantine(self) -> Trace:
        """The same work as an allocator without device quarantine would see it.

        Every device still bound to a PASID when it is released is unbound
        right before the release, at the same time (the driver forgets the
        PASID at once), and the device's own later unbinds of it are dropped;
        device drain times are 0. Accesses stay where they were, so a late
        access may now hit a PASID that has been allocated again: a *stale
        access*. The grace period is kept. O(n) the first time; kept after.
        """
        if self._unprotected is None:
            self._unprotected = self._detach_at_release()
        return self._unprotected

    def _detach_at_release(self) -> Trace:
        n = len(self.op)
        if any(len(c) != n for c in (self.time, self.handle, self.owner, self.device)):
            raise TraceError("trace columns differ in length")
        out = Detacher(self.header()).feed(next(self.chunks()))
        return Trace(
            bits=self.bits, grace=self.grace, devices=list(out.devices),
            owners=self.owners, handles=self.handles, time=out.time, op=out.op,
            handle=out.handle, owner=out.owner, device=out.device, lines=out.lines,
            source=self.source,
        )


class TraceBuilder:
    """Build a :class:`Trace` operation by operation (what workload generators use).

    Operations may be added out of time order: :meth:`build` sorts them by
    time, keeping the order of addition among equal times, then checks the
    result like a parsed trace.

    >>> b = TraceBuilder(bits=8, grace=1)
    >>> b.device("gpu", drain=2)
    >>> h = b.alloc(0.0, owner="proc")
    >>> b.bind(0.5, h, "gpu"); b.put(1.0, h); b.unbind(3.0, h, "gpu")
    >>> t = b.build(); len(t), t.counts()["bind"]
    (4, 1)
    """

    def __init__(self, *, bits: int = MAX_BITS, grace: float = 0.0) -> None:
        self.bits = bits
        self.grace = grace
        self._devices: dict[str, tuple[int, Device]] = {}   # name -> (index, Device)
        self._owners: dict[str, int] = {}
        self._ops: list[tuple[float, int, int, int, int]] = []   # (time, op, handle, owner, device)
        self._handles = 0

    @staticmethod
    def _name(name: object, what: str) -> str:
        """``name`` as it will be written: a str token without blanks or '#', not '-'."""
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name == "-":
            raise TraceError(f"{what} name {name!r} must be a string without blanks or '#', "
                             "and not '-'")
        return name

    def device(self, name: str, *, bits: int = MAX_BITS, drain: float = 0.0) -> None:
        """Declare a device (its PASID width and drain time); a second declaration is an error."""
        self._name(name, "device")
        if name in self._devices:
            raise TraceError(f"device {name!r} declared twice")
        self._devices[name] = (len(self._devices), Device(name, bits, float(drain)))

    def _device(self, name: str, declare: bool = True) -> int:
        found = self._devices.get(name)
        if found is None:
            if not declare:
                raise TraceError(f"FITS device {name!r} is not declared")
            self.device(name)               # bound but not declared: the defaults
            found = self._devices[name]
        return found[0]

    def _owner(self, name: str | None) -> int:
        if name is None:
            return -1
        index = self._owners.get(name)
        if index is None:
            index = self._owners[self._name(name, "owner")] = len(self._owners)
        return index

    def alloc(self, time: float, *, owner: str | None = None, fits: str | None = None) -> int:
        """An allocation at ``time`` by ``owner`` (None: owner-less), its PASID limited to
        the width of the declared device ``fits`` if given; returns its handle (an int,
        in allocation order)."""
        h = self._handles
        self._handles += 1
        self._ops.append((time, OP_ALLOC, h, self._owner(owner),
                          -1 if fits is None else self._device(fits, declare=False)))
        return h

    def get(self, time: float, handle: int) -> None:
        """One more reference to ``handle``'s PASID."""
        self._ops.append((time, OP_GET, handle, -1, -1))

    def put(self, time: float, handle: int) -> None:
        """One reference less; the last releases the PASID."""
        self._ops.append((time, OP_PUT, handle, -1, -1))

    def bind(self, time: float, handle: int, device: str) -> None:
        """``device`` binds ``handle``'s PASID (an undeclared device gets the defaults)."""
        self._ops.append((time, OP_BIND, handle, -1, self._device(device)))

    def unbind(self, time: float, handle: int, device: str) -> None:
        """``device`` has drained ``handle``'s PASID."""
        self._ops.append((time, OP_UNBIND, handle, -1, self._device(device)))

    def access(self, time: float, handle: int, device: str) -> None:
        """``device`` touches ``handle``'s PASID (stale if it was allocated again since); the
        device must be bound to it then (:func:`check`)."""
        self._ops.append((time, OP_ACCESS, handle, -1, self._device(device)))

    def exit(self, time: float, owner: str) -> None:
        """``owner`` dies: every PASID it holds is released."""
        self._ops.append((time, OP_EXIT, -1, self._owner(owner), -1))

    def advance(self, time: float) -> None:
        """Settle at ``time``: reclaim what has expired."""
        self._ops.append((time, OP_ADVANCE, -1, -1, -1))

    def build(self) -> Trace:
        """The checked :class:`Trace`, operations sorted by time (stable). O(n log n).

        A TraceError names the bad operation by the order it was added in
        (``built trace:N``: the N-th call, from 1).
        """
        rows = sorted(((*op, number) for number, op in enumerate(self._ops, 1)),
                      key=itemgetter(0))
        n = len(rows)
        columns: list[tuple[Any, ...]] = list(zip(*rows)) if rows else [(), (), (), (), (), ()]
        trace = Trace(
            bits=self.bits, grace=float(self.grace),
            devices=[device for _, device in sorted(self._devices.values(), key=lambda x: x[0])],
            owners=[str(o) for o in self._owners],
            handles=[f"h{i}" for i in range(self._handles)],
            time=np.array(columns[0], dtype=np.float64).reshape(n),
            op=np.array(columns[1], dtype=np.uint8).reshape(n),
            handle=np.array(columns[2], dtype=np.int32).reshape(n),
            owner=np.array(columns[3], dtype=np.int32).reshape(n),
            device=np.array(columns[4], dtype=np.int32).reshape(n),
            lines=np.array(columns[5], dtype=np.int64).reshape(n),
            source="built trace",
        )
        check(trace)
        return trace


# ---------------------------------------------------------------- reading

def read_trace(source: str | os.PathLike[str] | Iterable[str], *,
               name: str | None = None) -> Trace:
    """Read a trace from a path (``.npz``: binary, else text), a file object or an
    iterable of lines, and check it.

    Raises :class:`TraceError` naming the first bad line (or operation, for a
    binary trace); nothing is replayed from a trace that does not check. O(n).
    A VM trace (version 2, :mod:`pasid.sim.vmtrace`) at a path is read as a
    :class:`~pasid.sim.vmtrace.VMTrace`.
    The reading is :func:`pasid.sim.traceio.open_trace`'s (a text file's lines
    parsed in C when the extension is built).
    """
    from pasid.sim.traceio import read_whole
    from pasid.sim.vmtrace import trace_version

    if isinstance(source, (str, os.PathLike)) and trace_version(source) == 2:
        from pasid.sim.vmtrace import read_vm_trace

        return read_vm_trace(source, name=name)  # type: ignore[return-value]
    header, whole, owners, handles = read_whole(source, name)
    return check(Trace(bits=header.bits, grace=header.grace, devices=list(whole.devices),
                       owners=owners, handles=handles, time=whole.time, op=whole.op,
                       handle=whole.handle, owner=whole.owner, device=whole.device,
                       lines=whole.lines, source=header.source, comment=header.comment))


# ---------------------------------------------------------------- checking

def check(trace: Trace) -> Trace:
    """Check a trace's own history (independent of the strategy); TraceError on the first bad op.

    Times, the grace and the devices' drains and widths follow the
    allocator's rules (see the module); times never decrease; every handle is
    allocated once before it is used;
    ``get``/``put`` only while the handle holds references; ``bind`` only
    then, to a device at least as wide as the allocation was limited to;
    ``unbind`` only of a bound pair (before or after the release); ``access``
    only by a device bound to the handle (from its ``bind`` to its ``unbind``,
    before or after the release); ``exit`` releases every live handle of its
    owner. The header's grace and width are checked first, then the devices,
    then the operations in order: the error names the first bad operation (its
    line, or ``source: operation i``). One chunk through a
    :class:`pasid.sim.tracecheck.Checker`, which checks a trace a chunk at a
    time. O(n).
    """
    n = len(trace.op)
    columns = (trace.time, trace.handle, trace.owner, trace.device)
    if any(len(c) != n for c in columns) or (trace.lines is not None and len(trace.lines) != n):
        raise TraceError("trace columns differ in length")
    Checker(trace.header()).feed(next(trace.chunks()))
    return trace
