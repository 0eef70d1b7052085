"""Snapshots: to_bytes/from_bytes, pickle, copy and deepcopy, on both backends.

What travels (everything but callbacks and a callable clock), that identical
state gives identical bytes whichever backend wrote them, that either backend
loads the other's, and that bad bytes raise SnapshotError and nothing else.
"""

import copy
import pickle
import base64
import random
import struct
import sys
import zlib
from pathlib import Path

import pytest

import pasid.pure
from pasid import SnapshotError, State, _snapshot

from backends import ALL_BACKENDS, load_backend
from observe import observable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import fuzzlib  # noqa: E402


def busy(backend, strategy="lowest", bits=8):
    """An allocator in every state, with owners, data, devices, bindings, quotas and holds."""
    a = backend.PasidAllocator(bits=bits, reserved=(0, (200, 209)), strategy=strategy,
                               grace=5, seed=42)
    a.add_device("gpu", drain=2.5)
    a.add_device(("nic", 0), bits=6)
    vm = a.alloc("vm", data={"ctx": [1, 2.5, None]}, max=63)
    a.bind(vm, "gpu", data=b"queue")
    a.bind(vm, ("nic", 0))
    shared = a.alloc()
    a.get(shared)
    a.get(shared)
    released = a.alloc("proc")
    a.bind(released, "gpu")
    a.free(released)                     # DRAINING
    quarantined = a.alloc("proc")
    a.free(quarantined)                  # QUARANTINED until 5
    active_hold = a.alloc()
    a.bind(active_hold, "gpu")
    a.unbind(active_hold, "gpu")         # ACTIVE with an unbind hold
    a.alloc_many(7, "batch")
    a.set_quota("vm", 1)
    a.set_quota(("tenant", 1), 0)
    a.advance(by=1.5)
    return a


@pytest.mark.parametrize("strategy", ["lowest", "cyclic", "fifo", "random"])
def test_round_trip_keeps_everything(backend, strategy):
    a = busy(backend, strategy)
    blob = a.to_bytes()
    b = backend.PasidAllocator.from_bytes(blob)
    b._check()
    assert b.to_bytes() == blob
    assert observable(b) == observable(a)
    assert b.now == a.now == 1.5
    vm = next(p for p in a if a.owner(p) == "vm")
    assert [b.binding(vm, "gpu"), b.devices(vm)] == [b"queue", ["gpu", ("nic", 0)]]
    assert b.pending("gpu") == a.pending("gpu")
    # the strategy's cursor, queue or generator travels: the next IDs agree
    assert [b.alloc() for _ in range(5)] == [a.alloc() for _ in range(5)]
    # quotas and release times travel
    assert b.try_alloc("vm") is None and a.try_alloc("vm") is None
    assert b.advance(by=10) == a.advance(by=10)
    assert b.to_bytes() == a.to_bytes()


@pytest.mark.skipif(len(ALL_BACKENDS) < 2, reason="needs both backends")
@pytest.mark.parametrize("strategy", ["lowest", "cyclic", "fifo", "random"])
def test_backends_write_the_same_bytes_and_load_each_other(strategy):
    compiled, pure = (busy(load_backend(name), strategy) for name in ("cython", "python"))
    assert compiled.to_bytes() == pure.to_bytes()
    for writer in (compiled, pure):
        for reader in (pasid._core.PasidAllocator, pasid.pure.PasidAllocator):
            loaded = reader.from_bytes(writer.to_bytes())
            loaded._check()
            assert loaded.to_bytes() == writer.to_bytes()


def test_pickle_copy_deepcopy(backend):
    a = busy(backend)
    a.alloc(owner=object())              # not plain data: fine for pickle-free copies
    for clone in (copy.copy(a), copy.deepcopy(a)):
        clone._check()
        assert observable(clone)[:4] == observable(a)[:4]
    plain = busy(backend)
    clone = pickle.loads(pickle.dumps(plain))
    assert type(clone) is type(plain)
    assert clone.to_bytes() == plain.to_bytes()
    # copy shares the owner objects, deepcopy copies them
    owner = ["mutable"]
    b = backend.PasidAllocator(bits=4)
    p = b.alloc(data=owner)
    assert copy.copy(b).data(p) is owner
    assert copy.deepcopy(b).data(p) == owner and copy.deepcopy(b).data(p) is not owner


def test_callbacks_and_callable_clock_do_not_travel(backend):
    t = [10.0]
    called = []
    a = backend.PasidAllocator(bits=4, grace=3, clock=lambda: t[0])
    a.add_device("gpu", drain=1, on_teardown=called.append)
    p = a.alloc()
    a.bind(p, "gpu")
    blob = a.to_bytes()
    b = backend.PasidAllocator.from_bytes(blob)
    assert b.now == 10.0                 # a logical clock at the saved time
    b.free(p)
    assert called == [] and b.state(p) == State.DRAINING
    b.unbind(p, "gpu")
    assert b.next_release_time() == 13.0
    assert b.advance(to=13) == 1
    # with a clock given, expired PASIDs are reclaimed lazily against it
    t2 = [20.0]
    c = backend.PasidAllocator.from_bytes(blob, clock=lambda: t2[0])
    c.free(p)
    c.unbind(p, "gpu")
    assert c.state(p) == State.QUARANTINED
    t2[0] = 23.0
    assert c.state(p) == State.FREE
    with pytest.raises(ValueError):
        c.advance(by=1)


def test_non_plain_values_raise_type_error_naming_them(backend):
    class Owner:
        def __repr__(self):
            return "<the owner>"

    a = backend.PasidAllocator(bits=4)
    a.alloc(owner=Owner())
    with pytest.raises(TypeError, match="the owner"):
        a.to_bytes()
    b = backend.PasidAllocator(bits=4)
    b.alloc(data={1, 2})
    with pytest.raises(TypeError, match="set"):
        b.to_bytes()
    c = backend.PasidAllocator(bits=4)
    c.add_device(frozenset({"x"}))
    with pytest.raises(TypeError, match="frozenset"):
        c.to_bytes()


def resealed(body):
    """Snapshot bytes around ``body`` (header and payload) with a correct checksum."""
    return body + struct.pack("<I", zlib.crc32(body))


def test_corruption_always_raises_snapshot_error(backend):
    blob = busy(backend).to_bytes()
    load = backend.PasidAllocator.from_bytes
    rnd = random.Random(7)
    cuts = sorted({0, 1, 8, 9, len(blob) - 4, len(blob) - 1} | {rnd.randrange(len(blob)) for _ in range(40)})
    for cut in cuts:
        with pytest.raises(SnapshotError):
            load(blob[:cut])
    for _ in range(200):
        at = rnd.randrange(len(blob))
        flipped = bytearray(blob)
        flipped[at] ^= 1 << rnd.randrange(8)
        with pytest.raises(SnapshotError):
            load(bytes(flipped))
        inserted = blob[:at] + bytes([rnd.randrange(256)]) + blob[at:]
        with pytest.raises(SnapshotError):
            load(inserted)
    for version in (0, _snapshot.VERSION + 1, 255):
        with pytest.raises(SnapshotError, match=f"version {version} "):
            load(resealed(_snapshot.MAGIC + bytes([version]) + blob[len(_snapshot.MAGIC) + 1:-4]))
    with pytest.raises(SnapshotError):   # a version 2 payload read as version 1
        load(resealed(_snapshot.MAGIC + b"\x01" + blob[len(_snapshot.MAGIC) + 1:-4]))
    with pytest.raises(SnapshotError):
        load(b"")
    with pytest.raises(TypeError):
        load("not bytes")


def test_resealed_garbage_raises_snapshot_error(backend):
    """Random payloads with a valid checksum: the decoder and the checks, not the CRC, must refuse them."""
    blob = busy(backend).to_bytes()
    header, payload = blob[:len(_snapshot.MAGIC) + 1], blob[len(_snapshot.MAGIC) + 1:-4]
    rnd = random.Random(11)
    refused = 0
    for _ in range(300):
        mutated = bytearray(payload)
        for _ in range(rnd.randrange(1, 4)):
            mutated[rnd.randrange(len(mutated))] = rnd.randrange(256)
        try:
            loaded = backend.PasidAllocator.from_bytes(resealed(header + bytes(mutated)))
        except SnapshotError:
            refused += 1
        else:
            loaded._check()              # what loads is consistent
    assert refused > 250


def inconsistent(backend, change):
    """Snapshot bytes of busy() with some fields replaced (``change``: a dict, or a
    function of the exported state giving one), resealed."""
    state = busy(backend)._export()
    state.update(change(state) if callable(change) else change)
    return _snapshot.dumps(state)


def owner_on_a_reserved_pasid(state):
    codes = bytearray(state["owners"])
    codes[1] = 1                         # the first row: PASID 0, RESERVED
    return {"owners": bytes(codes)}


@pytest.mark.parametrize("change, message", [
    ({"bits": 21}, "bits"),
    ({"strategy": "best"}, "strategy"),
    ({"grace": float("nan")}, "grace"),
    ({"cursor": -1}, "cursor"),
    # IDs travel as the gaps between them: a repeat is the way to write them out of order
    ({"states": _snapshot.arrays([3, 3], [2, 2], "u1")}, "ascending"),
    ({"states": _snapshot.arrays([999], [2], "u1")}, "ascending"),
    ({"states": _snapshot.arrays([3], [7], "u1")}, "state out of range"),
    ({"refcounts": _snapshot.arrays([250], [2], "<u4")}, "refcount"),
    (owner_on_a_reserved_pasid, "owner"),
    (lambda state: {"owner_keys": [["unhashable"]] + state["owner_keys"][1:]}, "hashable"),
    (lambda state: {"owner_keys": state["owner_keys"][:1] * 2 + state["owner_keys"][2:]},
     "repeated"),
    ({"owners": b"\x01"}, "as long"),
    ({"data": (_snapshot.id_column([1]), [None])}, "None"),
    ({"bindings": (_snapshot.id_column([1]), _snapshot.column([7]), _snapshot.column([1]))},
     "undeclared"),
    ({"bindings": (_snapshot.id_column([1, 1]), _snapshot.column([0, 0]),
                   _snapshot.column([1, 1]))}, "twice"),
    ({"binding_data": (_snapshot.id_column([99]), ["x"])}, "ascending"),
    ({"devices": [("gpu", 20, 0.0), ("gpu", 20, 0.0)]}, "twice"),
    ({"quotas": [(None, 3)]}, "quota"),
    ({"fifo": b"\x04\x00\x00\x00\x00"}, "fifo"),
    ({"owners": b"\x03\x00"}, "column"),
])
def test_inconsistent_snapshots_are_refused(backend, change, message):
    with pytest.raises(SnapshotError, match=message):
        backend.PasidAllocator.from_bytes(inconsistent(backend, change))


# busy(backend, strategy).to_bytes() for the four strategies, as version 1 (pasid
# 0.2.0.dev0 before the columnar format) wrote them: each a 2-byte length and the
# bytes, all zlib-compressed
V1_BUSY = """
eNrt1nd4E2UcwPHce0kLtdQWKpQhgosoDpCh7ClYlRgNKDKUJk3hNE1K78oeRVAZgjgRRaVSBWSKylBBRUCEssFB
GQ6gKlNBqzLk+8I1l/KUh8LDn708n9wvd5f3vbzv795fPMLdxpPc3uNyK4EELV6PCoT6+3UjzXZmS2xtBv+00jpr
toBDS9Lsmo1XoiG8PeQZBQIq7HAgCtEoh/KIwRWIxWp8gzVYizysw3pswEZsgreKIoRqF+amhDc6tssOvXbZJZ/q
XewtnP3GxaCX2MjWvUlF41N8b28diDGEJnTRL519lG7PyAz5iMqFo1jd4U0xfH0I46ww3gorWmGiFVa2wiQzDCiy
q1RFV33GgICqibSim3AFhDzFu6qrvTOyNOF19M3yZ/kN1RC6GtR8zKBwyTukkaJrXNb1znBTkd+INY/abLJ9+Rs1
9kRRhj+YEjQ0odlckxLiGnvOTSrfQF9A85WYVNXKkqosqS6UVHXXFxQUOoonlT1NSwuVrVNlKXVJKeXNja7ABXG4
EvFIQEVUkgOFq1AZVSDHsSqqoTpq4GrUxDWohdq4FtfhetyAG1EHTtyEm1EXt+BW3IbbUQ/1cQcaoCEaoTHuxF1o
gqZohuZogZZoBTmvbdAW7dAed6MDOuIeJONe3If70QkuPAA3HsRD8KAzuuBhPIKueBTd0B3ykeqJx/A4eiFFJhx8
SIUfciZ6ow80PIEn5cQgHUGEkIG+yIQuExlZ6If+GICBGITBGIKhGIbhyMYIPIWRGIWn8QyexWiMwViMw3MYjwl4
HhPxAl7ES3gZr+BVTMJrmIzX8Qam4E28hbcxFTl4B9OQi3fxHqZjBmbifczCbMzBXMzDfHyABfgQH+FjLMQiLMYS
fIJP8RmWYhk+xxf4EsvxFVZgJVbha2zGFmzFNnyL7/A9fsB25GMHdmIXduNH/ISf8Qv2YC/2oQC/4jf8jv04gIM4
hMM4gj/wJ47iGP7C3yiU6zX+xX84jhM4iVP4X/Z3PD/Pf+6/icyUYGoovYSlP2/FocJls7dP3qaUXAMc5pPtNrMx
ZGZUtjnDOeZolXbtzzdH5EwNkCVALVYBhJA1IL9YDSjtLYSbvqQa4DZbzLlwDYixFmynWQ6mKuEqsFmxTu+KiI9F
xNkifPl8YR2eoFrxajWyFjjPXwucpagF2eKy/7/I7VF9z2kBAx/U
"""


def version_1_snapshots():
    raw = zlib.decompress(base64.b64decode(V1_BUSY))
    blobs = []
    while raw:
        n = int.from_bytes(raw[:2], "little")
        blobs.append(raw[2:2 + n])
        raw = raw[2 + n:]
    return dict(zip(["lowest", "cyclic", "fifo", "random"], blobs))


@pytest.mark.parametrize("strategy", ["lowest", "cyclic", "fifo", "random"])
def test_version_1_snapshots_still_load(backend, strategy):
    old = version_1_snapshots()[strategy]
    assert old[len(_snapshot.MAGIC)] == 1
    now = busy(backend, strategy).to_bytes()
    assert now[len(_snapshot.MAGIC)] == 2          # no VMs: version 2, as before
    b = backend.PasidAllocator.from_bytes(old)
    b._check()
    assert b.to_bytes() == now
    # an old pickle holds a version 1 state dict: it loads the same way
    state = dict(zip(_snapshot.FIELDS_V1, _snapshot.decode(old[len(_snapshot.MAGIC) + 1:-4])))
    assert backend.PasidAllocator._from_state(state).to_bytes() == now
    # and is checked as version 1 was
    state["owners"] = [(250, "x")]
    with pytest.raises(SnapshotError, match="owner"):
        backend.PasidAllocator._from_state(state)


def test_mutated_version_1_snapshots_are_refused_or_load_whole():
    # A version 1 state is upgraded (its own shapes read, nothing the conversion
    # would drop let through) and then checked as version 2: every mutation of an
    # old snapshot is a SnapshotError or an allocator that passes _check() and saves
    # bytes that load back the same, on both backends alike (fuzz/fuzzlib.py).
    seeds = list(version_1_snapshots().values())
    src = fuzzlib.RandomSource(16)
    mods = fuzzlib.backends("both")
    outcomes = [fuzzlib.snapshot_case(src, mods, seeds, ops=4) for _ in range(300)]
    assert outcomes.count("ok") >= 10 and outcomes.count("SnapshotError") >= 100


def test_full_20_bit_space_round_trips(backend):
    a = backend.PasidAllocator(bits=20, reserved=())
    ids = a.alloc_many(1 << 20)
    a.free_many(ids[::2])
    blob = a.to_bytes()
    b = backend.PasidAllocator.from_bytes(blob)
    assert b.to_bytes() == blob
    assert len(b) == 1 << 19 and b.state(1) == State.ACTIVE and b.state(0) == State.FREE
