"""Snapshots of a PasidAllocator: one format, shared by both backends.

A backend exports its state as a plain dict (:func:`fields` names the keys, in
order); this module turns that dict into bytes and back, and checks a loaded
dict completely before any backend builds from it, so bad bytes raise
:class:`~pasid.SnapshotError` and never reach C code. Three parts, in this order:

- the codec: :func:`encode`/:func:`decode` (the tagged encoding), the columns
  (:func:`column`, :func:`id_column`, ...), :func:`dumps`/:func:`loads` (the
  container);
- the version 2 check, :func:`check`, built from small readers that copy what
  they read and check the copy (so user code run by a check, an owner's
  ``__hash__``, cannot change what is loaded after it was checked), and its
  version 3 part, the VMs (:func:`_vm_copies`, copied before any owner is
  hashed; :func:`_vms`, checked against the host's fields);
- the version 1 upgrade, ``_upgrade``: reads what only version 1 has and
  converts it, and :func:`check` checks the result as version 2, so a rule
  both versions hold is written once.

The bytes::

    b"PASIDSNP"  format version (1 byte)  payload  CRC-32 of all before it (4 bytes, little-endian)

The payload is one value in a small tagged encoding of plain data (nothing is
executed on load; there is no pickle inside):

    N None, T True, F False, i int (zigzag LEB128), f float (8 bytes, little-endian IEEE 754),
    s str (length, UTF-8), b bytes (length, raw), l list, t tuple (count, items),
    d dict (count, key and value pairs in insertion order)

Version 2 is columnar: what there is one of per PASID travels as columns, byte
strings that numpy reads and writes whole, and the tagged encoding carries
only the scalars, the small tables (devices, quotas) and the user's objects
(each owner once, the data). A column of unsigned integers is one byte naming
its width (1, 2 or 4: the narrowest that holds its largest value), then the
values, little-endian; a column of IDs (ascending) holds the gaps between
them, so a run of neighbours costs a byte each; release times are raw
little-endian ``float64``. A PASID's owner is an index into the table of owner
keys, one per row of the states column. Version 1 (a list of pairs per PASID)
still loads. Identical state gives identical bytes on both backends.

Version 3 is version 2 and one more field, ``vms``: a host's VMs in the order
they were added, each the list of :data:`VM_FIELDS` (name, mode, guest bits,
host range, device indexes into ``devices``, the guest -> host translations as
an ID column of guest PASIDs and a column of host PASIDs, the guest owner tags
as an ID column and a list, the counters). Everything else about a VM is in
version 2's fields already: its host PASIDs' states, owners (the VM's name),
data and bindings, and its quota (the name's). Only a host with VMs writes
version 3; a host without VMs writes version 2, the same bytes as before.

>>> blob = encode({"a": [1, -2, 2.5, None, (True, b"x")]})
>>> decode(blob)
{'a': [1, -2, 2.5, None, (True, b'x')]}
>>> column([1, 300]), id_column([5, 6, 9])
(b'\\x02\\x01\\x00,\\x01', b'\\x01\\x05\\x01\\x03')
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

import numpy as np
import numpy.typing as npt

from pasid import _args
from pasid._errors import SnapshotError
from pasid._state import ACTIVE, DRAINING, FREE, QUARANTINED, RESERVED

__all__ = ["MAGIC", "VERSION", "dumps", "loads", "read_frame", "write_frame", "encode", "decode",
           "check", "fields", "column", "id_column", "arrays", "binding_columns", "vm_entry"]

MAGIC = b"PASIDSNP"
VERSION = 3          # the newest this reads; a host without VMs still writes version 2
MAX_DEPTH = 64

# The keys of an exported allocator, in the order they are encoded. "column":
# unsigned integers (see column()); "ids": an ID column, ascending (id_column()).
FIELDS = (
    "bits",          # int, 1..20
    "strategy",      # str
    "grace",         # float
    "now",           # float: the clock, read at export
    "rng",           # int: SplitMix64 state
    "cursor",        # int: the cyclic cursor
    "counters",      # [allocations, releases, reclaimed, failures, high_water]
    "states",        # (ids, states column): every PASID that is not FREE
    "refcounts",     # (ids, counts column): ACTIVE PASIDs holding 2 or more references
    "generations",   # (ids, generations column): every PASID allocated at least once
    "holds",         # (ids, release_at <f8): PASIDs with a release time so far
    "owner_keys",    # [owner, ...]: each owner of a PASID once, in the order of its lowest PASID
    "owners",        # column, a row per row of "states": 0 (no owner) or 1 + index in owner_keys
    "data",          # (ids, [data, ...]): PASIDs with data
    "devices",       # [(device, bits, drain), ...] in declaration order
    "bindings",      # (PASIDs, device indexes, counts): columns, a row per binding, the
                     # PASIDs ascending (an ID column that may repeat), each one's in bind order
    "binding_data",  # (rows, [data, ...]): the rows of "bindings" that have data (an ID column)
    "quotas",        # [(owner, n), ...] in the order they were set
    "fifo",          # column: the queue in order (fifo strategy), else None
)

# Version 3: version 2's fields and the host's VMs. Only a host with VMs writes it
# (a host without VMs writes version 2, byte for byte as before).
FIELDS_V3 = FIELDS + (
    "vms",           # [VM, ...] in the order they were added, each the list of VM_FIELDS
)

# A VM in version 3 (see vm_entry()): its owner record's quota is in "quotas" (the
# name is its owner key), its host PASIDs' states, owners, data and bindings in the
# host's fields; what is the VM's own is here.
VM_FIELDS = (
    "name",          # the VM's name: its owner key on the host (plain data, not None)
    "mode",          # str: "identity" or "translated"
    "bits",          # int: the guest's width
    "lo",            # int: the lowest host PASID it may take
    "hi",            # int: the highest
    "devices",       # [index in "devices", ...]: the devices assigned to it, in its order
    "translations",  # (guest PASIDs, host PASIDs): an ID column and a column, a row per
                     # ACTIVE guest PASID (identity: the two are equal)
    "tags",          # (guest PASIDs, [tag, ...]): an ID column, the guest owner tags
    "counters",      # [allocations, failures]
)

# Version 1: the same container, per-PASID tables as lists of pairs.
FIELDS_V1 = (
    "bits", "strategy", "grace", "now", "rng", "cursor", "counters",
    "states",       # (ids <u4, states u1) as raw bytes, and so on for the next three
    "refcounts", "generations", "holds",
    "owners",       # [(pasid, owner), ...] ascending
    "data",         # [(pasid, data), ...] ascending
    "bindings",     # [(pasid, [(device, count, data), ...] in bind order), ...] ascending
    "devices",      # [(device, bits, drain), ...] in declaration order
    "quotas",       # [(owner, n), ...] in the order they were set
    "fifo",         # ids <u4 in queue order (fifo strategy), else None
)

_WIDTHS: dict[int, np.dtype[Any]] = {1: np.dtype("<u1"), 2: np.dtype("<u2"),
                                    4: np.dtype("<u4")}


_T = TypeVar("_T")


FIELDS_OF = {1: FIELDS_V1, 2: FIELDS, 3: FIELDS_V3}     # a version's keys


def fields() -> tuple[str, ...]:
    """The keys of an exported allocator without VMs, in encoding order (with VMs:
    :data:`FIELDS_V3`)."""
    return FIELDS


# ---------------------------------------------------------------- the codec: plain data

def _varint(n: int, out: bytearray) -> None:
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


_DOUBLE = struct.Struct("<d")
# the tag and a length below 128 (one LEB128 byte), ready made: most values are small
_INT_PREFIX = [b"i" + bytes((n,)) for n in range(128)]
_STR_PREFIX = [b"s" + bytes((n,)) for n in range(128)]
_BYTES_PREFIX = [b"b" + bytes((n,)) for n in range(128)]
_TUPLE_PREFIX = [b"t" + bytes((n,)) for n in range(128)]
_LIST_PREFIX = [b"l" + bytes((n,)) for n in range(128)]


def _encode(value: Any, out: bytearray, depth: int) -> None:
    # the most frequent types first; a container checks the depth of its items
    kind = type(value)
    if kind is int:
        n = value << 1 if value >= 0 else ((-value) << 1) - 1
        if n < 0x80:
            out += _INT_PREFIX[n]
        else:
            out += b"i"
            _varint(n, out)
    elif kind is str:
        raw = value.encode("utf-8", "surrogatepass")
        if len(raw) < 0x80:
            out += _STR_PREFIX[len(raw)]
        else:
            out += b"s"
            _varint(len(raw), out)
        out += raw
    elif kind is tuple or kind is list:
        if value and depth >= MAX_DEPTH:
            raise TypeError("snapshot data nested too deeply")
        if len(value) < 0x80:
            out += (_TUPLE_PREFIX if kind is tuple else _LIST_PREFIX)[len(value)]
        else:
            out += b"t" if kind is tuple else b"l"
            _varint(len(value), out)
        for item in value:
            _encode(item, out, depth + 1)
    elif value is None:
        out += b"N"
    elif kind is bool:
        out += b"T" if value else b"F"
    elif kind is float:
        out += b"f"
        out += _DOUBLE.pack(value)
    elif kind is bytes:
        if len(value) < 0x80:
            out += _BYTES_PREFIX[len(value)]
        else:
            out += b"b"
            _varint(len(value), out)
        out += value
    elif kind is dict:
        if value and depth >= MAX_DEPTH:
            raise TypeError("snapshot data nested too deeply")
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


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The LEB128 integer at ``pos`` and the position after it (IndexError: truncated)."""
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 7 * 1024:
            raise SnapshotError("snapshot has an oversized integer")


def _value(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """The value at ``pos`` and the position after it. Reading past the end raises
    IndexError (:func:`decode` reports it as truncation)."""
    tag = buf[pos]
    pos += 1
    if tag == 0x69:                          # i
        n = buf[pos]
        if n < 0x80:
            pos += 1
        else:
            n, pos = _read_varint(buf, pos)
        return (-((n + 1) >> 1) if n & 1 else n >> 1), pos
    if tag == 0x73 or tag == 0x62:           # s, b
        n = buf[pos]
        if n < 0x80:
            pos += 1
        else:
            n, pos = _read_varint(buf, pos)
        end = pos + n
        if end > len(buf):
            raise SnapshotError("snapshot truncated")
        if tag == 0x62:
            return buf[pos:end], end
        try:
            return buf[pos:end].decode("utf-8", "surrogatepass"), end
        except UnicodeDecodeError:
            raise SnapshotError("snapshot holds malformed text") from None
    if tag == 0x74 or tag == 0x6C:           # t, l
        count = buf[pos]
        if count < 0x80:
            pos += 1
        else:
            count, pos = _read_varint(buf, pos)
        if count > len(buf) - pos:
            raise SnapshotError("snapshot truncated")
        if count and depth >= MAX_DEPTH:
            raise SnapshotError("snapshot data nested too deeply")
        items: list[Any] = []
        append = items.append
        for _ in range(count):
            item, pos = _value(buf, pos, depth + 1)
            append(item)
        return (tuple(items) if tag == 0x74 else items), pos
    if tag == 0x4E:                          # N
        return None, pos
    if tag == 0x54:                          # T
        return True, pos
    if tag == 0x46:                          # F
        return False, pos
    if tag == 0x66:                          # f
        if pos + 8 > len(buf):
            raise SnapshotError("snapshot truncated")
        return _DOUBLE.unpack_from(buf, pos)[0], pos + 8
    if tag == 0x64:                          # d
        count, pos = _read_varint(buf, pos)
        if count > len(buf) - pos:
            raise SnapshotError("snapshot truncated")
        if count and depth >= MAX_DEPTH:
            raise SnapshotError("snapshot data nested too deeply")
        result = {}
        for _ in range(count):
            key, pos = _value(buf, pos, depth + 1)
            item, pos = _value(buf, pos, depth + 1)
            try:
                result[key] = item
            except TypeError:
                raise SnapshotError("snapshot has an unhashable dict key") from None
        return result, pos
    raise SnapshotError(f"snapshot has an unknown tag {bytes((tag,))!r}")


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The value encoded in ``data`` (the whole of it); SnapshotError when malformed."""
    buf = bytes(data)
    try:
        value, pos = _value(buf, 0, 0)
    except IndexError:
        raise SnapshotError("snapshot truncated") from None
    if pos != len(buf):
        raise SnapshotError("snapshot has trailing bytes")
    return value


# ---------------------------------------------------------------- the codec: columns

def column(values: npt.ArrayLike) -> bytes:
    """Unsigned integers (below 2**32) as a column: a byte naming the width, the values."""
    array = np.asarray(values)
    top = int(array.max()) if array.size else 0
    if array.size and int(array.min()) < 0 or top >> 32:
        raise ValueError("a column holds unsigned 32-bit integers")
    width = 1 if top < 1 << 8 else 2 if top < 1 << 16 else 4
    return bytes((width,)) + array.astype(_WIDTHS[width], copy=False).tobytes()


def id_column(ids: npt.ArrayLike) -> bytes:
    """Ascending IDs (repeats allowed) as a column of the gaps between them (the first: from 0)."""
    array = np.asarray(ids, dtype=np.int64)
    gaps = np.diff(array, prepend=0) if array.size else array
    if gaps.size and int(gaps.min()) < 0:
        raise ValueError("an ID column holds ascending IDs")
    return column(gaps)


def binding_columns(entries: Iterable[tuple[int, int, int, Any]]
                    ) -> tuple[tuple[bytes, bytes, bytes], tuple[bytes, list[Any]]]:
    """The ``bindings`` and ``binding_data`` fields from (PASID, device index, count,
    data) entries in snapshot order (PASIDs ascending, each in bind order): three
    columns, and the rows that carry data with their values."""
    bound: list[int] = []
    bound_to: list[int] = []
    counts: list[int] = []
    rows: list[int] = []
    values: list[Any] = []
    for p, device, count, value in entries:
        if value is not None:
            rows.append(len(bound))
            values.append(value)
        bound.append(p)
        bound_to.append(device)
        counts.append(count)
    return (id_column(bound), column(bound_to), column(counts)), (id_column(rows), values)


def arrays(ids: npt.ArrayLike, values: npt.ArrayLike, dtype: npt.DTypeLike
           ) -> tuple[bytes, bytes]:
    """An (ids, values) pair as a snapshot holds it: an ID column and, for ``dtype``
    ``"<f8"``, raw little-endian float64, else a column of unsigned integers."""
    if np.dtype(dtype).kind == "f":
        return id_column(ids), np.asarray(values, dtype="<f8").tobytes()
    return id_column(ids), column(values)


# ---------------------------------------------------------------- the codec: the container

def vm_entry(name: Any, mode: str, bits: int, lo: int, hi: int, devices: list[int],
             guests: npt.ArrayLike, hosts: npt.ArrayLike, tagged: npt.ArrayLike,
             tags: list[Any], allocations: int, failures: int) -> list[Any]:
    """A VM as version 3 holds it (:data:`VM_FIELDS`): ``guests`` ascending, ``hosts``
    row for row, ``tagged`` (ascending) the guest PASIDs whose tags are ``tags``."""
    return [name, mode, bits, lo, hi, devices, (id_column(guests), column(hosts)),
            (id_column(tagged), tags), [allocations, failures]]


def write_frame(magic: bytes, version: int, value: Any) -> bytes:
    """``value`` in the container both snapshots and VM exports use: ``magic``, the
    version byte, the tagged encoding, a CRC-32 of all before it."""
    body = bytearray(magic)
    body.append(version)
    _encode(value, body, 0)
    body += struct.pack("<I", zlib.crc32(body))
    return bytes(body)


def read_frame(data: Any, magic: bytes, versions: Iterable[int], what: str
               ) -> tuple[int, Any]:
    """(version, decoded payload) of a :func:`write_frame` container whose version is
    one of ``versions``; SnapshotError otherwise (TypeError for what is not bytes).
    ``what`` names the container in the messages ("snapshot", "VM export")."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a {what} is bytes, not {type(data).__name__}")
    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    if len(view) < len(magic) + 1 + 4 or view[:len(magic)] != magic:
        raise SnapshotError(f"not a pasid {what}")
    version = view[len(magic)]
    if version not in versions:
        readable = ", ".join(str(v) for v in sorted(versions, reverse=True))
        raise SnapshotError(f"{what} format version {version} is not supported "
                            f"(this reads {readable})")
    (crc,) = struct.unpack("<I", view[-4:])
    if zlib.crc32(view[:-4]) != crc:
        raise SnapshotError(f"{what} checksum mismatch: corrupt or truncated")
    return version, decode(view[len(magic) + 1:-4])


def dumps(state: dict[str, Any]) -> bytes:
    """An exported allocator state (a dict with the keys of :func:`fields`, and
    ``"vms"`` for a host with VMs) as snapshot bytes: version 3 with VMs, else 2."""
    names = FIELDS_V3 if "vms" in state else FIELDS
    return write_frame(MAGIC, 3 if "vms" in state else 2, [state[key] for key in names])


def loads(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The state dict in snapshot bytes (version 3, 2 or 1), checked whole (see :func:`check`);
    SnapshotError otherwise."""
    version, values = read_frame(data, MAGIC, FIELDS_OF, "snapshot")
    names = FIELDS_OF[version]
    if type(values) is not list or len(values) != len(names):
        raise SnapshotError("snapshot does not hold an allocator")
    return check(dict(zip(names, values)))


# ---------------------------------------------------------------- checking: the parts

def _fail(message: str) -> NoReturn:
    raise SnapshotError(f"inconsistent snapshot: {message}")


def _int(value: Any, lo: int, hi: int, what: str) -> int:
    if type(value) is not int or not lo <= value <= hi:
        _fail(f"{what} {value!r} is not an integer in {lo}..{hi}")
    return value


def _bits(value: Any, what: str) -> int:
    """A PASID width: 1.._args.MAX_BITS."""
    return _int(value, 1, _args.MAX_BITS, what)


def _number(value: Any, what: str, minimum: float | None = None) -> float:
    # compared before any conversion: an int of any size, a float of any value
    if type(value) not in (int, float) or not -_args.MAX_TIME <= value <= _args.MAX_TIME:
        _fail(f"{what} {value!r} is not a finite number within +-1e300")
    if minimum is not None and value < minimum:
        _fail(f"{what} {value!r} is below {minimum}")
    return float(value)


def _rule(check: Callable[..., _T], value: Any, *args: Any) -> _T:
    """``check(value, *args)``: a rule of :mod:`pasid._args`, its error in the same
    words as an inconsistent snapshot."""
    try:
        return check(value, *args)
    except (TypeError, ValueError) as exc:
        _fail(str(exc))


def _hashable(value: _T, what: str) -> _T:
    try:
        hash(value)
    except TypeError:
        _fail(f"{what} {value!r} is not hashable")
    return value


def _ascending(ids: npt.NDArray[np.int64], size: int, what: str, repeats: bool = False
               ) -> npt.NDArray[np.int64]:
    """``ids`` if they ascend (``repeats``: or stay equal) and stay below ``size``."""
    if ids.size and (ids[0] < 0 or ids[-1] >= size
                     or np.any(np.diff(ids) < (0 if repeats else 1))):
        _fail(f"{what} IDs are not ascending within the space")
    return ids


def _column(raw: Any, what: str) -> npt.NDArray[Any]:
    """A column of unsigned integers: a read-only view of its width."""
    if type(raw) is not bytes or not raw or raw[0] not in _WIDTHS or (len(raw) - 1) % raw[0]:
        _fail(f"{what} is not a column of unsigned integers")
    return np.frombuffer(raw, dtype=_WIDTHS[raw[0]], offset=1)


def _ints(raw: Any, what: str) -> npt.NDArray[np.int64]:
    """A column of unsigned integers, as int64."""
    return _column(raw, what).astype(np.int64)


def _ids(raw: Any, size: int, what: str, repeats: bool = False) -> npt.NDArray[np.int64]:
    """An ID column: IDs ascending (``repeats``: or equal), below ``size``; int64."""
    return _ascending(np.cumsum(_column(raw, what), dtype=np.int64), size, what, repeats)


def _sequence(value: Any, length: int, what: str) -> list[Any] | tuple[Any, ...]:
    if type(value) not in (list, tuple) or len(value) != length:
        _fail(f"{what} is not {length} columns")
    result: list[Any] | tuple[Any, ...] = value
    return result


def _array(pair: Any, size: int, what: str, floats: bool = False
           ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """(ids, values) from an ID column and a column of values (``floats``: raw <f8)."""
    raw_ids, raw_values = _sequence(pair, 2, what)
    ids = _ids(raw_ids, size, what)
    if floats:
        if type(raw_values) is not bytes or len(raw_values) % 8:
            _fail(f"{what} values are not float64")
        values: npt.NDArray[Any] = np.frombuffer(raw_values, dtype="<f8").astype(np.float64)
    else:
        values = _ints(raw_values, what)
    if values.size != ids.size:
        _fail(f"{what} columns have mismatched lengths")
    return ids, values


def _objects(pair: Any, size: int, what: str, repeats: bool = False
             ) -> tuple[npt.NDArray[np.int64], list[Any]]:
    """(ids, [object, ...]): an ID column and a list as long, no None in it."""
    raw_ids, values = _sequence(pair, 2, what)
    ids = _ids(raw_ids, size, what, repeats)
    if type(values) not in (list, tuple) or len(values) != ids.size:
        _fail(f"{what} is not a list as long as its IDs")
    if any(value is None for value in values):
        _fail(f"{what} holds None")
    return ids, list(values)


def _listed(items: Any, what: str) -> list[Any]:
    """A list or tuple, copied: the checks (and the user code they run: an owner's
    ``__hash__``) read the copy, so what is checked is what is loaded."""
    if type(items) not in (list, tuple):
        _fail(f"{what} is not a list")
    return list(items)


def _entries(items: Any, width: int, what: str, entry: str, shape: str
             ) -> list[tuple[Any, ...]]:
    """A list of ``width``-item lists or tuples, each copied to a tuple (:func:`_listed`)."""
    entries = []
    for item in _listed(items, what):
        if type(item) not in (list, tuple) or len(item) != width:
            _fail(f"{entry} {item!r} is not {shape}")
        entries.append(tuple(item))
    return entries


def _pairs(items: Any, what: str) -> list[tuple[Any, ...]]:
    return _entries(items, 2, what, f"{what} entry", "a pair")


def _mask(size: int, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(size, dtype=bool)
    mask[ids] = True
    return mask


def _scalars(state: Any, fields: tuple[str, ...]) -> tuple[int, str, float, float, int, int,
                                                           list[int]]:
    """The fields both versions share, checked: (bits, strategy, grace, now, rng,
    cursor, counters); SnapshotError unless ``state`` is a dict of ``fields``."""
    if type(state) is not dict or tuple(state) != fields:
        _fail("the fields are not those of an allocator")
    bits = _bits(state["bits"], "bits")
    strategy = _args.STRATEGIES[_rule(_args.as_strategy, state["strategy"])]
    grace = _number(state["grace"], "grace", 0)
    now = _number(state["now"], "now")
    rng = _int(state["rng"], 0, (1 << 64) - 1, "generator state")
    cursor = _int(state["cursor"], 0, 1 << bits, "cursor")
    counters = state["counters"]
    if type(counters) not in (list, tuple) or len(counters) != 5:
        _fail("counters are not five integers")
    return (bits, strategy, grace, now, rng, cursor,
            [_int(c, 0, _args.COUNTER_MAX, "counter") for c in counters])


def _devices(items: Any) -> list[tuple[Any, ...]]:
    """The device table, copied and checked: (device, bits, drain) entries, each
    device hashable and declared once."""
    devices = _entries(items, 3, "devices", "device entry", "(device, bits, drain)")
    declared = set()
    for device, width, drain in devices:
        _hashable(device, "device")
        if device in declared:
            _fail(f"device {device!r} declared twice")
        declared.add(device)
        _bits(width, "device bits")
        _number(drain, "drain", 0)
    return devices


# ---------------------------------------------------------------- version 2: the check

def check(state: Any) -> dict[str, Any]:
    """Check every field of a state dict and how they fit together; return it normalised.

    ``state`` has the keys of :data:`FIELDS`, of :data:`FIELDS_V3` (a host with
    VMs: checked by :func:`_vms`), or of :data:`FIELDS_V1` (a version 1 state,
    from old bytes or an old pickle: upgraded first, see :func:`_upgrade`). The normalised dict has int64 numpy arrays in place of
    columns (float64 for release times, uint8 for states), the owners as the
    codes of the states' rows (0: none, else 1 + index in owner_keys) and a
    ``state_of`` array (the state of every PASID), and ``vms``: a dict per VM
    (none before version 3). Anything that does not fit raises SnapshotError.
    O(N) in numpy, and a Python step per owner key, data item, device, quota,
    VM and VM device.
    """
    if type(state) is dict and tuple(state) == FIELDS_V1:
        state = _upgrade(state)
    names: tuple[str, ...] = FIELDS
    vm_copies: list[tuple[Any, ...]] = []
    if type(state) is dict and tuple(state) == FIELDS_V3:
        # copied before any owner's __hash__ runs (the owner keys, below)
        names, vm_copies = FIELDS_V3, _vm_copies(state["vms"])
    bits, strategy, grace, now, rng, cursor, counters = _scalars(state, names)
    size = 1 << bits

    raw_ids, raw_states = _sequence(state["states"], 2, "states")
    ids = _ids(raw_ids, size, "states")
    states = _column(raw_states, "states")
    if states.size != ids.size:
        _fail("states columns have mismatched lengths")
    if states.size and (states.min() < RESERVED or states.max() > QUARANTINED):
        _fail("a state out of range")
    states = states.astype(np.uint8)
    state_of = np.zeros(size, dtype=np.uint8)
    state_of[ids] = states
    allocated = state_of >= ACTIVE

    ref_ids, refcounts = _array(state["refcounts"], size, "refcounts")
    if ref_ids.size and (np.any(state_of[ref_ids] != ACTIVE) or refcounts.min() < 2):
        _fail("a refcount above 1 on a PASID that is not ACTIVE, or below 2")

    gen_ids, generations = _array(state["generations"], size, "generations")
    if gen_ids.size and generations.min() < 1:
        _fail("a generation of 0 listed")
    if np.any(allocated > _mask(size, gen_ids)):
        _fail("an allocated PASID with generation 0")

    hold_ids, holds = _array(state["holds"], size, "holds", floats=True)
    if hold_ids.size and (not np.all(allocated[hold_ids])
                          or not np.all(np.abs(holds) <= 2 * _args.MAX_TIME)):
        _fail("a release time on a PASID that was not allocated, or not finite")
    if np.any((state_of >= DRAINING) > _mask(size, hold_ids)):
        _fail("a released PASID without a release time")

    keys = _listed(state["owner_keys"], "the owner keys")
    for key in keys:
        if key is None:
            _fail("an owner key None")
        _hashable(key, "owner")
    if len(set(keys)) != len(keys):
        _fail("an owner key repeated")
    codes = _column(state["owners"], "owners")
    if codes.size != ids.size:
        _fail("the owners column is not as long as the states column")
    if codes.size and (codes.max() > len(keys) or np.any((codes > 0) > (states >= ACTIVE))):
        _fail("an owner out of the key table, or on a PASID that is not allocated")
    if np.any(np.bincount(codes, minlength=len(keys) + 1)[1:] == 0):
        _fail("an owner key no PASID has")

    data = _objects(state["data"], size, "data")
    if data[0].size and not np.all(allocated[data[0]]):
        _fail("data on a PASID that is not allocated")

    devices = _devices(state["devices"])
    raw_bound, raw_devices, raw_counts = _sequence(state["bindings"], 3, "bindings")
    bound = _ids(raw_bound, size, "bindings", repeats=True)
    bound_to = _ints(raw_devices, "bound devices")
    counts = _ints(raw_counts, "bind counts")
    if not bound.size == bound_to.size == counts.size:
        _fail("bindings columns have mismatched lengths")
    if bound.size:
        widths = np.array([width for _, width, _ in devices], dtype=np.int64)
        if bound_to.max() >= len(devices) or counts.min() < 1:
            _fail("a binding to an undeclared device, or a bind count of 0")
        if np.any((state_of[bound] != ACTIVE) & (state_of[bound] != DRAINING)):
            _fail("bindings for a PASID that is neither ACTIVE nor DRAINING")
        if np.any(bound >> widths[bound_to]):
            _fail("a PASID bound to a narrower device")
        pairs = bound * len(devices) + bound_to
        if np.unique(pairs).size != pairs.size:
            _fail("a PASID bound twice to one device")
    if np.any((state_of == DRAINING) > _mask(size, bound)):
        _fail("a DRAINING PASID with no device bound")
    binding_data = _objects(state["binding_data"], bound.size, "binding data")

    quotas = _pairs(state["quotas"], "quotas")
    seen = set()
    for owner, n in quotas:
        _hashable(owner, "quota owner")
        if owner is None or owner in seen:
            _fail(f"quota for {owner!r} repeated or owner-less")
        _int(n, 0, _args.QUOTA_MAX, "quota")
        seen.add(owner)

    fifo = state["fifo"]
    if strategy == "fifo":
        fifo = _ints(fifo, "the fifo queue")
        free = state_of == FREE
        if fifo.size and (fifo.max() >= size or not np.all(free[fifo])):
            _fail("the fifo queue holds a PASID that is not FREE")
        if fifo.size != np.count_nonzero(free) or np.count_nonzero(_mask(size, fifo)) != fifo.size:
            _fail("the fifo queue is not the FREE set")
    elif fifo is not None:
        _fail("a fifo queue for another strategy")

    code_at = np.zeros(size, dtype=np.int64)
    code_at[ids] = codes
    vms = _vms(vm_copies, bits, state_of, code_at, keys, devices)

    return {
        "bits": bits, "strategy": strategy, "grace": grace, "now": now, "rng": rng,
        "cursor": cursor, "counters": counters,
        "states": (ids, states), "state_of": state_of,
        "refcounts": (ref_ids, refcounts), "generations": (gen_ids, generations),
        "holds": (hold_ids, holds), "owner_keys": keys, "owners": codes.astype(np.int64),
        "data": data, "devices": devices, "bindings": (bound, bound_to, counts),
        "binding_data": binding_data, "quotas": quotas, "fifo": fifo, "vms": vms,
    }


# ---------------------------------------------------------------- version 3: the VMs

def _vm_copies(items: Any) -> list[tuple[Any, ...]]:
    """Version 3's VMs, copied whole (:data:`VM_FIELDS` each; the devices, both pairs
    and the counters as tuples, the tags' list too) and nothing else checked: the
    check runs user code (the owners' ``__hash__``) before it reads them."""
    copies = []
    for entry in _entries(items, len(VM_FIELDS), "vms", "VM entry",
                          f"a list of the {len(VM_FIELDS)} fields of a VM"):
        name, mode, width, lo, hi, devices, translations, tags, counters = entry
        raw_tagged, values = _sequence(tags, 2, "guest tags")
        copies.append((name, mode, width, lo, hi, tuple(_listed(devices, "a VM's devices")),
                       tuple(_sequence(translations, 2, "translations")),
                       (raw_tagged, _listed(values, "guest tags")),
                       tuple(_sequence(counters, 2, "a VM's counters"))))
    if not copies:
        _fail("a version 3 snapshot without VMs (a host without VMs writes version 2)")
    return copies


def _vms(copies: list[tuple[Any, ...]], bits: int, state_of: npt.NDArray[np.uint8],
         code_at: npt.NDArray[np.int64], keys: list[Any], devices: list[tuple[Any, ...]]
         ) -> list[dict[str, Any]]:
    """The VMs checked against the host (its width, the states, each PASID's owner
    code, the owner keys and the devices): what a backend needs to rebuild each.

    A VM's name is a hashable owner key, not None, no other VM's; its mode, width
    and host range are ones ``add_vm`` could give (the width within the host's and
    its devices', the range within what they address, PASID 0 excluded); its
    devices declared and no other VM's. A translation maps a guest PASID (unique,
    ascending, 1 .. 2**bits - 1) to a host PASID in the VM's range, ACTIVE and owned
    by the VM's name, mapped by no other row of any VM; identity's are equal. Guest
    tags only on mapped guest PASIDs, never None. The VM's name may own other host
    PASIDs, in any state and range: the host's own, tagged with the name (a guest
    PASID the guest freed, draining or in quarantine; a host allocation).
    """
    index_of = {}
    for i, key in enumerate(keys):
        index_of[key] = i
    names: set[Any] = set()
    assigned: set[int] = set()
    mapped = np.zeros(1 << bits, dtype=bool)
    vms = []
    for name, mode, width, lo, hi, indexes, translations, tags, counters in copies:
        if name is None:
            _fail("a VM named None")
        _hashable(name, "VM name")
        if name in names:
            _fail(f"VM {name!r} listed twice")
        names.add(name)
        if type(mode) is not str or mode not in _args.VM_MODES:
            _fail(f"VM mode {mode!r} is not one of {', '.join(_args.VM_MODES)}")
        index = _args.VM_MODES.index(mode)
        width = _int(width, 1, bits, "guest bits")
        narrowest = bits
        for device in indexes:
            _int(device, 0, len(devices) - 1, "a VM's device index")
            if device in assigned:
                _fail(f"device {devices[device][0]!r} assigned twice")
            assigned.add(device)
            narrowest = min(narrowest, devices[device][1])
        if width > narrowest:
            _fail(f"guest bits {width} wider than the VM's devices or host ({narrowest})")
        top = (1 << (width if index == 0 else narrowest)) - 1
        lo = _int(lo, 1, top, "a VM's lowest host PASID")
        hi = _int(hi, lo, top, "a VM's highest host PASID")
        guests = _ids(translations[0], 1 << width, "guest PASIDs")
        hosts = _ints(translations[1], "host PASIDs")
        if hosts.size != guests.size:
            _fail("translation columns have mismatched lengths")
        if guests.size:
            code = index_of.get(name)
            if guests[0] == 0 or hosts.min() < lo or hosts.max() > hi:
                _fail("a guest PASID 0, or a host PASID outside its VM's range")
            if np.any(state_of[hosts] != ACTIVE) or code is None \
                    or np.any(code_at[hosts] != code + 1):
                _fail("a guest PASID on a host PASID not ACTIVE or not its VM's")
            if np.any(mapped[hosts]) or np.unique(hosts).size != hosts.size:
                _fail("a host PASID mapped twice")
            mapped[hosts] = True
            if index == 0 and np.any(guests != hosts):
                _fail("an identity guest PASID on another host PASID")
        tagged, values = _objects(tags, 1 << width, "guest tags")
        if tagged.size and not np.all(np.isin(tagged, guests)):
            _fail("a guest tag on a guest PASID that is not ACTIVE")
        allocations, failures = (_int(n, 0, _args.COUNTER_MAX, "a VM's counter")
                                 for n in counters)
        vms.append({"name": name, "mode": index, "bits": width, "lo": lo, "hi": hi,
                    "devices": list(indexes), "guests": guests, "hosts": hosts,
                    "tags": (tagged, values), "allocations": allocations,
                    "failures": failures})
    return vms


# ---------------------------------------------------------------- version 1: the upgrade

def _array_v1(pair: Any, size: int, dtype: str, what: str
              ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """(ids, values) from version 1's pair of byte strings (ids ``<u4``, ascending)."""
    if type(pair) not in (list, tuple) or len(pair) != 2:
        _fail(f"{what} is not a pair of arrays")
    raw_ids, raw_values = pair
    if type(raw_ids) is not bytes or type(raw_values) is not bytes:
        _fail(f"{what} arrays are not bytes")
    width = np.dtype(dtype).itemsize
    if len(raw_ids) % 4 or len(raw_values) % width or len(raw_ids) // 4 != len(raw_values) // width:
        _fail(f"{what} arrays have mismatched lengths")
    ids = np.frombuffer(raw_ids, dtype="<u4").astype(np.int64)
    return _ascending(ids, size, what), np.frombuffer(raw_values, dtype=dtype)


def _tagged(items: Any, size: int, what: str, pasid: str
            ) -> tuple[npt.NDArray[np.int64], list[Any]]:
    """Version 1's (PASID, value) pairs, copied: (PASIDs ascending below ``size``, values)."""
    pairs = _pairs(items, what)
    ids = [_int(p, 0, size - 1, pasid) for p, _ in pairs]
    return _ascending(np.array(ids, dtype=np.int64), size, what), [value for _, value in pairs]


def _upgrade(old: dict[str, Any]) -> dict[str, Any]:
    """A version 1 state (:data:`FIELDS_V1`) as version 2 (:data:`FIELDS`), for
    :func:`check` to check.

    Only version 1's own shapes are read here (arrays as byte strings, tables as
    (PASID, value) lists, bindings nested per PASID), each copied before it is
    read, and what the conversion would lose is refused: an owner on a PASID
    with no row in the states (FREE), an empty binding list. The scalars and
    the devices, the same in both versions, go through version 2's readers
    (the width sizes the tables, the device table numbers the bindings); the
    quotas pass as they are. Every rule version 2 states (which state may have
    an owner, data, a binding; refcounts, generations, release times, the
    fifo queue) is left to the check.
    """
    size = 1 << _scalars(old, FIELDS_V1)[0]
    ids, states = _array_v1(old["states"], size, "u1", "states")
    refcounts = _array_v1(old["refcounts"], size, "<u4", "refcounts")
    generations = _array_v1(old["generations"], size, "<u4", "generations")
    holds = _array_v1(old["holds"], size, "<f8", "holds")

    owned, owners = _tagged(old["owners"], size, "owner", "owner's PASID")
    stateless = owned[~_mask(size, ids)[owned]]
    if stateless.size:
        _fail(f"owner for PASID {stateless[0]}, which is FREE")
    keys: dict[Any, int] = {}
    code_of = np.zeros(size, dtype=np.int64)
    for p, owner in zip(owned.tolist(), owners):
        code_of[p] = keys.setdefault(_hashable(owner, "owner"), len(keys) + 1)
    tagged, data = _tagged(old["data"], size, "data", "data's PASID")

    devices = _devices(old["devices"])
    index_of = {entry[0]: i for i, entry in enumerate(devices)}
    entries = []
    bound, lists = _tagged(old["bindings"], size, "bindings", "bound PASID")
    for p, listed in zip(bound.tolist(), lists):
        pairs = _entries(listed, 3, f"PASID {p}'s bindings", "binding entry",
                         "(device, count, data)")
        if not pairs:
            _fail(f"PASID {p} has an empty binding list")
        for device, count, value in pairs:
            index = index_of.get(_hashable(device, "device"))
            if index is None:
                _fail(f"PASID {p} bound to undeclared device {device!r}")
            entries.append((p, index, _int(count, 1, _args.COUNT_MAX, "bind count"), value))
    bindings, binding_data = binding_columns(entries)

    fifo = old["fifo"]
    if fifo is not None and old["strategy"] == "fifo":    # else the check refuses it
        if type(fifo) is not bytes or len(fifo) % 4:
            _fail("the fifo queue is not an array")
        fifo = column(np.frombuffer(fifo, dtype="<u4"))
    return {
        "bits": old["bits"], "strategy": old["strategy"], "grace": old["grace"],
        "now": old["now"], "rng": old["rng"], "cursor": old["cursor"],
        "counters": old["counters"],
        "states": arrays(ids, states, "u1"),
        "refcounts": arrays(*refcounts, "<u4"),
        "generations": arrays(*generations, "<u4"),
        "holds": arrays(*holds, "<f8"),
        "owner_keys": list(keys), "owners": column(code_of[ids]),
        "data": (id_column(tagged), data),
        "devices": devices,
        "bindings": bindings,
        "binding_data": binding_data,
        "quotas": old["quotas"],
        "fifo": fifo,
    }
