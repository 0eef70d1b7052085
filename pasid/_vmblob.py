"""A VM's migration blob (``GuestSpace.export`` / ``PasidAllocator.import_vm``): one format,
both backends.

The container is the snapshots' (:mod:`pasid._snapshot`): a magic, a version
byte, a payload in its tagged encoding (plain data; nothing is executed on
load), a CRC-32 of all before it::

    b"PASIDVM\\0"  version (1 byte)  payload  CRC-32 (4 bytes, little-endian)

The payload is columnar, as snapshots are (:func:`pasid._snapshot.column`,
:func:`~pasid._snapshot.id_column`): what there is one of per guest PASID
travels as byte columns numpy reads and writes whole, and only the user's
objects as tagged values. In order (``FIELDS``): the VM's mode and guest width,
its devices' names; the ACTIVE guest PASIDs (an ID column, ascending) and their
refcounts (a column, a row each); the rows with an owner tag and their tags; the
rows with data and their data; the bindings (row, device index, count: three
columns, the rows ascending, each row's in bind order) and the binding rows with
data and their data. :func:`loads` checks it whole before a backend builds from
it, copying what it reads, so bad bytes are a :class:`~pasid.SnapshotError` and
never reach C code.

The dict a backend exports and :func:`loads` returns holds the columns as numpy
arrays (int64): ``guests``, ``refcounts``, ``tags`` and ``data`` (rows, [objects]),
``bindings`` (rows, devices, counts) and ``binding_data`` (binding indexes,
[objects]).

>>> import numpy as np
>>> state = {"mode": "translated", "bits": 8, "devices": ["vf0"],
...          "guests": np.array([1, 5]), "refcounts": np.array([2, 1]),
...          "tags": (np.array([0]), ["proc"]), "data": (np.array([], dtype=int), []),
...          "bindings": (np.array([1]), np.array([0]), np.array([1])),
...          "binding_data": (np.array([0]), ["ctx"])}
>>> back = loads(dumps(state))
>>> back["guests"].tolist(), back["refcounts"].tolist(), back["tags"][1], back["binding_data"][1]
([1, 5], [2, 1], ['proc'], ['ctx'])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pasid import _args
from pasid._errors import SnapshotError
from pasid._snapshot import (_column, _fail, _hashable, _ids, _int, _objects, _sequence, column,
                             id_column, read_frame, write_frame)

__all__ = ["MAGIC", "VERSION", "dumps", "loads"]

MAGIC = b"PASIDVM\0"
VERSION = 1
FIELDS = ("mode", "bits", "devices", "guests", "refcounts", "tags", "data", "bindings",
          "binding_data")

def dumps(state: dict[str, Any]) -> bytes:
    """An exported VM (a dict with the keys of ``FIELDS``, its columns as arrays) as bytes."""
    rows, devices, counts = state["bindings"]
    values = [state["mode"], state["bits"], list(state["devices"]),
              id_column(state["guests"]), column(state["refcounts"]),
              (id_column(state["tags"][0]), list(state["tags"][1])),
              (id_column(state["data"][0]), list(state["data"][1])),
              (id_column(rows), column(devices), column(counts)),
              (id_column(state["binding_data"][0]), list(state["binding_data"][1]))]
    return write_frame(MAGIC, VERSION, values)


def loads(data: Any) -> dict[str, Any]:
    """The exported VM in ``data``, checked whole; SnapshotError otherwise (TypeError
    for what is not bytes)."""
    _, values = read_frame(data, MAGIC, (VERSION,), "VM export")
    if type(values) is not list or len(values) != len(FIELDS):
        raise SnapshotError("the bytes do not hold an exported VM")
    return check(dict(zip(FIELDS, values)))


def check(state: dict[str, Any]) -> dict[str, Any]:
    """A checked copy of a decoded VM: every rule ``import_vm`` relies on."""
    mode = state["mode"]
    if type(mode) is not str or mode not in _args.VM_MODES:
        _fail(f"VM mode {mode!r} is not one of {', '.join(_args.VM_MODES)}")
    bits = _int(state["bits"], 1, _args.MAX_BITS, "guest bits")
    if type(state["devices"]) is not list:
        _fail("the VM's devices are not a list")
    devices = [_hashable(device, "device") for device in list(state["devices"])]
    if len(set(devices)) != len(devices):
        _fail("a device is listed twice")
    guests: npt.NDArray[np.int64] = _ids(state["guests"], 1 << bits, "guest PASIDs")
    if guests.size and guests[0] == 0:
        _fail("guest PASID 0 is no guest's")
    n = int(guests.size)
    refcounts = _column(state["refcounts"], "refcounts").astype(np.int64)
    if refcounts.size != n or (n and (refcounts.min() < 1 or refcounts.max() > _args.COUNT_MAX)):
        _fail(f"refcounts are not {n} counts in 1..{_args.COUNT_MAX}")
    tags = _objects(state["tags"], n, "owner tags")
    data = _objects(state["data"], n, "data")
    rows_raw, devices_raw, counts_raw = _sequence(state["bindings"], 3, "bindings")
    rows: npt.NDArray[np.int64] = _ids(rows_raw, n, "binding rows", repeats=True)
    bound_to = _column(devices_raw, "binding devices").astype(np.int64)
    counts = _column(counts_raw, "binding counts").astype(np.int64)
    if bound_to.size != rows.size or counts.size != rows.size:
        _fail("binding columns have mismatched lengths")
    if rows.size and (bound_to.max() >= len(devices) or counts.min() < 1
                      or counts.max() > _args.COUNT_MAX):
        _fail("a binding names no device of the VM or has a count outside "
              f"1..{_args.COUNT_MAX}")
    pairs = rows * (len(devices) + 1) + bound_to
    if np.unique(pairs).size != pairs.size:
        _fail("a guest PASID is bound twice to one device")
    binding_data = _objects(state["binding_data"], int(rows.size), "binding data")
    return {"mode": mode, "bits": bits, "devices": devices, "guests": guests,
            "refcounts": refcounts, "tags": tags, "data": data,
            "bindings": (rows, bound_to, counts), "binding_data": binding_data}
