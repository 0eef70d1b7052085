"""Checking a trace and its no-quarantine rewrite, a chunk at a time.

Two stateful classes, each fed the :class:`~pasid.sim.chunk.Chunk` objects of
one trace in order and keeping between chunks only what is live:

- :class:`Checker` checks each chunk's operations given everything fed
  before (the rules are :func:`pasid.sim.trace.check`'s) and raises
  :class:`~pasid.sim.trace.TraceError` at the first bad operation, naming it
  ``source:line`` (or ``operation i``, its index in the whole trace, when the
  chunk has no lines). A Checker that raised is done: feeding it again raises
  RuntimeError.
- :class:`Detacher` rewrites each chunk as an allocator without device
  quarantine would see it (:meth:`pasid.sim.trace.Trace.without_quarantine`):
  every device still bound at a release is unbound right before it, the
  handle's later unbinds are dropped, drains are 0. It expects a checked
  trace; what would corrupt its tables (a handle out of range, an unbind of a
  pair not bound) raises TraceError, after which it is done too.

Splitting a trace differently gives the same first error and the same
concatenated rewrite.

Memory: the live state (references, live lists, bound pairs) plus, per handle,
a state of a few dozen bytes. The compiled pair gives the states of dead
handles back (a handle released with nothing bound never lives again): once
all 512 handles of a group are dead, the pages holding their states return to
the system and a handle of the group is taken by the rule for a dead one, so
what the states hold follows the groups with a live handle in them, not the
trace's length (``Checker.kept``, ``Detacher.kept``). The Python twins keep
every handle's state.

Twins: this module holds the pure-Python pair (:class:`PyChecker`,
:class:`PyDetacher`) and the chooser; ``pasid/sim/_tracecheck.pyx`` holds the
compiled pair. The rules both share (the messages, the header, device and
column checks) are in ``pasid/sim/_tracerules.py``, which the compiled twin
calls only at the start of a chunk and on an error. :data:`Checker` and
:data:`Detacher` are the compiled classes when the extension imports and ``PASID_NO_EXTENSION=1`` is not set, else the twins
(:func:`implementation` picks one explicitly).

>>> from pasid.sim.trace import TraceBuilder
>>> b = TraceBuilder(); b.device("gpu", drain=2)
>>> h = b.alloc(0.0, owner="p"); b.bind(1.0, h, "gpu"); b.put(2.0, h); b.unbind(3.0, h, "gpu")
>>> trace = b.build()
>>> checker = Checker(trace.header())
>>> for chunk in trace.chunks(2):
...     checker.feed(chunk)
>>> detacher = Detacher()
>>> [OP_NAMES[op] for chunk in trace.chunks(3) for op in detacher.feed(chunk).op.tolist()]
['alloc', 'bind', 'unbind', 'put']
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pasid._args import MAX_TIME
from pasid.sim._tracerules import (
    BACKWARDS, BAD_TIME, BEFORE_ALLOC, DEVICE_RANGE, HANDLE_RANGE, NO_DEVICE, NO_OWNER, NOT_BOUND,
    NOT_BOUND_ACCESS, OP_ADVANCE, OP_ALLOC, OP_BIND, OP_EXIT, OP_GET, OP_NAMES, OP_PUT, OP_UNBIND,
    OWNER_RANGE, RELEASED, TOO_NARROW, TWICE, UNKNOWN_OP, _NUMBERED, Device, _expect_start,
    check_columns, check_devices, check_header, done, error, zero_drains,
)
from pasid.sim.chunk import Chunk, StreamHeader

__all__ = ["Checker", "Detacher", "ENGINE", "PyChecker", "PyDetacher", "implementation"]


# ---------------------------------------------------------------- the Python twins

class _Done:
    failed = False

    def _refuse_if_failed(self) -> None:
        if self.failed:
            raise done(type(self).__name__[2:])


class PyChecker(_Done):
    """Check a trace's operations a chunk at a time (the Python twin of the compiled
    ``Checker``; the rules are :func:`pasid.sim.trace.check`'s).

    State: per handle whether it was allocated, its references, the width its
    allocation was limited to and the owner whose live list holds it; per owner
    its live handles; per bound (handle, device) pair the bind count (a pair
    leaves when its count reaches 0); the last time. ``feed`` is O(len(chunk))
    plus the handles an ``exit`` releases.
    """

    def __init__(self, header: StreamHeader) -> None:
        check_header(header)
        self.header = header
        self._bits = header.bits
        self._devices = 0           # devices checked so far
        self._fed = 0               # operations fed so far
        self._last = 0.0
        self._allocated = bytearray()
        self._refs: list[int] = []
        self._limit: list[int] = []
        self._live_owner: list[int] = []     # the owner whose live set holds the handle, or -1
        self._live: dict[int, set[int]] = {}     # owner -> live handles
        self._bound: dict[tuple[int, int], int] = {}    # (handle, device) -> count

    @property
    def bindings(self) -> int:
        """How many (handle, device) pairs are bound now."""
        return len(self._bound)

    def feed(self, chunk: Chunk) -> None:
        """Check ``chunk``'s operations given those fed before; TraceError at the first bad one."""
        self._refuse_if_failed()
        self.failed = True          # until the chunk is through
        _expect_start(chunk, self._fed)
        n = check_columns(chunk)
        self._devices = check_devices(chunk.devices, self._devices)
        grow = chunk.handles - len(self._refs)
        if grow > 0:
            self._allocated.extend(bytes(grow))
            self._refs.extend([0] * grow)
            self._limit.extend([0] * grow)
            self._live_owner.extend([-1] * grow)
        found = self._run(chunk, n)
        if found is not None:
            kind, j = found
            raise error(kind, self.header, chunk, j, self._last)
        self._fed += n
        self.failed = False

    def _run(self, chunk: Chunk, n: int) -> tuple[int, int] | None:
        nhandles, nowners = chunk.handles, chunk.owners
        widths = [d.bits for d in chunk.devices]
        ndev = len(widths)
        allocated, refs, limit = self._allocated, self._refs, self._limit
        live_owner, live, bound = self._live_owner, self._live, self._bound
        times, ops = chunk.time.tolist(), chunk.op.tolist()
        handles, owners, devices = chunk.handle.tolist(), chunk.owner.tolist(), chunk.device.tolist()
        last = self._last
        try:
            for j in range(n):
                t = times[j]
                if not 0.0 <= t <= MAX_TIME:
                    return BAD_TIME, j
                if t < last:
                    return BACKWARDS, j
                last = t
                op = ops[j]
                if op > OP_ADVANCE:
                    return UNKNOWN_OP, j
                if op == OP_EXIT:
                    o = owners[j]
                    if not 0 <= o < nowners:
                        return NO_OWNER, j
                    for victim in live.pop(o, ()):
                        refs[victim] = 0
                        live_owner[victim] = -1
                    continue
                if op == OP_ADVANCE:
                    continue
                h = handles[j]
                if not 0 <= h < nhandles:
                    return HANDLE_RANGE, j
                if op == OP_ALLOC:
                    if allocated[h]:
                        return TWICE, j
                    o, d = owners[j], devices[j]
                    if o >= nowners:
                        return OWNER_RANGE, j
                    if d >= ndev:
                        return DEVICE_RANGE, j
                    allocated[h] = 1
                    refs[h] = 1
                    limit[h] = min(self._bits, widths[d]) if d >= 0 else self._bits
                    if o >= 0:
                        live_owner[h] = o
                        live.setdefault(o, set()).add(h)
                    continue
                if not allocated[h]:
                    return BEFORE_ALLOC, j
                d = devices[j]
                if op >= OP_BIND and not 0 <= d < ndev:     # bind, unbind, access
                    return NO_DEVICE, j
                if op <= OP_BIND:                           # get, put, bind
                    if refs[h] == 0:
                        return RELEASED, j
                    if op == OP_GET:
                        refs[h] += 1
                    elif op == OP_PUT:
                        refs[h] -= 1
                        if refs[h] == 0 and live_owner[h] >= 0:
                            live[live_owner[h]].discard(h)
                            live_owner[h] = -1
                    else:
                        if widths[d] < limit[h]:
                            return TOO_NARROW, j
                        bound[(h, d)] = bound.get((h, d), 0) + 1
                elif op == OP_UNBIND:
                    count = bound.get((h, d), 0)
                    if not count:
                        return NOT_BOUND, j
                    if count == 1:
                        del bound[(h, d)]
                    else:
                        bound[(h, d)] = count - 1
                elif (h, d) not in bound:                  # an access
                    return NOT_BOUND_ACCESS, j
            return None
        finally:
            self._last = last


class PyDetacher(_Done):
    """Rewrite a trace without device quarantine a chunk at a time (the Python twin of
    the compiled ``Detacher``; see :meth:`pasid.sim.trace.Trace.without_quarantine`).

    State: per handle its references, the owner whose live set holds it and
    whether it was released (its later unbinds are dropped); per owner its live
    handles; per handle its bound devices in the order first bound, with counts
    (a pair leaves when unbound to 0 or detached). ``feed`` is O(len(chunk))
    plus the handles an ``exit`` releases and the unbinds inserted.
    """

    def __init__(self, header: StreamHeader | None = None) -> None:
        self.header = header or _NUMBERED
        self._fed = 0               # operations fed so far
        self._out = 0               # operations written so far
        self._refs: list[int] = []
        self._live_owner: list[int] = []
        self._allocated = bytearray()
        self._detached = bytearray()
        self._live: dict[int, set[int]] = {}
        self._by_handle: dict[int, dict[int, int]] = {}    # handle -> {device: count}, bind order
        self._devices: tuple[Device, ...] = ()
        self._zero: tuple[Device, ...] = ()

    @property
    def bindings(self) -> int:
        """How many (handle, device) pairs are bound now."""
        return sum(len(pairs) for pairs in self._by_handle.values())

    def feed(self, chunk: Chunk) -> Chunk:
        """The rewrite of ``chunk`` given the chunks fed before (see the module)."""
        self._refuse_if_failed()
        self.failed = True
        _expect_start(chunk, self._fed)
        n = check_columns(chunk)
        grow = chunk.handles - len(self._refs)
        if grow > 0:
            self._refs.extend([0] * grow)
            self._live_owner.extend([-1] * grow)
            self._allocated.extend(bytes(grow))
            self._detached.extend(bytes(grow))
        keep: list[int] = []
        extra: list[tuple[int, int, int]] = []     # (index of the release op, handle, device)
        found = self._run(chunk, n, keep, extra)
        if found is not None:
            kind, j = found
            raise error(kind, self.header, chunk, j, 0.0)
        out = _rewrite(chunk, keep, extra, self._out, self._zero_drains(chunk.devices))
        self._fed += n
        self._out += len(out.op)
        self.failed = False
        return out

    def _zero_drains(self, devices: tuple[Device, ...]) -> tuple[Device, ...]:
        if devices is not self._devices:
            self._devices, self._zero = devices, zero_drains(devices)
        return self._zero

    def _run(self, chunk: Chunk, n: int, keep: list[int],
             extra: list[tuple[int, int, int]]) -> tuple[int, int] | None:
        nhandles, nowners, ndev = chunk.handles, chunk.owners, len(chunk.devices)
        refs, live_owner, live = self._refs, self._live_owner, self._live
        allocated, detached, by_handle = self._allocated, self._detached, self._by_handle
        ops, handles = chunk.op.tolist(), chunk.handle.tolist()
        owners, devices = chunk.owner.tolist(), chunk.device.tolist()

        def detach(j: int, h: int) -> None:
            for d, count in by_handle.pop(h, {}).items():
                extra.extend([(j, h, d)] * count)
            detached[h] = 1

        for j in range(n):
            op = ops[j]
            if op > OP_ADVANCE:
                return UNKNOWN_OP, j
            if op == OP_EXIT:
                o = owners[j]
                if not 0 <= o < nowners:
                    return NO_OWNER, j
                for victim in sorted(live.pop(o, ())):
                    refs[victim] = 0
                    live_owner[victim] = -1
                    detach(j, victim)
                keep.append(j)
                continue
            if op == OP_ADVANCE:
                keep.append(j)
                continue
            h = handles[j]
            if not 0 <= h < nhandles:
                return HANDLE_RANGE, j
            if op == OP_ALLOC:
                o = owners[j]
                if allocated[h]:
                    return TWICE, j
                if o >= nowners:
                    return OWNER_RANGE, j
                allocated[h] = 1
                refs[h] = 1
                if o >= 0:
                    live_owner[h] = o
                    live.setdefault(o, set()).add(h)
            elif op == OP_GET:
                refs[h] += 1
            elif op == OP_PUT:
                refs[h] -= 1
                if refs[h] == 0:
                    detach(j, h)
                    if live_owner[h] >= 0:
                        live[live_owner[h]].discard(h)
                        live_owner[h] = -1
            elif op == OP_BIND or op == OP_UNBIND:
                d = devices[j]
                if not 0 <= d < ndev:
                    return NO_DEVICE, j
                if op == OP_BIND:
                    pairs = by_handle.setdefault(h, {})
                    pairs[d] = pairs.get(d, 0) + 1
                else:
                    if detached[h]:
                        continue            # dropped: the handle was detached at its release
                    pairs = by_handle.get(h, {})
                    count = pairs.get(d, 0)
                    if not count:
                        return NOT_BOUND, j
                    if count == 1:
                        del pairs[d]
                        if not pairs:
                            del by_handle[h]
                    else:
                        pairs[d] = count - 1
            keep.append(j)
        return None


def _rewrite(chunk: Chunk, keep: list[int], extra: list[tuple[int, int, int]], start: int,
             devices: tuple[Device, ...]) -> Chunk:
    """``chunk``'s operations ``keep``, with the unbinds ``extra`` (release index, handle,
    device) inserted right before their release op, as a chunk starting at ``start``."""
    order = np.array(keep, dtype=np.int64)
    time, op, handle = chunk.time[order], chunk.op[order], chunk.handle[order]
    owner, device = chunk.owner[order], chunk.device[order]
    lines = chunk.lines[order] if chunk.lines is not None else None
    if extra:
        at = np.array([j for j, _, _ in extra], dtype=np.int64)
        position = np.searchsorted(order, at)       # insert before the release op
        time = np.insert(time, position, chunk.time[at])
        op = np.insert(op, position, OP_UNBIND)
        handle = np.insert(handle, position, [h for _, h, _ in extra])
        owner = np.insert(owner, position, -1)
        device = np.insert(device, position, [d for _, _, d in extra])
        if lines is not None and chunk.lines is not None:   # one implies the other
            lines = np.insert(lines, position, chunk.lines[at])
    return Chunk(time=time, op=op, handle=handle.astype(np.int32), owner=owner.astype(np.int32),
                 device=device.astype(np.int32), lines=lines, start=start,
                 handles=chunk.handles, owners=chunk.owners, devices=devices)


# ---------------------------------------------------------------- the chooser

def implementation(engine: str = "auto") -> tuple[Any, Any]:
    """``(Checker, Detacher)`` classes of ``engine``: ``"compiled"`` (ImportError if the
    extension is missing), ``"python"`` (the twins) or ``"auto"`` (compiled unless
    ``PASID_NO_EXTENSION=1`` or it is missing)."""
    if engine not in ("auto", "compiled", "python"):
        raise ValueError(f"engine must be auto, compiled or python, got {engine!r}")
    if engine == "python" or (engine == "auto" and os.environ.get("PASID_NO_EXTENSION") == "1"):
        return PyChecker, PyDetacher
    try:
        from pasid.sim import _tracecheck
    except ImportError:
        if engine == "compiled":
            raise
        return PyChecker, PyDetacher
    return _tracecheck.Checker, _tracecheck.Detacher

Checker, Detacher = implementation()
ENGINE = "python" if Checker is PyChecker else "compiled"
