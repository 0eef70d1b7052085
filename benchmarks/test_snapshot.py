"""Snapshots: ``to_bytes`` and ``from_bytes`` of a half-full 20-bit allocator, both backends.

Two groups, the same state for every row:

=====================  =====================================================================
snapshot-to_bytes      ``a.to_bytes()``; the reference row pickles a plain dict of the same
                       information (``pickle.dumps``, highest protocol)
snapshot-from_bytes    ``PasidAllocator.from_bytes(blob)`` (checked whole, then built); the
                       reference row is ``pickle.loads`` of that dict's pickle
=====================  =====================================================================

The state (built once per backend per session, untimed): ``PasidAllocator(bits=20, seed=1,
grace=5)``, two devices (``"gpu"``, and ``("nic", 1)`` of 16 bits with a drain of 0.5),
then 2**19 ``alloc(("proc", i % 1000))`` -- 1000 owners taking turns -- with data
``("ctx", i)`` on every 128th; 1024 PASIDs bound to the gpu (half of them with data), 1000
to the nic; 25 bound PASIDs freed (DRAINING) and 10,000 others (QUARANTINED until 5).
Both backends hold the same state and write the same bytes (checked).

Rows: ``cy-PA`` (``pasid._core``), ``py-PA`` (``pasid.pure``), ``pickle`` (the plain
dict: per allocated PASID its state, generation, owner and data, the bindings and the
release times, as Python objects). Repetitions and rotation come from ``conftest.py``.
At the end of a timed run a table prints each row's median ms, the snapshot's size and
the targets for the compiled core (to_bytes <= 50 ms, from_bytes <= 50 ms, <= 4 MiB),
reported, not asserted; ``extra_info`` carries ``ms`` and ``bytes``. Skipped under
``PASID_NO_EXTENSION=1``.
"""

import os
import pickle
import statistics

import pytest

ROWS = ("cy-PA", "py-PA", "pickle")
GROUPS = {"to_bytes": "snapshot-to_bytes", "from_bytes": "snapshot-from_bytes"}
TARGET_MS = 50.0
TARGET_BYTES = 4 << 20
ROUNDS = {"cy-PA": 15, "py-PA": 3, "pickle": 5}

NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"


def build(module):
    """The benchmark's state on ``module``'s PasidAllocator."""
    a = module.PasidAllocator(bits=20, grace=5, seed=1)
    a.add_device("gpu")
    a.add_device(("nic", 1), bits=16, drain=0.5)
    for i in range(1 << 19):
        a.alloc(("proc", i % 1000), data=("ctx", i) if i % 128 == 0 else None)
    for p in range(1, 4097, 4):
        a.bind(p, "gpu", data=b"queue" if p % 8 == 1 else None)
    for p in range(2, 2002, 2):
        a.bind(p, ("nic", 1))
    a.free_many(range(1, 101, 4))                 # bound: DRAINING
    a.free_many(range(100_001, 110_001))          # QUARANTINED until 5
    return a


def plain(a):
    """The same information as plain Python objects, for pickle."""
    live = list(a) + [p for p in range(1, 101, 4)] + list(range(100_001, 110_001))
    return {
        "pasids": {p: (int(a.state(p)), a.generation(p), a.owner(p), a.data(p)) for p in live},
        "bindings": {p: {d: a.binding(p, d) for d in a.devices(p)} for p in range(1, 4097)
                     if a.devices(p)},
        "release_at": {p: 5.0 for p in range(100_001, 110_001)},
    }


@pytest.fixture(scope="module")
def states():
    """``{row: (allocator or plain dict, its bytes)}``, built once."""
    if NO_EXTENSION:
        pytest.skip("the benchmarks measure the compiled core (PASID_NO_EXTENSION=1)")
    import pasid._core
    import pasid.pure

    compiled, pure = build(pasid._core), build(pasid.pure)
    blob = compiled.to_bytes()
    assert pure.to_bytes() == blob
    reference = plain(compiled)
    return {"cy-PA": (compiled, blob), "py-PA": (pure, blob),
            "pickle": (reference, pickle.dumps(reference, pickle.HIGHEST_PROTOCOL))}


@pytest.fixture(scope="module")
def results(write_table):
    """``results[(kind, row)][rep]`` = ms; printed as a table at the end."""
    samples = {}
    sizes = {}
    yield samples, sizes
    if samples:
        write_table(summary(samples, sizes))


def summary(samples, sizes):
    lines = ["Snapshots of a half-full 20-bit allocator, 1000 owners, median ms:"]
    for kind, group in GROUPS.items():
        row_ms = {row: statistics.median(samples[(kind, row)].values())
                  for row in ROWS if (kind, row) in samples}
        lines.append(f"  {group:<20} " + "   ".join(
            f"{row} {ms:8.2f} ms" for row, ms in row_ms.items()))
        if "cy-PA" in row_ms:
            ok = "PASS" if row_ms["cy-PA"] <= TARGET_MS else "FAIL"
            lines.append(f"  {'':<20} {ok} target cy-PA <= {TARGET_MS:g} ms")
    for row, size in sizes.items():
        lines.append(f"  size {row:<15} {size / 2**20:8.2f} MiB" + (
            f"   {'PASS' if size <= TARGET_BYTES else 'FAIL'} target <= 4 MiB"
            if row == "snapshot" else ""))
    return lines


def body(kind, row, obj, blob):
    """The timed call and its arguments."""
    if row == "pickle":
        if kind == "to_bytes":
            return pickle.dumps, (obj, pickle.HIGHEST_PROTOCOL)
        return pickle.loads, (blob,)
    if kind == "to_bytes":
        return type(obj).to_bytes, (obj,)
    return type(obj).from_bytes, (blob,)


@pytest.mark.variants(*ROWS)
@pytest.mark.parametrize("kind", list(GROUPS))
def test_snapshot(benchmark, kind, rep, variant, states, results, disabled):
    """to_bytes / from_bytes of the half-full allocator (pickle of a plain dict for reference)."""
    benchmark.group = GROUPS[kind]
    obj, blob = states[variant]
    function, args = body(kind, variant, obj, blob)
    result = benchmark.pedantic(function, args=args, rounds=1 if disabled else ROUNDS[variant],
                                warmup_rounds=0 if disabled else 1)
    if variant == "pickle":
        assert (result == blob) if kind == "to_bytes" else (result == obj)
    elif kind == "to_bytes":
        assert result == blob
    else:
        assert type(result) is type(obj) and result.to_bytes() == blob
    samples, sizes = results
    sizes["snapshot" if variant != "pickle" else "pickle"] = len(blob)
    info = benchmark.extra_info
    info.update(group=GROUPS[kind], rep=rep, row=variant, bytes=len(blob))
    if not disabled and benchmark.stats is not None:
        ms = benchmark.stats.stats.median * 1e3
        info["ms"] = ms
        samples.setdefault((kind, variant), {})[rep] = ms
