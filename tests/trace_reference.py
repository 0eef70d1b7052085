"""The reference model of trace checking: ``check`` and ``Trace._detach_at_release`` as
they were before issue 17 (whole-trace Python loops over ``.tolist()`` columns), kept
verbatim to test the chunk-fed twins of ``pasid.sim.tracecheck`` against, with the
rules added since: an ``access`` only by a device bound to the handle, and an error
without a line naming its source (issue 20).

One difference is by design: the old ``check`` ran the time rules over the whole
trace before any operation's history, so a trace with a bad time late and a bad
operation early reported the time. A stream cannot look ahead: the twins report
the first bad operation in trace order. :func:`first_error` gives that from the
old ``check``: its error on the shortest prefix that fails.
"""

from typing import NoReturn

import numpy as np

from pasid._args import as_bits, as_drain, as_grace
from pasid.sim.trace import (
    OP_ACCESS, OP_ADVANCE, OP_ALLOC, OP_BIND, OP_EXIT, OP_GET, OP_NAMES, OP_PUT, OP_UNBIND, Device,
    Trace,
    TraceError, _number, _time,
)


def old_detach(self):
    keep = []
    # (index of the release op, handle, device): unbinds inserted before it
    extra: list[tuple[int, int, int]] = []
    bound: dict[tuple[int, int], int] = {}   # (handle, device) -> count
    refs: dict[int, int] = {}
    live: dict[int, set[int]] = {}           # owner -> set of live handles
    detached = set()    # handles released: their later unbinds are dropped
    ops, handles = self.op.tolist(), self.handle.tolist()
    owners, devices = self.owner.tolist(), self.device.tolist()
    # handle -> devices bound (in bind order, with counts in `bound`)
    by_handle: dict[int, list[int]] = {}
    owner_of: dict[int, int] = {}       # handle -> owner index, for owned handles

    def detach(i: int, h: int) -> None:
        for d in by_handle.pop(h, ()):
            for _ in range(bound.pop((h, d), 0)):
                extra.append((i, h, d))
        detached.add(h)

    for i, (op, h, o, d) in enumerate(zip(ops, handles, owners, devices)):
        if op == OP_ALLOC:
            refs[h] = 1
            if o >= 0:
                owner_of[h] = o
                live.setdefault(o, set()).add(h)
        elif op == OP_GET:
            refs[h] += 1
        elif op == OP_PUT:
            refs[h] -= 1
            if refs[h] == 0:
                detach(i, h)
                if h in owner_of:
                    live[owner_of[h]].discard(h)
        elif op == OP_BIND:
            if (h, d) not in bound:
                by_handle.setdefault(h, []).append(d)
                bound[(h, d)] = 0
            bound[(h, d)] += 1
        elif op == OP_UNBIND:
            if h in detached:
                continue
            bound[(h, d)] -= 1
            if bound[(h, d)] == 0:
                del bound[(h, d)]
                by_handle[h].remove(d)
        elif op == OP_EXIT:
            for victim in sorted(live.pop(o, ())):
                refs[victim] = 0
                detach(i, victim)
        keep.append(i)
    order = np.array(keep, dtype=np.int64)
    time, op, handle = self.time[order], self.op[order], self.handle[order]
    owner, device = self.owner[order], self.device[order]
    lines = self.lines[order] if self.lines is not None else None
    if extra:
        at = np.array([i for i, _, _ in extra], dtype=np.int64)
        position = np.searchsorted(order, at)       # insert before the release op
        time = np.insert(time, position, self.time[at])
        op = np.insert(op, position, OP_UNBIND)
        handle = np.insert(handle, position, [h for _, h, _ in extra])
        owner = np.insert(owner, position, -1)
        device = np.insert(device, position, [d for _, _, d in extra])
        if lines is not None and self.lines is not None:   # one implies the other
            lines = np.insert(lines, position, self.lines[at])
    return Trace(
        bits=self.bits, grace=self.grace,
        devices=[Device(d.name, d.bits, 0.0) for d in self.devices],
        owners=self.owners, handles=self.handles,
        time=time, op=op, handle=handle.astype(np.int32), owner=owner.astype(np.int32),
        device=device.astype(np.int32), lines=lines, source=self.source,
    )




def old_check(trace):
    """Check a trace's own history (independent of the strategy); TraceError on the first bad op.

    Times, the grace and the devices' drains and widths follow the
    allocator's rules (see the module); times never decrease; every handle is
    allocated once before it is used;
    ``get``/``put`` only while the handle holds references; ``bind`` only
    then, to a device at least as wide as the allocation was limited to;
    ``unbind`` only of a bound pair (before or after the release); ``exit``
    releases every live handle of its owner. O(n).
    """
    n = len(trace.op)
    size_bits = trace.bits
    columns = (trace.time, trace.op, trace.handle, trace.owner, trace.device)
    if any(len(c) != n for c in columns):
        raise TraceError("trace columns differ in length")
    lines = trace.lines.tolist() if trace.lines is not None else None
    source = trace.source

    def fail(i: int, message: str) -> NoReturn:
        if lines is not None:
            raise TraceError(message, lines[i], source)
        raise TraceError(f"{source or 'trace'}: operation {i}: {message}")

    times = trace.time
    if n:
        # the times' rule keeps an interval: the least and the greatest time (or the
        # first nan, which argmin and argmax both give) decide for all
        for i in (int(times.argmin()), int(times.argmax())):
            try:
                _time(float(times[i]))
            except ValueError as error:
                fail(i, str(error))
        back = np.flatnonzero(np.diff(times) < 0)
        if len(back):
            i = int(back[0]) + 1
            fail(i, f"time goes backwards: {_number(times[i])} after {_number(times[i - 1])}")
    try:
        as_grace(trace.grace)
        as_bits(trace.bits, "bits")
    except ValueError as error:
        raise TraceError(str(error)) from None
    widths = [d.bits for d in trace.devices]
    for d in trace.devices:
        try:
            as_bits(d.bits, "bits")
            as_drain(d.drain)
        except ValueError as error:
            raise TraceError(f"device {d.name!r}: {error}") from None
    ndev, nowners, nhandles = len(trace.devices), len(trace.owners), len(trace.handles)
    allocated = bytearray(nhandles)
    refs = [0] * nhandles
    limit = [size_bits] * nhandles      # the width the allocation was limited to
    bound: dict[tuple[int, int], int] = {}   # (handle, device) -> count
    owner_of = [-1] * nhandles
    live: dict[int, set[int]] = {}           # owner -> set of live handles
    names = trace.handles
    ops, handles = trace.op.tolist(), trace.handle.tolist()
    owners, devices = trace.owner.tolist(), trace.device.tolist()
    for i in range(n):
        op, h, o, d = ops[i], handles[i], owners[i], devices[i]
        if op > OP_ADVANCE:
            fail(i, f"unknown operation code {op}")
        if op in (OP_EXIT, OP_ADVANCE):
            if op == OP_EXIT:
                if not 0 <= o < nowners:
                    fail(i, "exit needs an owner")
                for victim in live.pop(o, ()):
                    refs[victim] = 0
            continue
        if not 0 <= h < nhandles:
            fail(i, f"handle number {h} out of range")
        name = names[h]
        if op == OP_ALLOC:
            if allocated[h]:
                fail(i, f"handle {name!r} allocated twice")
            allocated[h] = 1
            refs[h] = 1
            if o >= nowners:
                fail(i, f"owner number {o} out of range")
            if d >= ndev:
                fail(i, f"device number {d} out of range")
            if d >= 0:
                limit[h] = min(size_bits, widths[d])
            if o >= 0:
                owner_of[h] = o
                live.setdefault(o, set()).add(h)
            continue
        if not allocated[h]:
            fail(i, f"handle {name!r} used before its alloc")
        if op in (OP_BIND, OP_UNBIND, OP_ACCESS) and not 0 <= d < ndev:
            fail(i, f"{OP_NAMES[op]} needs a device")
        if op == OP_GET or op == OP_PUT or op == OP_BIND:
            if refs[h] == 0:
                fail(i, f"{OP_NAMES[op]} of handle {name!r}, which has been released")
            if op == OP_GET:
                refs[h] += 1
            elif op == OP_PUT:
                refs[h] -= 1
                if refs[h] == 0 and owner_of[h] >= 0:
                    live[owner_of[h]].discard(h)
            else:
                if widths[d] < limit[h]:
                    fail(i, f"bind of handle {name!r} to device {trace.devices[d].name!r}: "
                            f"the device has {widths[d]} bits and the allocation was not "
                            f"limited to them (alloc HANDLE OWNER {trace.devices[d].name})")
                bound[(h, d)] = bound.get((h, d), 0) + 1
        elif op == OP_UNBIND:
            count = bound.get((h, d), 0)
            if not count:
                fail(i, f"unbind of handle {name!r} from device {trace.devices[d].name!r}, "
                        "which is not bound")
            if count == 1:
                del bound[(h, d)]
            else:
                bound[(h, d)] = count - 1
        elif op == OP_ACCESS and (h, d) not in bound:
            fail(i, f"access of handle {name!r} by device {trace.devices[d].name!r}, which is "
                    "not bound to it (a device accesses a PASID from its bind to its unbind, "
                    "which says it has drained)")
    return trace


def prefix(trace, stop):
    """The trace's first ``stop`` operations (the same names and header)."""
    return Trace(bits=trace.bits, grace=trace.grace, devices=trace.devices, owners=trace.owners,
                 handles=trace.handles, time=trace.time[:stop], op=trace.op[:stop],
                 handle=trace.handle[:stop], owner=trace.owner[:stop],
                 device=trace.device[:stop],
                 lines=None if trace.lines is None else trace.lines[:stop], source=trace.source)


def error_of(check, trace):
    """``str`` of the TraceError ``check(trace)`` raises, with its line; None if none."""
    try:
        check(trace)
    except TraceError as error:
        return str(error), error.line
    return None


def first_error(trace):
    """The old check's error on the shortest failing prefix (binary search: failing is
    monotone in the prefix), as ``(message, line)``; None for a good trace."""
    whole = error_of(old_check, trace)
    if whole is None:
        return None
    if error_of(old_check, prefix(trace, 0)) is not None:
        return whole                       # the header: before any operation
    good, bad = 0, len(trace.op)           # prefix(good) passes, prefix(bad) fails
    while bad - good > 1:
        middle = (good + bad) // 2
        if error_of(old_check, prefix(trace, middle)) is None:
            good = middle
        else:
            bad = middle
    return error_of(old_check, prefix(trace, bad))
