"""The VM simulator (pasid.sim.vms, ``pasid simulate --workload vms``): determinism, the
metrics' invariants, the command line, sweeps over the design, the plot.

The workloads are cut down (2-4 hosts, a few hundred time units) so the file runs in
seconds on the pure backend.
"""

import json

import pytest

from pasid.sim.sweep import TIMING_FIELDS, sweep
from pasid.sim.vms import MODES, VM_SIM_VERSION, VMWorkload, parse_vm_overrides, run_vms, simulate_vms, vm_preset
from sim_support import pasid_command

SMALL = vm_preset(duration=250)
TIMINGS = {"seconds", "ops_per_s", "engine"}


def engine_of(backend):
    return "compiled" if backend.__name__ == "pasid._core" else "python"


def untimed(rows):
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def pasid(*args, check=0):
    """``pasid ARGS`` (in this process: ``sim_support.pasid_command``), its exit status checked."""
    return pasid_command(*args, check=check)


# ---------------------------------------------------------------- the simulation

def test_same_seed_same_rows_other_seed_other_rows(backend):
    engine = engine_of(backend)
    first = untimed(simulate_vms(SMALL, seed=3, engine=engine))
    assert first == untimed(simulate_vms(SMALL, seed=3, engine=engine))
    assert first != untimed(simulate_vms(SMALL, seed=4, engine=engine))
    assert [row["mode"] for row in first] == list(MODES)


def test_metric_invariants(backend):
    engine = engine_of(backend)
    for seed in (0, 1):
        rows = {row["mode"]: row for row in simulate_vms(SMALL, seed=seed, engine=engine)}
        for row in rows.values():
            assert row["arrivals"] == row["allocations"] + row["alloc_refused"]
            assert row["alloc_refused"] == row["alloc_exhausted"] + row["alloc_quota"]
            assert row["migrations_attempted"] == (
                row["migrations"] + row["migrations_conflict"] + row["migrations_busy"]
                + row["migrations_refused"])
            assert row["peak_held"] >= 0 and row["peak_active"] >= 0
            # quarantine keeps every host PASID a device may still touch
            assert row["stale"] == row["stale_cross_vm"] == 0
            assert 0 <= row["stale_cross_vm_no_quarantine"] <= row["stale_no_quarantine"]
            reuse = row["guest_reuse"]
            assert reuse["count"] == 0 or 0 <= reuse["min"] <= reuse["mean"]
        # every design sees the same processes and migration attempts
        assert len({row["arrivals"] for row in rows.values()}) == 1
        assert len({row["migrations_attempted"] for row in rows.values()}) == 1
        # translated keeps guest numbers: never a conflict; a global split: no one else's
        assert rows["translated"]["migrations_conflict"] == 0
        assert rows["identity-split"]["migrations_conflict"] == 0
        assert rows["identity-split"]["stale_cross_vm_no_quarantine"] == 0
        # the design's costs show in the default-sized contention
        assert rows["identity"]["migrations_conflict"] > 0
        assert rows["translated"]["migrations"] > 0


def test_the_default_preset_shows_each_designs_cost(backend):
    engine = engine_of(backend)
    rows = {row["mode"]: row for row in simulate_vms(vm_preset(), seed=0, engine=engine)}
    assert rows["identity"]["migrations_conflict"] > rows["identity"]["migrations"]
    assert rows["identity-split"]["alloc_refused"] > 0
    assert rows["translated"]["alloc_refused"] == 0
    assert rows["translated"]["guest_reuse"]["mean"] < rows["identity"]["guest_reuse"]["mean"]


def test_a_quota_refuses_guest_allocations_and_counts_them(backend):
    engine = engine_of(backend)
    [row] = simulate_vms(SMALL.with_(quota=10, mode="translated"), seed=0, engine=engine)
    assert row["alloc_quota"] > 0
    assert row["arrivals"] == row["allocations"] + row["alloc_refused"]


def test_a_runs_repr_is_one_line_with_its_distances_as_a_length():
    run = run_vms(SMALL, "translated", seed=1, engine="python")
    text = repr(run)
    assert len(run.distances) > 50 and "\n" not in text and len(text) < 600, text
    assert text.startswith("VMRun(mode='translated', quarantine=True, engine='python', ")
    assert f"distances=<list[{len(run.distances)}]>" in text and f"ops={run.ops}," in text


def test_one_host_has_no_migrations(backend):
    engine = engine_of(backend)
    for row in simulate_vms(SMALL.with_(hosts=1), seed=0, engine=engine):
        assert row["migrations_attempted"] == 0


def test_a_run_without_quarantine_is_where_stale_accesses_show(backend):
    engine = engine_of(backend)
    on = run_vms(SMALL, "translated", 2, engine=engine)
    off = run_vms(SMALL, "translated", 2, quarantine=False, engine=engine)
    assert on.stale == 0 and off.stale > 0
    assert on.arrivals == off.arrivals


def test_workload_validation_and_overrides():
    assert parse_vm_overrides(["devices=1..3", "quota=7", "mode=identity-split"]) == {
        "devices": (1, 3), "quota": 7, "mode": "identity-split"}
    with pytest.raises(ValueError, match="speed"):
        parse_vm_overrides(["speed=3"])
    with pytest.raises(ValueError, match="hosts"):
        parse_vm_overrides(["hosts=many"])
    for bad in ({"mode": "nested"}, {"hosts": 0}, {"late": 2}, {"devices": (2, 1)},
                {"strategy": "best"}, {"bits": 4}):
        with pytest.raises(ValueError):
            VMWorkload().with_(**bad)
    # the split: disjoint slices, inside the host range, the same on every host
    w = VMWorkload()
    slices = [w.split(i) for i in range(w.vm_count)]
    assert all(lo <= hi < slices[i + 1][0] for i, (lo, hi) in enumerate(slices[:-1]))
    assert slices[0][0] == 1 and slices[-1][1] < 1 << w.bits


def test_the_engine_names_a_backend():
    import pasid
    from pasid.sim.vms import allocator_class

    assert allocator_class("python") is pasid.pure.PasidAllocator
    assert allocator_class("auto") is pasid.PasidAllocator
    if pasid.BACKEND == "cython":
        import pasid._core as core

        assert allocator_class("compiled") is core.PasidAllocator
    with pytest.raises(ValueError, match="engine"):
        allocator_class("turbo")


# ---------------------------------------------------------------- the command line

def test_cli_prints_three_rows():
    out = pasid("simulate", "--workload", "vms", "--param", "duration=200").stdout
    lines = out.splitlines()
    assert lines[0].startswith("source=workload vms seed=0")
    assert lines[1].split()[:3] == ["mode", "ops/s", "migr"]
    assert [line.split()[0] for line in lines[2:5]] == list(MODES)
    assert lines[5] == ""


def test_cli_json_parses_and_repeats():
    args = ("simulate", "--workload", "vms", "--param", "duration=200", "--param", "hosts=3",
            "--seed", "2", "--json", "--engine", "python")
    doc = json.loads(pasid(*args).stdout)
    assert doc["workload"]["hosts"] == 3 and doc["seed"] == 2
    assert [row["mode"] for row in doc["rows"]] == list(MODES)
    again = json.loads(pasid(*args).stdout)
    assert untimed(doc["rows"]) == untimed(again["rows"])


def test_cli_one_mode_and_bad_input():
    doc = json.loads(pasid("simulate", "--workload", "vms", "--param", "duration=100",
                           "--param", "mode=translated", "--json").stdout)
    assert [row["mode"] for row in doc["rows"]] == ["translated"]
    for args, fragment in ((["--param", "mode=nested"], "mode"),
                           (["--param", "speed=1"], "speed"),
                           (["--strategy", "fifo"], "strategy")):
        run = pasid("simulate", "--workload", "vms", *args, check=2)
        assert run.stderr.startswith("pasid: error: ") and fragment in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1


def test_cli_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "vms.png"
    pasid("simulate", "--workload", "vms", "--param", "duration=100", "--plot", str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- sweeps

def test_sweep_over_the_design(tmp_path):
    out = tmp_path / "rows.jsonl"
    grid = {"mode": ["identity", "translated"], "duration": [150]}
    assert sweep("vms", grid, None, 2, out=out, workers=1) == 4
    assert sweep("vms", grid, None, 2, out=out, workers=1) == 0     # resumed: nothing left
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((row["params"]["mode"], row["seed_index"]) for row in rows) == [
        ("identity", 0), ("identity", 1), ("translated", 0), ("translated", 1)]
    for row in rows:
        assert row["mode"] == row["params"]["mode"] and row["workload"] == "vms"
        assert row["strategy"] == "lowest" and row["generator"] == VM_SIM_VERSION
    # the same point again, as one task in this process: the same rows but for timings
    first = next(row for row in rows if row["seed_index"] == 0 and row["mode"] == "translated")
    [again] = simulate_vms(vm_preset(duration=150, mode="translated"), first["seed"])
    assert {k: v for k, v in first.items() if k in again and k not in TIMING_FIELDS} == {
        k: v for k, v in again.items() if k not in TIMING_FIELDS}
    # all three designs when the grid leaves mode out; strategies belong to the grid
    more = tmp_path / "more.jsonl"
    assert sweep("vms", {"duration": [100]}, None, 1, out=more, workers=1) == 3
    with pytest.raises(ValueError, match="strategy"):
        sweep("vms", {}, ["fifo"], 1, out=more, workers=1)


def test_cli_sweep_with_mode(tmp_path):
    out = tmp_path / "rows.jsonl"
    run = pasid("sweep", "--workload", "vms", "--param", "mode=identity,translated",
                "--param", "duration=100", "--seeds", "1", "--workers", "1", "--out", str(out))
    assert "2 rows written" in run.stderr
    modes = [json.loads(line)["mode"] for line in out.read_text().splitlines()]
    assert sorted(modes) == ["identity", "translated"]
