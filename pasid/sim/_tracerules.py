"""The trace's vocabulary, and the rules of checking it that both checker twins share.

The operation codes, :class:`Device` and :class:`TraceError` (all re-exported by
:mod:`pasid.sim.trace`, where they are documented), how a time is written
(:func:`_number`) and ruled (:func:`_time`); and for :mod:`pasid.sim.tracecheck`
and its compiled twin ``pasid.sim._tracecheck``, the words of every error
(:func:`message`: the compiled twin names a kind and an index, the words live
here only) and the checks made once a chunk (columns, header, devices). This
module sits below both twins and ``trace.py``, so the imports run one way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from pasid._args import MAX_BITS, as_bits, as_drain, as_grace, as_time
from pasid.sim.chunk import Chunk, StreamHeader

OP_ALLOC, OP_GET, OP_PUT, OP_BIND, OP_UNBIND, OP_ACCESS, OP_EXIT, OP_ADVANCE = range(8)
OP_NAMES = ("alloc", "get", "put", "bind", "unbind", "access", "exit", "advance")

_OP_CODES = {name: code for code, name in enumerate(OP_NAMES)}


def check_op_codes(module: str, codes: tuple[int, ...]) -> None:
    """ImportError unless ``codes`` (a compiled module's C constants, from
    ``pasid/sim/_opcodes.pxd``, in ``OP_NAMES`` order) are the operation codes."""
    if codes != tuple(range(len(OP_NAMES))) or codes != (
            OP_ALLOC, OP_GET, OP_PUT, OP_BIND, OP_UNBIND, OP_ACCESS, OP_EXIT, OP_ADVANCE):
        raise ImportError(f"{module}: operation codes differ from pasid.sim._tracerules")

MAGIC = "pasid-trace"
VERSION = 1
_NAME = re.compile(r"[^\s#]+")      # a handle, owner or device name: a token, no blank, no '#'
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_BOM = "\ufeff"        # a UTF-8 byte-order mark, as text: skipped at the start of a trace


class TraceError(ValueError):
    """A trace that cannot be replayed: ``source:line: message`` when it has a line (1-based),
    ``source: message`` when it has a source only."""

    def __init__(self, message: str, line: int | None = None, source: str | None = None) -> None:
        where = ""
        if line is not None:
            where = f"{source or 'trace'}:{line}: "
        elif source is not None:
            where = f"{source}: "
        super().__init__(where + message)
        self.line = line


@dataclass(frozen=True)
class Device:
    """A device of a trace: its name, PASID width and drain time (its quarantine after unbind)."""

    name: str
    bits: int = MAX_BITS
    drain: float = 0.0


def _number(value: float) -> str:
    """A time as short text that reads back as the same float."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _time(value: float) -> float:
    """An operation's time: the allocator's rule for times, and at least 0. ValueError."""
    time = as_time(value, "time")
    if time < 0:
        raise ValueError(f"time must be >= 0, got {time}")
    return time


T = TypeVar("T")


def _integer(text: str, what: str, fail: Callable[[str], NoReturn]) -> int:
    """``text`` as an int if it is an integer of the format (ASCII digits, a sign)."""
    if _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:          # past Python's limit on the digits of an int
            pass
    fail(f"{what} must be an integer, got {text!r}")


def _decimal(text: str, what: str, fail: Callable[[str], NoReturn]) -> float:
    """``text`` as a float if it is a decimal number of the format (see the module)."""
    if not _DECIMAL.fullmatch(text):
        fail(f"{what} must be a decimal number, got {text!r}")
    return float(text)


def _keep(fail: Callable[[str], NoReturn], rule: Callable[..., T], *args: Any) -> T:
    """``rule(*args)``, a rule of the allocator's; its ValueError reported by ``fail``."""
    try:
        return rule(*args)
    except ValueError as error:
        fail(str(error))


# ---------------------------------------------------------------- the rules both twins share

# What went wrong at an operation: the compiled twin reports a kind and the
# operation's index, and error() below words it (the words live only here).
(BAD_TIME, BACKWARDS, UNKNOWN_OP, NO_OWNER, HANDLE_RANGE, TWICE, OWNER_RANGE, DEVICE_RANGE,
 BEFORE_ALLOC, NO_DEVICE, RELEASED, TOO_NARROW, NOT_BOUND, NOT_BOUND_ACCESS) = range(14)


def message(kind: int, header: StreamHeader, chunk: Chunk, j: int, previous: float) -> str:
    """The words for a bad operation ``j`` of ``chunk`` (``previous``: the time before it)."""
    op, h = int(chunk.op[j]), int(chunk.handle[j])
    o, d = int(chunk.owner[j]), int(chunk.device[j])
    if kind == BAD_TIME:
        try:
            _time(float(chunk.time[j]))
        except ValueError as error:
            return str(error)
        raise AssertionError(f"time {chunk.time[j]} is not bad")   # pragma: no cover
    if kind == BACKWARDS:
        return f"time goes backwards: {_number(chunk.time[j])} after {_number(previous)}"
    if kind == UNKNOWN_OP:
        return f"unknown operation code {op}"
    if kind == NO_OWNER:
        return "exit needs an owner"
    if kind == HANDLE_RANGE:
        return f"handle number {h} out of range"
    if kind == OWNER_RANGE:
        return f"owner number {o} out of range"
    if kind == DEVICE_RANGE:
        return f"device number {d} out of range"
    if kind == NO_DEVICE:
        return f"{OP_NAMES[op]} needs a device"
    name = header.handle_name(h)
    if kind == TWICE:
        return f"handle {name!r} allocated twice"
    if kind == BEFORE_ALLOC:
        return f"handle {name!r} used before its alloc"
    if kind == RELEASED:
        return f"{OP_NAMES[op]} of handle {name!r}, which has been released"
    device = chunk.devices[d]
    if kind == TOO_NARROW:
        return (f"bind of handle {name!r} to device {device.name!r}: "
                f"the device has {device.bits} bits and the allocation was not "
                f"limited to them (alloc HANDLE OWNER {device.name})")
    if kind == NOT_BOUND:
        return f"unbind of handle {name!r} from device {device.name!r}, which is not bound"
    if kind == NOT_BOUND_ACCESS:
        return (f"access of handle {name!r} by device {device.name!r}, which is not bound to "
                "it (a device accesses a PASID from its bind to its unbind, which says it "
                "has drained)")
    raise AssertionError(f"unknown kind {kind}")       # pragma: no cover


def error(kind: int, header: StreamHeader, chunk: Chunk, j: int, previous: float) -> TraceError:
    """The TraceError for a bad operation ``j`` of ``chunk``: ``source:line: ...`` when the
    chunk has lines, else ``source: operation i: ...`` (``i``: the index in the whole
    trace, from 0)."""
    text = message(kind, header, chunk, j, previous)
    if chunk.lines is not None:
        return TraceError(text, int(chunk.lines[j]), header.source)
    return TraceError(f"{header.source}: operation {chunk.start + j}: {text}")


def unknown_device(name: str, declared: Sequence[Device]) -> str:
    """The words for a device a trace's operation names that its header does not declare
    (``declared``: the devices it does, in order; the first 10 are named)."""
    if not declared:
        return (f"unknown device {name!r}: the header declares no device "
                "(device NAME [bits=N] [drain=TIME])")
    names = ", ".join(d.name for d in declared[:10])
    if len(declared) > 10:
        names += f" and {len(declared) - 10} more"
    return f"unknown device {name!r}: the header declares {names}"


def check_header(header: StreamHeader) -> None:
    """The header's grace and PASID width follow the allocator's rules; TraceError if not."""
    try:
        as_grace(header.grace)
        as_bits(header.bits, "bits")
    except ValueError as error:
        raise TraceError(str(error)) from None


def check_devices(devices: tuple[Device, ...], start: int) -> int:
    """``devices[start:]`` have widths and drains by the allocator's rules (TraceError if
    not); returns ``len(devices)``, where the next check starts."""
    for d in devices[start:]:
        try:
            as_bits(d.bits, "bits")
            as_drain(d.drain)
        except ValueError as error:
            raise TraceError(f"device {d.name!r}: {error}") from None
    return len(devices)


# each column's name and dtype (the chunk's lines last, when it has them)
_DTYPES: tuple[tuple[str, str], ...] = (
    ("time", "float64"), ("op", "uint8"), ("handle", "int32"), ("owner", "int32"),
    ("device", "int32"), ("lines", "int64"))


def check_columns(chunk: Chunk) -> int:
    """The chunk's columns are of one length (TraceError if not), of their dtypes and
    C-contiguous (TypeError if not); returns the length."""
    n = len(chunk.op)
    columns = [getattr(chunk, name) for name, _ in _DTYPES[:5]]
    if chunk.lines is not None:
        columns.append(chunk.lines)
    if any(len(c) != n for c in columns):
        raise TraceError("trace columns differ in length")
    for (name, dtype), column in zip(_DTYPES, columns):
        if column.dtype != dtype or not column.flags.c_contiguous:
            raise TypeError(f"chunk column {name} must be C-contiguous {dtype}, "
                            f"got {column.dtype}")
    return n


# names for a Detacher given no header: handles and owners by number
_NUMBERED = StreamHeader(bits=20, grace=0.0, source="trace", handle_name=str, owner_name=str)


def zero_drains(devices: tuple[Device, ...]) -> tuple[Device, ...]:
    """The devices with drain 0: what the rewrite's chunks carry."""
    return tuple(Device(d.name, d.bits, 0.0) for d in devices)


def done(what: str) -> RuntimeError:
    """What a Checker or Detacher that raised refuses further feeds with."""
    return RuntimeError(f"this {what} raised at an earlier operation: it is done "
                        "(make a new one)")


def _expect_start(chunk: Chunk, fed: int) -> None:
    """Chunks come in order, each starting where the last ended; ValueError if not."""
    if chunk.start != fed:
        raise ValueError(f"chunk starts at operation {chunk.start}, expected {fed}: "
                         "feed a trace's chunks in order, each once")
