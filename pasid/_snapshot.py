"""Snapshots of a PasidAllocator: one format, shared by both backends.

A backend exports its state as a plain dict (:func:`fields` names the keys, in
order); this module turns that dict into bytes and back, and checks a loaded
dict completely before any backend builds from it, so bad bytes raise
:class:`~pasid.SnapshotError` and never reach C code.

The bytes::

    b"PASIDSNP"  format version (1 byte)  payload  CRC-32 of all before it (4 bytes, little-endian)

The payload is one value in a small tagged encoding of plain data (nothing is
executed on load; there is no pickle inside):

    N None, T True, F False, i int (zigzag LEB128), f float (8 bytes, little-endian IEEE 754),
    s str (length, UTF-8), b bytes (length, raw), l list, t tuple (count, items),
    d dict (count, key and value pairs in insertion order)

Arrays of IDs, states, counts and times travel as ``bytes`` of little-endian
``uint32``/``uint8``/``float64``, so a 20-bit allocator encodes quickly.
Identical state gives identical bytes on both backends.

>>> blob = encode({"a": [1, -2, 2.5, None, (True, b"x")]})
>>> decode(blob)
{'a': [1, -2, 2.5, None, (True, b'x')]}
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, NoReturn, TypeVar

import numpy as np
import numpy.typing as npt

from pasid import _args
from pasid._errors import SnapshotError

__all__ = ["MAGIC", "VERSION", "dumps", "loads", "encode", "decode", "check", "fields"]

MAGIC = b"PASIDSNP"
VERSION = 1
MAX_DEPTH = 64
STRATEGIES = ("lowest", "cyclic", "fifo", "random")
FREE, RESERVED, ACTIVE, DRAINING, QUARANTINED = range(5)

# The keys of an exported allocator, in the order they are encoded.
FIELDS = (
    "bits",         # int, 1..20
    "strategy",     # str
    "grace",        # float
    "now",          # float: the clock, read at export
    "rng",          # int: SplitMix64 state
    "cursor",       # int: the cyclic cursor
    "counters",     # [allocations, releases, reclaimed, failures, high_water]
    "states",       # (ids <u4, states u1): every PASID that is not FREE, ascending
    "refcounts",    # (ids <u4, counts <u4): ACTIVE PASIDs holding 2 or more references
    "generations",  # (ids <u4, generations <u4): every PASID allocated at least once
    "holds",        # (ids <u4, release_at <f8): PASIDs with a release time so far
    "owners",       # [(pasid, owner), ...] ascending
    "data",         # [(pasid, data), ...] ascending
    "bindings",     # [(pasid, [(device, count, data), ...] in bind order), ...] ascending
    "devices",      # [(device, bits, drain), ...] in declaration order
    "quotas",       # [(owner, n), ...] in the order they were set
    "fifo",         # ids <u4 in queue order (fifo strategy), else None
)


_T = TypeVar("_T")


def fields() -> tuple[str, ...]:
    """The keys of an exported allocator, in encoding order."""
    return FIELDS


# ---------------------------------------------------------------- the codec

def _varint(n: int, out: bytearray) -> None:
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TypeError("snapshot data nested too deeply")
    kind = type(value)
    if value is None:
        out += b"N"
    elif kind is bool:
        out += b"T" if value else b"F"
    elif kind is int:
        out += b"i"
        _varint(value << 1 if value >= 0 else ((-value) << 1) - 1, out)
    elif kind is float:
        out += b"f"
        out += struct.pack("<d", value)
    elif kind is str:
        raw = value.encode("utf-8", "surrogatepass")
        out += b"s"
        _varint(len(raw), out)
        out += raw
    elif kind is bytes:
        out += b"b"
        _varint(len(value), out)
        out += value
    elif kind is list or kind is tuple:
        out += b"l" if kind is list else b"t"
        _varint(len(value), out)
        for item in value:
            _encode(item, out, depth + 1)
    elif kind is dict:
        out += b"d"
        _varint(len(value), out)
        for key, item in value.items():
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    else:
        raise TypeError(
            f"snapshot values must be plain data (None, bool, int, float, str, bytes, "
            f"tuple, list, dict), not {kind.__name__}: {value!r}"
        )


def encode(value: object) -> bytes:
    """``value`` (plain data only) as bytes; TypeError naming anything else."""
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise SnapshotError("snapshot truncated")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def varint(self) -> int:
        shift = 0
        result = 0
        data = self.data
        while True:
            if self.pos >= len(data):
                raise SnapshotError("snapshot truncated")
            byte = data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 7 * 1024:
                raise SnapshotError("snapshot has an oversized integer")

    def value(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise SnapshotError("snapshot data nested too deeply")
        # a memoryview equals the bytes of the same content; the wider type
        # keeps mypy's strict equality from taking the two as disjoint
        tag: bytes | memoryview = self.take(1)
        if tag == b"N":
            return None
        if tag == b"T":
            return True
        if tag == b"F":
            return False
        if tag == b"i":
            n = self.varint()
            return n >> 1 if not n & 1 else -((n + 1) >> 1)
        if tag == b"f":
            return struct.unpack("<d", self.take(8))[0]
        if tag == b"s":
            try:
                return bytes(self.take(self.varint())).decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                raise SnapshotError("snapshot holds malformed text") from None
        if tag == b"b":
            return bytes(self.take(self.varint()))
        if tag in (b"l", b"t"):
            count = self.varint()
            if count > len(self.data) - self.pos:
                raise SnapshotError("snapshot truncated")
            items = [self.value(depth + 1) for _ in range(count)]
            return items if tag == b"l" else tuple(items)
        if tag == b"d":
            count = self.varint()
            if count > len(self.data) - self.pos:
                raise SnapshotError("snapshot truncated")
            result = {}
            for _ in range(count):
                key = self.value(depth + 1)
                try:
                    result[key] = self.value(depth + 1)
                except TypeError:
                    raise SnapshotError("snapshot has an unhashable dict key") from None
            return result
        raise SnapshotError(f"snapshot has an unknown tag {bytes(tag)!r}")


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The value encoded in ``data`` (the whole of it); SnapshotError when malformed."""
    reader = _Reader(memoryview(data))
    value = reader.value()
    if reader.pos != len(data):
        raise SnapshotError("snapshot has trailing bytes")
    return value


# ---------------------------------------------------------------- the container

def dumps(state: dict[str, Any]) -> bytes:
    """An exported allocator state (a dict with the keys of :func:`fields`) as snapshot bytes."""
    body = bytearray(MAGIC)
    body.append(VERSION)
    _encode([state[key] for key in FIELDS], body, 0)
    body += struct.pack("<I", zlib.crc32(body))
    return bytes(body)


def loads(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The state dict in snapshot bytes, checked whole (see :func:`check`); SnapshotError otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a snapshot is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) + 1 + 4 or not data.startswith(MAGIC):
        raise SnapshotError("not a pasid snapshot")
    version = data[len(MAGIC)]
    if version != VERSION:
        raise SnapshotError(f"snapshot format version {version} is not supported (this is {VERSION})")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise SnapshotError("snapshot checksum mismatch: corrupt or truncated")
    values = decode(data[len(MAGIC) + 1:-4])
    if type(values) is not list or len(values) != len(FIELDS):
        raise SnapshotError("snapshot does not hold an allocator")
    return check(dict(zip(FIELDS, values)))


# ---------------------------------------------------------------- checking

def _fail(message: str) -> NoReturn:
    raise SnapshotError(f"inconsistent snapshot: {message}")


def _int(value: Any, lo: int, hi: int, what: str) -> int:
    if type(value) is not int or not lo <= value <= hi:
        _fail(f"{what} {value!r} is not an integer in {lo}..{hi}")
    return value


def _number(value: Any, what: str, minimum: float | None = None) -> float:
    # compared before any conversion: an int of any size, a float of any value
    if type(value) not in (int, float) or not -_args.MAX_TIME <= value <= _args.MAX_TIME:
        _fail(f"{what} {value!r} is not a finite number within +-1e300")
    if minimum is not None and value < minimum:
        _fail(f"{what} {value!r} is below {minimum}")
    return float(value)


def _hashable(value: _T, what: str) -> _T:
    try:
        hash(value)
    except TypeError:
        _fail(f"{what} {value!r} is not hashable")
    return value


def _array(pair: Any, size: int, dtype: npt.DTypeLike, what: str
           ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """(ids, values) from a pair of byte strings: ids ascending, below ``size``."""
    if type(pair) not in (list, tuple) or len(pair) != 2:
        _fail(f"{what} is not a pair of arrays")
    raw_ids, raw_values = pair
    if type(raw_ids) is not bytes or type(raw_values) is not bytes:
        _fail(f"{what} arrays are not bytes")
    width = np.dtype(dtype).itemsize
    if len(raw_ids) % 4 or len(raw_values) % width or len(raw_ids) // 4 != len(raw_values) // width:
        _fail(f"{what} arrays have mismatched lengths")
    ids = np.frombuffer(raw_ids, dtype="<u4").astype(np.int64)
    values = np.frombuffer(raw_values, dtype=dtype)
    if ids.size and (ids[-1] >= size or (ids.size > 1 and np.any(np.diff(ids) <= 0))):
        _fail(f"{what} IDs are not ascending within the space")
    return ids, values


def _pairs(items: Any, what: str) -> Any:
    if type(items) not in (list, tuple):
        _fail(f"{what} is not a list")
    for item in items:
        if type(item) not in (list, tuple) or len(item) != 2:
            _fail(f"{what} entry {item!r} is not a pair")
    return items


def _tags(items: Any, what: str, state_of: npt.NDArray[np.uint8]) -> Any:
    """(PASID, value) pairs: PASIDs ascending, allocated (ACTIVE, DRAINING or QUARANTINED), values not None."""
    _pairs(items, what)
    last = -1
    for p, value in items:
        _int(p, last + 1, state_of.size - 1, f"{what}'s PASID")
        if state_of[p] < ACTIVE or value is None:
            _fail(f"{what} for PASID {p} in state {state_of[p]}")
        last = p
    return items


def check(state: Any) -> dict[str, Any]:
    """Check every field of a state dict and how they fit together; return it normalised.

    The normalised dict has numpy arrays in place of byte strings and a
    ``state_of`` array (the state of every PASID). Anything that does not fit
    raises SnapshotError.
    """
    if type(state) is not dict or tuple(state) != FIELDS:
        _fail("the fields are not those of an allocator")
    bits = _int(state["bits"], 1, 20, "bits")
    size = 1 << bits
    strategy = state["strategy"]
    if strategy not in STRATEGIES:
        _fail(f"unknown strategy {strategy!r}")
    grace = _number(state["grace"], "grace", 0)
    now = _number(state["now"], "now")
    rng = _int(state["rng"], 0, (1 << 64) - 1, "generator state")
    cursor = _int(state["cursor"], 0, size, "cursor")
    counters = state["counters"]
    if type(counters) not in (list, tuple) or len(counters) != 5:
        _fail("counters are not five integers")
    counters = [_int(c, 0, _args.COUNTER_MAX, "counter") for c in counters]

    ids, states = _array(state["states"], size, np.uint8, "states")
    if states.size and (states.min() < RESERVED or states.max() > QUARANTINED):
        _fail("a state out of range")
    state_of = np.zeros(size, dtype=np.uint8)
    state_of[ids] = states

    ref_ids, refcounts = _array(state["refcounts"], size, "<u4", "refcounts")
    if ref_ids.size and (np.any(state_of[ref_ids] != ACTIVE) or refcounts.min() < 2):
        _fail("a refcount above 1 on a PASID that is not ACTIVE, or below 2")

    gen_ids, generations = _array(state["generations"], size, "<u4", "generations")
    if gen_ids.size and generations.min() < 1:
        _fail("a generation of 0 listed")
    live = ids[states >= ACTIVE]
    if live.size and not np.all(np.isin(live, gen_ids)):
        _fail("an allocated PASID with generation 0")

    hold_ids, holds = _array(state["holds"], size, "<f8", "holds")
    if hold_ids.size and (np.any(state_of[hold_ids] < ACTIVE)
                          or not np.all(np.abs(holds) <= 2 * _args.MAX_TIME)):
        _fail("a release time on a PASID that was not allocated, or not finite")
    waiting = ids[states >= DRAINING]
    if waiting.size and not np.all(np.isin(waiting, hold_ids)):
        _fail("a released PASID without a release time")

    owners = _tags(state["owners"], "owner", state_of)
    for _, owner in owners:
        _hashable(owner, "owner")
    data = _tags(state["data"], "data", state_of)

    devices = state["devices"]
    if type(devices) not in (list, tuple):
        _fail("devices is not a list")
    device_bits = {}
    for entry in devices:
        if type(entry) not in (list, tuple) or len(entry) != 3:
            _fail(f"device entry {entry!r} is not (device, bits, drain)")
        device, width, drain = entry
        _hashable(device, "device")
        if device in device_bits:
            _fail(f"device {device!r} declared twice")
        device_bits[device] = _int(width, 1, 20, "device bits")
        _number(drain, "drain", 0)

    bindings = _pairs(state["bindings"], "bindings")
    bound = set()
    last = -1
    for p, pairs in bindings:
        _int(p, last + 1, size - 1, "bound PASID")
        last = p
        if state_of[p] not in (ACTIVE, DRAINING):
            _fail(f"bindings for PASID {p} in state {state_of[p]}")
        if type(pairs) not in (list, tuple) or not pairs:
            _fail(f"PASID {p} has an empty binding list")
        seen = set()
        for entry in pairs:
            if type(entry) not in (list, tuple) or len(entry) != 3:
                _fail(f"binding entry {entry!r} is not (device, count, data)")
            device, count, _ = entry
            _hashable(device, "device")
            if device not in device_bits or device in seen:
                _fail(f"PASID {p} bound to undeclared or repeated device {device!r}")
            if p >> device_bits[device]:
                _fail(f"PASID {p} bound to the narrower device {device!r}")
            _int(count, 1, (1 << 32) - 1, "bind count")
            seen.add(device)
        bound.add(p)
    draining = ids[states == DRAINING]
    if not all(int(p) in bound for p in draining):
        _fail("a DRAINING PASID with no device bound")

    quotas = _pairs(state["quotas"], "quotas")
    seen = set()
    for owner, n in quotas:
        _hashable(owner, "quota owner")
        if owner is None or owner in seen:
            _fail(f"quota for {owner!r} repeated or owner-less")
        _int(n, 0, 1 << 63, "quota")
        seen.add(owner)

    fifo = state["fifo"]
    if strategy == "fifo":
        if type(fifo) is not bytes or len(fifo) % 4:
            _fail("the fifo queue is not an array")
        fifo = np.frombuffer(fifo, dtype="<u4").astype(np.int64)
        free_ids = np.flatnonzero(state_of == FREE)
        if fifo.size != free_ids.size or not np.array_equal(np.sort(fifo), free_ids):
            _fail("the fifo queue is not the FREE set")
    elif fifo is not None:
        _fail("a fifo queue for another strategy")

    return {
        "bits": bits, "strategy": strategy, "grace": grace, "now": now, "rng": rng,
        "cursor": cursor, "counters": counters,
        "states": (ids, states), "state_of": state_of,
        "refcounts": (ref_ids, refcounts), "generations": (gen_ids, generations),
        "holds": (hold_ids, holds), "owners": owners, "data": data,
        "bindings": bindings, "devices": devices, "quotas": quotas, "fifo": fifo,
    }


def arrays(ids: npt.ArrayLike, values: npt.ArrayLike, dtype: npt.DTypeLike
           ) -> tuple[bytes, bytes]:
    """A (ids, values) pair of arrays as the byte strings a snapshot holds."""
    return (
        np.asarray(ids, dtype="<u4").tobytes(),
        np.asarray(values, dtype=dtype).tobytes(),
    )
