"""pasid sweep: the rows, the seeds, the executors agreeing, resuming, bad grids, failing tasks,
one sweep per file, and what kill -9 and Ctrl-C leave behind.

The workload is tiny (10 bits, ~650 operations a trace) so the file runs in
seconds, on the pure backend too (``PASID_NO_EXTENSION=1``). The tests of a
sweep being killed or interrupted run ``pasid sweep`` in a session of its own,
look for what it left in /proc, and kill the whole session when they end.
"""

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import pasid
from pasid.sim import sweep as sweep_module
from pasid.sim.replay import STRATEGIES, simulate
from pasid.sim.sweep import TIMING_FIELDS, SweepError, spawn_seeds, sweep
from pasid.sim.workload import GENERATOR_VERSION, preset

TINY = preset("default").with_(bits=10, duration=500, lifetime=100, vm_lifetime=200)
GRID = {"arrival": [0.1, 0.3], "kill": [0.0, 0.5]}
IDENTITY = {"workload", "params", "root_seed", "seed_index", "seed", "strategy", "generator"}


def read_rows(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def key(row):
    return (row["workload"], json.dumps(row["params"], sort_keys=True), row["root_seed"],
            row["seed_index"], row["strategy"], row.get("generator", 1))


def untimed(rows):
    """The rows without their timing fields, in key order: what every run must reproduce."""
    stripped = [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]
    return sorted(stripped, key=key)


class FailsAtNineBits:
    """An allocator class that refuses 9-bit spaces (importable by the workers, by name)."""

    def __new__(cls, bits, **options):
        if bits == 9:
            raise RuntimeError("no allocator for 9 bits")
        return pasid.PasidAllocator(bits, **options)


@pytest.fixture
def out(tmp_path):
    return tmp_path / "rows.jsonl"


# ---------------------------------------------------------------- rows and seeds

def test_one_row_per_point_seed_and_strategy(out):
    strategies = ["lowest", "fifo", "random"]
    assert sweep(TINY, GRID, strategies, 2, root_seed=3, out=out, workers=1) == 4 * 2 * 3
    rows = read_rows(out)
    assert len(rows) == 24
    assert len({key(row) for row in rows}) == 24
    points = [{"arrival": a, "kill": k} for a in (0.1, 0.3) for k in (0.0, 0.5)]
    assert sorted((json.dumps(r["params"], sort_keys=True), r["seed_index"], r["strategy"])
                  for r in rows) == sorted(
        (json.dumps(p, sort_keys=True), i, s) for p in points for i in range(2)
        for s in strategies)
    seeds = spawn_seeds(3, 2)
    direct, _ = simulate(TINY.with_(arrival=0.3, kill=0.5), ["random"], seed=seeds[1])
    for row in rows:
        assert set(row) == IDENTITY | set(direct[0])
        assert row["workload"].startswith("default@") and len(row["workload"]) == 20
        assert row["root_seed"] == 3 and row["seed"] == seeds[row["seed_index"]]
        assert row["generator"] == GENERATOR_VERSION
        assert row["ops"] > 0
    # the metrics are simulate's for that point and seed
    (mine,) = [r for r in rows if r["params"] == {"arrival": 0.3, "kill": 0.5}
               and r["seed_index"] == 1 and r["strategy"] == "random"]
    timed = set(TIMING_FIELDS)
    assert {k: v for k, v in mine.items() if k in set(direct[0]) - timed} == {
        k: v for k, v in direct[0].items() if k not in timed}
    # one JSON object a line, keys sorted
    with open(out, encoding="utf-8") as handle:
        for line in handle:
            assert line == json.dumps(json.loads(line), sort_keys=True) + "\n"


def test_seeds_are_spawned_from_the_root():
    children = np.random.SeedSequence(11).spawn(3)
    expected = [int(child.generate_state(1, dtype=np.uint64)[0]) for child in children]
    assert spawn_seeds(11, 3) == expected
    assert spawn_seeds(11, 2) == expected[:2]               # seed i does not depend on the count
    assert len(set(expected)) == 3 and spawn_seeds(12, 3) != expected


def test_every_point_uses_the_same_seeds(out):
    sweep(TINY, {"arrival": [0.1, 0.2]}, ["cyclic"], 3, root_seed=11, out=out, workers=1)
    for row in read_rows(out):
        assert row["seed"] == spawn_seeds(11, 3)[row["seed_index"]]
    assert len(read_rows(out)) == 6


def test_an_empty_grid_is_one_point(out):
    assert sweep(TINY, {}, ["cyclic"], 2, out=out, workers=1) == 2
    assert [row["params"] for row in read_rows(out)] == [{}, {}]


def test_workload_names(out):
    small = {"bits": [10], "duration": [200], "lifetime": [50]}
    sweep("vm-churn", small, ["lowest"], 1, out=out, workers=1)
    sweep(preset("vm-churn"), small, ["fifo"], 1, out=out, workers=1)
    sweep(TINY, {"duration": [200]}, ["lowest"], 1, out=out, workers=1)
    sweep(TINY.with_(arrival=0.2), {"duration": [200]}, ["lowest"], 1, out=out, workers=1)
    names = [row["workload"] for row in read_rows(out)]
    assert names[:2] == ["vm-churn", "vm-churn"]            # a preset, by name or object
    assert names[2].startswith("default@") and names[3].startswith("default@")
    assert names[2] != names[3]                             # different workloads never mix


def test_grid_values_are_normalised_and_deduplicated(out):
    # 1, "1" and 1.0 are the same arrival rate: one point, held as the Workload holds it
    assert sweep(TINY, {"arrival": [1, "1", 1.0]}, ["lowest"], 1, out=out, workers=1) == 1
    assert read_rows(out)[0]["params"] == {"arrival": 1.0}
    assert sweep(TINY, {"arrival": ["1.0"]}, ["lowest"], 1, out=out, workers=1) == 0


def test_progress_counts_tasks(out):
    calls = []
    sweep(TINY, {"arrival": [0.1, 0.2]}, ["lowest", "fifo"], 2, out=out, workers=1,
          progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]     # 0: before the first task


# ---------------------------------------------------------------- executors

def test_serial_and_process_pool_agree(tmp_path):
    serial, pool = tmp_path / "serial.jsonl", tmp_path / "pool.jsonl"
    assert sweep(TINY, GRID, ["lowest", "random"], 2, root_seed=5, out=serial, workers=1) == 16
    assert sweep(TINY, GRID, ["lowest", "random"], 2, root_seed=5, out=pool, workers=2) == 16
    assert untimed(read_rows(pool)) == untimed(read_rows(serial))


DASK_PORTS = (8786, 8787)     # Dask's defaults: the scheduler's and its dashboard's


def hold_port(port):
    """A socket listening on 127.0.0.1:``port``, or None when something holds it already."""
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", port))
        held.listen()
    except OSError:
        held.close()
        return None
    return held


@pytest.fixture(scope="module")
def dask_scheduler():
    distributed = pytest.importorskip("distributed")
    # Every port free, none fixed: with no address the dashboard takes 8787, and where a
    # Dask dashboard already runs (another cluster, a pytest-xdist worker, another CI lane)
    # it moves with a warning, an error here. Dask's default ports are held while the
    # cluster starts (unless something holds them already), so a fixed one fails here.
    held = [hold_port(port) for port in DASK_PORTS]
    try:
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", scheduler_port=0,
                                           dashboard_address="127.0.0.1:0")
    finally:
        for sock in held:
            if sock is not None:
                sock.close()
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def test_dask_agrees_with_serial(tmp_path, dask_scheduler):
    serial, remote = tmp_path / "serial.jsonl", tmp_path / "dask.jsonl"
    assert sweep(TINY, GRID, ["cyclic", "random"], 2, root_seed=5, out=serial, workers=1) == 16
    calls = []
    assert sweep(TINY, GRID, ["cyclic", "random"], 2, root_seed=5, out=remote,
                 dask=dask_scheduler, progress=lambda *call: calls.append(call)) == 16
    assert calls == [(done, 8) for done in range(9)]            # progress on Dask too
    assert untimed(read_rows(remote)) == untimed(read_rows(serial))
    assert sweep(TINY, GRID, ["cyclic", "random"], 2, root_seed=5, out=remote,
                 dask=dask_scheduler) == 0


def test_a_task_failing_on_dask_names_it(out, dask_scheduler):
    with pytest.raises(SweepError, match=r'"bits":9.*no allocator for 9 bits'):
        sweep(TINY, {"bits": [9]}, ["lowest"], 2, out=out, dask=dask_scheduler,
              allocator=FailsAtNineBits)
    assert read_rows(out) == []


def test_dask_without_distributed_says_what_to_install(out, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)        # import distributed fails
    with pytest.raises(RuntimeError) as raised:
        sweep(TINY, {}, ["lowest"], 1, out=out, dask="tcp://127.0.0.1:1")
    assert str(raised.value) == ("pasid sweep --dask needs the 'dask' extra: "
                                 "pip install 'pasid[dask]'")
    assert not out.exists()


# ---------------------------------------------------------------- resuming

def test_a_second_run_writes_nothing(out):
    assert sweep(TINY, GRID, ["lowest", "fifo"], 2, out=out, workers=1) == 16
    before = out.read_bytes()
    calls = []
    assert sweep(TINY, GRID, ["lowest", "fifo"], 2, out=out, workers=1,
                 progress=lambda *done: calls.append(done)) == 0
    assert out.read_bytes() == before and calls == []


def test_rows_of_another_generator_version_are_run_again_and_kept(out):
    assert sweep(TINY, {}, ["cyclic", "fifo"], 1, out=out, workers=1) == 2
    old = read_rows(out)
    # a file written before rows named the generator (version 1), and one row of a later one
    old[0].pop("generator")
    old[1]["generator"] = GENERATOR_VERSION + 1
    out.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in old))
    assert sweep(TINY, {}, ["cyclic", "fifo"], 1, out=out, workers=1) == 2
    rows = read_rows(out)
    assert rows[:2] == old and [row["generator"] for row in rows[2:]] == [GENERATOR_VERSION] * 2
    assert sweep(TINY, {}, ["cyclic", "fifo"], 1, out=out, workers=1) == 0


def test_deleted_rows_are_run_again_and_nothing_else(out):
    assert sweep(TINY, GRID, ["lowest", "fifo", "random"], 2, out=out, workers=1) == 24
    original = read_rows(out)
    kept = [row for i, row in enumerate(original) if i % 5]       # drop rows 0, 5, 10, 15, 20
    dropped = [row for i, row in enumerate(original) if not i % 5]
    other = [{"note": "not a sweep row"},
             {**original[0], "workload": "someone-else"},            # another workload's row
             {**original[0], "strategy": "cyclic"}]                  # a strategy not asked now
    lines = [json.dumps(row, sort_keys=True) + "\n" for row in kept + other]
    out.write_text("".join(lines), encoding="utf-8")
    calls = []
    written = sweep(TINY, GRID, ["lowest", "fifo", "random"], 2, out=out, workers=1,
                    progress=lambda done, total: calls.append(total))
    assert written == len(dropped) == 5
    assert calls == [5] * 6           # five tasks, each lacking one strategy (and 0 done)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("".join(lines))                      # nothing before is touched
    rows = read_rows(out)
    assert untimed(rows[len(lines):]) == untimed(dropped)       # the same rows again
    assert untimed([row for row in rows if "strategy" in row and row["workload"] != "someone-else"
                    and row["strategy"] != "cyclic"]) == untimed(original)


def test_a_missing_strategy_runs_alone(tmp_path):
    partial, full = tmp_path / "partial.jsonl", tmp_path / "full.jsonl"
    assert sweep(TINY, GRID, ["lowest"], 2, out=partial, workers=1) == 8
    assert sweep(TINY, GRID, ["lowest", "random"], 2, out=partial, workers=1) == 8
    assert sweep(TINY, GRID, ["random", "lowest"], 2, out=full, workers=1) == 16
    assert untimed(read_rows(partial)) == untimed(read_rows(full))


@pytest.mark.parametrize("damage, rerun", [
    (lambda text: text[:-10], 1),                                   # the last row cut short
    (lambda text: text[:-1], 1),                                    # ... just its newline
    (lambda text: text + '{"workload": "def', 0),                   # a next row barely begun
    (lambda text: text + "not json\n", 0),                          # a last line of rubbish
])
def test_a_broken_last_line_is_dropped_and_run_again(out, damage, rerun):
    assert sweep(TINY, GRID, ["lowest", "fifo"], 1, out=out, workers=1) == 8
    original = read_rows(out)
    out.write_text(damage(out.read_text(encoding="utf-8")), encoding="utf-8")
    os.chmod(out, 0o640)
    inode = os.stat(out).st_ino
    assert sweep(TINY, GRID, ["lowest", "fifo"], 1, out=out, workers=1) == rerun
    assert untimed(read_rows(out)) == untimed(original)             # every line parses again
    assert os.stat(out).st_ino == inode                             # cut in place, not replaced
    assert os.stat(out).st_mode & 0o777 == 0o640
    assert os.listdir(out.parent) == [out.name]                     # no temporary file


def test_a_broken_line_inside_the_file_is_an_error(out):
    sweep(TINY, {}, ["lowest", "fifo"], 2, out=out, workers=1)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1][:20] + "\n"
    out.write_text("".join(lines), encoding="utf-8")
    before = out.read_bytes()
    with pytest.raises(ValueError, match=r"rows\.jsonl:2: not a JSON line"):
        sweep(TINY, {}, ["lowest", "fifo"], 2, out=out, workers=1)
    assert out.read_bytes() == before


def test_a_key_held_twice_counts_once(out):
    # two sweeps at once on one file, before the lock, could both write a row
    assert sweep(TINY, GRID, ["lowest"], 2, out=out, workers=1) == 8
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines + lines[:3]), encoding="utf-8")
    before = out.read_bytes()
    calls = []
    assert sweep(TINY, GRID, ["lowest", "fifo"], 2, out=out, workers=1,
                 progress=lambda done, total: calls.append(total)) == 8
    assert calls == [8] * 9           # every task lacks fifo alone (and 0 done)
    assert out.read_bytes().startswith(before)  # the rows already there are left as they are
    added = read_rows(out)[len(lines) + 3:]
    assert {row["strategy"] for row in added} == {"fifo"} and len({key(r) for r in added}) == 8


# ---------------------------------------------------------------- bad input and failures

@pytest.mark.parametrize("grid, message", [
    ({"nonsense": [1]}, "unknown workload parameter 'nonsense'"),
    ({"arrival": [0.1, -1]}, "arrival=-1"),
    ({"kill": [0.5, 2]}, "kill=2"),
    ({"kill": ["lots"]}, "kill='lots'"),
    ({"arrival": []}, "arrival: no values"),
    ({"arrival": 0.5}, "wants a list"),
    ({"arrival": "0.5"}, "wants a list"),
    ({"name": ["x"]}, "'name' labels the workload"),
    ({"binds": [(1, 2), (1, 9)]}, "binds="),
])
def test_a_bad_grid_is_refused_before_anything_is_written(out, grid, message):
    out.write_text('{"a": 1}\n{"cut sh', encoding="utf-8")          # even the repair waits
    with pytest.raises(ValueError, match=message):
        sweep(TINY, grid, ["lowest"], 1, out=out, workers=1)
    assert out.read_text(encoding="utf-8") == '{"a": 1}\n{"cut sh'


@pytest.mark.parametrize("arguments, error", [
    (dict(workload="nonexistent"), ValueError),
    (dict(workload=42), TypeError),
    (dict(grid=[("arrival", [1])]), TypeError),
    (dict(strategies=["lowest", "best"]), ValueError),
    (dict(strategies=[]), ValueError),
    (dict(seeds=0), ValueError),
    (dict(seeds=True), TypeError),
    (dict(root_seed=-1), ValueError),
    (dict(workers=0), ValueError),
    (dict(workers=2, dask="tcp://127.0.0.1:1"), ValueError),
])
def test_bad_arguments_are_refused(out, arguments, error):
    call = dict(workload=TINY, grid={}, strategies=["lowest"], seeds=1) | arguments
    with pytest.raises(error):
        sweep(call.pop("workload"), call.pop("grid"), call.pop("strategies"), call.pop("seeds"),
              out=out, **call)
    assert not out.exists()


def test_a_failing_task_names_its_point_and_seed_and_keeps_the_rows_before(out):
    seeds = spawn_seeds(0, 2)
    with pytest.raises(SweepError) as raised:
        sweep(TINY, {"bits": [10, 9]}, ["lowest", "fifo"], 2, out=out, workers=1,
              allocator=FailsAtNineBits)
    message = str(raised.value)
    assert '{"bits":9}' in message and "seed_index 0" in message and f"seed {seeds[0]}" in message
    assert "RuntimeError: no allocator for 9 bits" in message
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert {row["params"]["bits"] for row in read_rows(out)} == {10}
    assert len(read_rows(out)) == 4
    # a rerun with a working allocator resumes: only the 9-bit point runs
    assert sweep(TINY, {"bits": [10, 9]}, ["lowest", "fifo"], 2, out=out, workers=1) == 4


def test_a_failing_task_in_the_process_pool_propagates(out):
    with pytest.raises(SweepError, match=r'"bits":9.*seed_index \d.*no allocator for 9 bits'):
        sweep(TINY, {"bits": [9, 10]}, ["lowest"], 3, out=out, workers=2,
              allocator=FailsAtNineBits)
    assert all(row["params"] == {"bits": 10} for row in read_rows(out))


# ---------------------------------------------------------------- one sweep per file, kill -9, ^C

# Two tasks: a short point, then a long one. The pure backend replays even a small trace
# slowly, so the long task lasts tens of seconds in ~200 MB: long enough to kill a sweep in.
SLOW_SWEEP = ["--param", "bits=12", "--param", "duration=5000,300000", "--seeds", "1"]
SHORT_ROWS = 4                  # the short point's rows: one per strategy
needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def lines_in(path):
    """The complete lines in ``path`` so far (0 before it exists)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def alive_in_session(session):
    """The pids of the processes of ``session`` that have not exited (zombies left out)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()    # state ppid pgrp session ...
        except OSError:                                             # exited meanwhile
            continue
        if int(fields[3]) == session and fields[0] != b"Z":
            pids.append(int(entry))
    return pids


def without_progress(stderr):
    """A sweep's stderr without its progress lines (a sweep past 5 s prints them)."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not line.startswith("sweep: "))


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds} s")
        time.sleep(0.05)


@pytest.fixture
def start_sweep(tmp_path):
    """``start_sweep(*args)``: ``pasid sweep ARGS`` on the pure backend, in a session of its
    own, its stderr in ``process.stderr_path``. The session's processes are killed at the end.

    The tests send the sweep SIGINT: where this process ignores it (a background job of a
    shell without job control), the sweep would inherit that and ignore ^C, so they stop
    here and say why rather than time out."""
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN, (
        "SIGINT is ignored in the test process, so a sweep started from it would ignore "
        "^C: run the tests where SIGINT is not ignored")
    started = []

    def start(*args):
        stderr_path = tmp_path / f"stderr-{len(started)}"
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "pasid", "sweep", *args],
                                       env={**os.environ, "PASID_NO_EXTENSION": "1"},
                                       stdout=subprocess.DEVNULL, stderr=stderr,
                                       start_new_session=True)
        process.stderr_path = stderr_path
        started.append(process)
        return process

    yield start
    for process in started:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def test_a_file_held_by_another_sweep_is_refused_untouched(out):
    assert sweep(TINY, {}, ["lowest"], 1, out=out, workers=1) == 1
    out.write_bytes(out.read_bytes() + b'{"cut sh')             # a tail the repair would cut
    before = out.read_bytes()
    with open(out, "rb") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)       # as a sweep running on it does
        with pytest.raises(SweepError, match=r"rows\.jsonl is in use by another sweep"):
            sweep(TINY, {}, ["lowest", "fifo"], 1, out=out, workers=1)
        assert out.read_bytes() == before                       # not repaired, not appended to
    assert sweep(TINY, {}, ["lowest", "fifo"], 1, out=out, workers=1) == 1


def test_a_second_sweep_on_a_file_in_use_is_refused(out, start_sweep):
    first = start_sweep(*SLOW_SWEEP, "--out", str(out), "--workers", "1")
    wait_for(lambda: lines_in(out) >= SHORT_ROWS, 60, "the first sweep's short point")
    second = start_sweep(*SLOW_SWEEP, "--out", str(out), "--workers", "1")
    assert second.wait(timeout=20) == 2
    assert without_progress(second.stderr_path.read_text()) == (
        f"pasid: error: {out} is in use by another sweep (locked); wait for it to end, "
        "or write to another file\n")
    assert first.poll() is None                                  # the first runs on, alone
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=10) == 130
    rows = read_rows(out)
    assert len(rows) == len({key(row) for row in rows}) == SHORT_ROWS


@needs_proc
def test_the_workers_end_when_the_sweep_is_killed(out, start_sweep):
    process = start_sweep(*SLOW_SWEEP, "--out", str(out), "--workers", "2")
    wait_for(lambda: lines_in(out) >= SHORT_ROWS, 60, "the short point's rows")
    # the sweep, a worker on the long point, an idle worker, the resource tracker
    assert len(alive_in_session(process.pid)) == 4
    process.kill()
    assert process.wait(timeout=10) == -signal.SIGKILL
    wait_for(lambda: not alive_in_session(process.pid), 5, "the workers ending with the sweep")


@needs_proc
@pytest.mark.parametrize("to_group", [False, True], ids=["to the sweep", "to its group"])
def test_ctrl_c_ends_the_workers_keeps_the_rows_and_exits_130(out, start_sweep, to_group):
    process = start_sweep(*SLOW_SWEEP, "--out", str(out), "--workers", "2")
    wait_for(lambda: lines_in(out) >= SHORT_ROWS, 60, "the short point's rows")
    if to_group:
        os.killpg(process.pid, signal.SIGINT)                   # as a terminal's ^C does
    else:
        process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 130                      # not after the long task
    assert without_progress(process.stderr_path.read_text()) == "pasid: interrupted\n"
    wait_for(lambda: not alive_in_session(process.pid), 5, "the workers ending with the sweep")
    rows = read_rows(out)                                       # every line parses
    assert sorted(row["strategy"] for row in rows) == sorted(STRATEGIES)
    assert all(row["params"] == {"bits": 12, "duration": 5000.0} for row in rows)
