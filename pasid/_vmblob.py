"""A VM's migration blob (``GuestSpace.export`` / ``PasidAllocator.import_vm``): one format,
both backends.

The container is the snapshots' (:mod:`pasid._snapshot`): a magic, a version
byte, a payload in its tagged encoding (plain data; nothing is executed on
load), a CRC-32 of all before it::

    b"PASIDVM\\0"  version (1 byte)  payload  CRC-32 (4 bytes, little-endian)

The payload is ``[mode, bits, devices, entries]``: the VM's mode and guest
width, its devices' names in order, and one entry per ACTIVE guest PASID,
ascending: ``(guest PASID, refcount, owner tag, data, bindings)``, the
bindings ``(device index, count, data)`` in bind order. :func:`loads` checks
it whole before a backend builds from it, copying what it reads, so bad bytes
are a :class:`~pasid.SnapshotError` and never reach C code.

>>> state = {"mode": "translated", "bits": 8, "devices": ["vf0"],
...          "entries": [(1, 2, "proc", None, [(0, 1, None)])]}
>>> loads(dumps(state)) == state
True
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from pasid import _args
from pasid._errors import SnapshotError
from pasid._snapshot import _encode, _fail, _hashable, _int, decode

__all__ = ["MAGIC", "VERSION", "dumps", "loads"]

MAGIC = b"PASIDVM\0"
VERSION = 1
FIELDS = ("mode", "bits", "devices", "entries")


def dumps(state: dict[str, Any]) -> bytes:
    """An exported VM (a dict with the keys of ``FIELDS``) as bytes."""
    body = bytearray(MAGIC)
    body.append(VERSION)
    _encode([state[key] for key in FIELDS], body, 0)
    body += struct.pack("<I", zlib.crc32(body))
    return bytes(body)


def loads(data: Any) -> dict[str, Any]:
    """The exported VM in ``data``, checked whole; SnapshotError otherwise (TypeError
    for what is not bytes)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"an exported VM is bytes, not {type(data).__name__}")
    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    if len(view) < len(MAGIC) + 1 + 4 or view[:len(MAGIC)] != MAGIC:
        raise SnapshotError("not an exported pasid VM")
    version = view[len(MAGIC)]
    if version != VERSION:
        raise SnapshotError(f"exported VM format version {version} is not supported "
                            f"(this reads {VERSION})")
    (crc,) = struct.unpack("<I", view[-4:])
    if zlib.crc32(view[:-4]) != crc:
        raise SnapshotError("exported VM checksum mismatch: corrupt or truncated")
    values = decode(view[len(MAGIC) + 1:-4])
    if type(values) is not list or len(values) != len(FIELDS):
        raise SnapshotError("the bytes do not hold an exported VM")
    return check(dict(zip(FIELDS, values)))


def check(state: dict[str, Any]) -> dict[str, Any]:
    """A checked copy of a decoded VM: every rule ``import_vm`` relies on."""
    mode = state["mode"]
    if type(mode) is not str or mode not in _args.VM_MODES:
        _fail(f"VM mode {mode!r} is not one of {', '.join(_args.VM_MODES)}")
    bits = _int(state["bits"], 1, _args.MAX_BITS, "guest bits")
    devices = state["devices"]
    if type(devices) is not list:
        _fail("the VM's devices are not a list")
    devices = [_hashable(device, "device") for device in list(devices)]
    entries = state["entries"]
    if type(entries) is not list:
        _fail("the VM's PASIDs are not a list")
    checked = []
    last = 0
    for entry in list(entries):
        if type(entry) is not tuple or len(entry) != 5:
            _fail(f"VM PASID entry {entry!r} is not a 5-tuple")
        g, refcount, owner, data, binds = entry
        g = _int(g, last + 1, (1 << bits) - 1, "guest PASID")
        last = g
        refcount = _int(refcount, 1, _args.COUNT_MAX, f"refcount of guest PASID {g}")
        if type(binds) is not list:
            _fail(f"bindings of guest PASID {g} are not a list")
        seen = set()
        pairs = []
        for bind in list(binds):
            if type(bind) is not tuple or len(bind) != 3:
                _fail(f"binding {bind!r} of guest PASID {g} is not a 3-tuple")
            device = _int(bind[0], 0, len(devices) - 1, f"device index of guest PASID {g}")
            if device in seen:
                _fail(f"guest PASID {g} is bound twice to device {devices[device]!r}")
            seen.add(device)
            pairs.append((device, _int(bind[1], 1, _args.COUNT_MAX, "bind count"), bind[2]))
        checked.append((g, refcount, owner, data, pairs))
    if len(set(devices)) != len(devices):
        _fail("a device is listed twice")
    return {"mode": mode, "bits": bits, "devices": devices, "entries": checked}
