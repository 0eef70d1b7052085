"""The ``pasid`` command line: exit codes, output, files, bad input.

Run in this process (``sim_support.pasid_command``), and in a Python of its own where the
process is what is tested: the entry point and its exit status, environment variables
read as the interpreter starts (``PASID_NO_EXTENSION``, ``PYTHONPATH``), progress settings.
"""

import json
import os
import struct
import sys

import pytest

from sim_support import HAND_TRACE, pasid_command as pasid

NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"
ROW_KEYS = {"strategy", "ops", "seconds", "ops_per_s", "engine", "allocations", "failures",
            "skipped", "peak_active", "peak_held", "reuse", "stale", "stale_no_quarantine",
            "blocks_peak", "highest"}
TIMINGS = ("seconds", "ops_per_s", "engine")
# a simulation small enough for the pure backend (which replays ~30x slower)
SMALL = ["--bits", "12", "--param", "duration=300"]


def one_error_line(run, fragment):
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and lines[0].startswith("pasid: error: "), run.stderr
    assert fragment in lines[0]
    assert "Traceback" not in run.stderr


@pytest.fixture
def trace_file():
    return HAND_TRACE


def without_timings(rows):
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def test_version_and_help():
    for process in (True, False):       # python -m pasid, and pasid.cli.main
        run = pasid("--version", process=process, check=0)
        assert run.stdout.startswith("pasid 0.")
    for command in ("simulate", "replay", "sweep", "report", "bench"):
        assert command in pasid("--help", check=0).stdout
        assert "usage: pasid " + command in pasid(command, "--help", check=0).stdout


def test_help_works_without_the_extension():
    env = {"PASID_NO_EXTENSION": "1"}
    assert "simulate" in pasid("--help", env=env, check=0).stdout
    one_error_line(pasid("bench", env=env), "compiled core")


def test_replay_prints_a_row_per_strategy(trace_file):
    run = pasid("replay", str(trace_file), check=0)
    lines = run.stdout.splitlines()
    assert lines[1].split()[0] == "strategy"
    assert [line.split()[0] for line in lines[2:6]] == ["lowest", "cyclic", "fifo", "random"]
    lowest = lines[2].split()
    assert lowest[-4:] == ["0", "1", "1", "3"]      # stale, stale-noq, blocks, highest


def test_replay_json_schema(trace_file):
    run = pasid("replay", str(trace_file), "--json", "--strategy", "lowest",
                "--strategy", "fifo", check=0)
    doc = json.loads(run.stdout)
    assert doc["backend"] in ("cython", "python") and doc["ops"] == 15
    assert [row["strategy"] for row in doc["rows"]] == ["lowest", "fifo"]
    row = doc["rows"][0]
    assert set(row) == ROW_KEYS
    assert set(row["reuse"]) == {"count", "min", "p1", "median", "hist"}
    assert row["reuse"]["count"] == 2 and row["reuse"]["median"] == 4.5
    assert (row["stale"], row["stale_no_quarantine"]) == (0, 1)


def test_plot_writes_a_png(trace_file, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "out.png"
    pasid("replay", str(trace_file), "--plot", str(png), check=0)
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 800 and height >= 300


@pytest.mark.parametrize("args, fragment", [
    (["replay", "/nonexistent/trace"], "No such file"),
    (["replay", "TRACE", "--strategy", "best"],
     "strategy must be one of lowest, cyclic, fifo, random, got 'best'"),
    (["replay"], "the following arguments are required: trace"),
    (["simulate", "--workload", "nope"], "nope"),
    (["simulate", "--bits", "x"], "--bits"),
    (["simulate", "--bits", "30"], "bits"),
    (["simulate", "--param", "arrival"], "arrival"),
    (["simulate", "--param", "speed=3"], "speed"),
    (["simulate", "--grace", "-1"], "grace"),
    (["sweep", "--out", "X", "--param", "grace"], "--param"),
    (["bench", "--repeat", "0"], "--repeat"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment, trace_file, tmp_path):
    args = [str(trace_file) if a == "TRACE" else a for a in args]
    args = [str(tmp_path / "rows.jsonl") if a == "X" else a for a in args]
    if NO_EXTENSION and args[:1] == ["bench"]:
        fragment = "compiled core"
    one_error_line(pasid(*args), fragment)


# issue 20: what a command will write is checked before it runs (a workload of 1e12
# time units would run for days), with one line naming the option and the path
@pytest.mark.parametrize("args, fragment", [
    (["simulate", "--plot", "T/nodir/x.png"], "--plot T/nodir/x.png: T/nodir does not exist"),
    (["simulate", "--plot", "T/adir"], "--plot T/adir: is a directory (name a file in it)"),
    (["simulate", "--plot", "T/afile/x.png"], "--plot T/afile/x.png: T/afile is not a directory"),
    (["simulate", "--plot", "T/x"], "--plot T/x: no suffix to name the image format"),
    (["simulate", "--plot", "T/x.foo"], "--plot T/x.foo: matplotlib does not write .foo"),
    (["simulate", "--record", "T/nodir/r.trace"], "--record T/nodir/r.trace: T/nodir does not"),
    (["simulate", "--record", "T/adir"], "--record T/adir: is a directory"),
    (["simulate", "--plot", "T/x.png", "--record", "T/./x.png"],
     "--record T/./x.png: the same file as --plot"),
    (["replay", "T/afile", "--plot", "T/afile"], "--plot T/afile: the same file as the trace "
                                                 "replayed"),
    (["sweep", "--param", "grace=0,1", "--out", "T/adir"], "--out T/adir: is a directory"),
    (["sweep", "--param", "grace=0,1", "--out", "T/nodir/rows.jsonl"],
     "--out T/nodir/rows.jsonl: T/nodir does not exist"),
])
def test_output_files_are_checked_before_any_work(args, fragment, tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("pasid-trace 1\n")
    before = sorted(tmp_path.rglob("*"))
    args = [a.replace("T/", f"{tmp_path}/") for a in args]
    if args[0] in ("simulate", "sweep"):
        args += ["--param", "duration=1e12"]
    run = pasid(*args)
    one_error_line(run, fragment.replace("T/", f"{tmp_path}/"))
    assert run.stdout == "" and sorted(tmp_path.rglob("*")) == before


def test_a_plot_without_matplotlib_is_refused_before_any_work(tmp_path):
    hidden = tmp_path / "hidden" / "matplotlib"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    run = pasid("simulate", "--param", "duration=1e12", "--plot", str(tmp_path / "x.png"),
                env={"PYTHONPATH": os.pathsep.join(filter(None, [
                    str(tmp_path / "hidden"), os.environ.get("PYTHONPATH")]))})
    one_error_line(run, f"--plot {tmp_path / 'x.png'}: plots need matplotlib: "
                        "pip install 'pasid[plot]'")


@pytest.mark.parametrize("name, data, fragment", [
    ("bin.trace", b"pasid-trace 1\n\x7fELF\x02\x01\x01\x00\xd0\xd0\n",
     "bin.trace:2: not UTF-8 text"),
    ("vm.trace", b"pasid-trace 2\nbits 10\n\xd0\xd0\n", "vm.trace:3: not UTF-8 text"),
    ("binary.trace", bytes(range(256)), "binary.trace:1: not a trace"),
    ("empty.trace", b"", "empty.trace: empty trace"),
    ("typo.trace", b"pasid-trace 1\ndevice gpu1\n0 alloc h0\n1 bind h0 gpu11\n",
     "typo.trace:4: unknown device 'gpu11': the header declares gpu1"),
], ids=lambda value: value if isinstance(value, str) and value.endswith(".trace") else "")
def test_every_trace_error_names_the_file(name, data, fragment, tmp_path):
    path = tmp_path / name
    path.write_bytes(data)
    one_error_line(pasid("replay", str(path)), f"{tmp_path}/{fragment}")


def test_a_bad_trace_line_is_named(tmp_path):
    path = tmp_path / "bad.trace"
    path.write_text("pasid-trace 1\n0 alloc h0\n1 put h0\n2 put h0\n")
    one_error_line(pasid("replay", str(path)), f"{path}:4: put of handle 'h0'")


def test_a_trace_time_beyond_the_allocators_limit_is_named(tmp_path):
    # before the check knew the limit, the replay ran two operations and then stopped
    # on the allocator's error, with no line
    path = tmp_path / "far.trace"
    path.write_text("pasid-trace 1\n0 alloc h0\n0 get h0\n1e301 put h0\n")
    run = pasid("replay", str(path))
    one_error_line(run, f"{path}:4: time must be finite and within +-1e300")
    assert run.stdout == ""


def test_simulate_records_a_trace_that_replays_to_the_same_rows(tmp_path):
    trace = tmp_path / "default.trace"
    simulated = pasid("simulate", *SMALL, "--seed", "3", "--json", "--record", str(trace),
                      check=0)
    replayed = pasid("replay", str(trace), "--seed", "3", "--json", check=0)
    rows = json.loads(simulated.stdout)["rows"]
    assert [r["strategy"] for r in rows] == ["lowest", "cyclic", "fifo", "random"]
    assert without_timings(rows) == without_timings(json.loads(replayed.stdout)["rows"])
    assert trace.read_text().startswith("pasid-trace 1\n")


@pytest.mark.skipif(NO_EXTENSION, reason="compares the two backends")
def test_same_seed_same_output_on_both_backends():
    runs = [pasid("simulate", *SMALL, "--seed", "5", "--json", env=env, check=0)
            for env in ({}, {"PASID_NO_EXTENSION": "1"})]
    docs = [json.loads(run.stdout) for run in runs]
    assert [d["backend"] for d in docs] == ["cython", "python"]
    assert without_timings(docs[0]["rows"]) == without_timings(docs[1]["rows"])
    again = json.loads(pasid("simulate", *SMALL, "--seed", "5", "--json", check=0).stdout)
    assert without_timings(again["rows"]) == without_timings(docs[0]["rows"])
    other = json.loads(pasid("simulate", *SMALL, "--seed", "6", "--json", check=0).stdout)
    assert without_timings(other["rows"]) != without_timings(docs[0]["rows"])


def test_simulate_presets_and_options():
    for workload in ("exhaustion", "vm-churn"):
        doc = json.loads(pasid("simulate", "--workload", workload, "--param", "duration=200",
                               "--strategy", "lowest", "--json", check=0).stdout)
        assert doc["source"] == f"workload {workload}" and len(doc["rows"]) == 1
    doc = json.loads(pasid("simulate", *SMALL, "--grace", "7", "--drain", "0",
                           "--strategy", "fifo", "--json", check=0).stdout)
    assert doc["workload"]["grace"] == 7.0 and doc["workload"]["bits"] == 12


def test_python_engine_matches_compiled(trace_file):
    rows = [json.loads(pasid("replay", str(trace_file), "--json", "--engine", engine,
                             check=0).stdout)["rows"]
            for engine in (("python",) if NO_EXTENSION else ("python", "compiled"))]
    assert all(without_timings(r) == without_timings(rows[0]) for r in rows)


def test_progress_shows_operations_rate_and_time_left(monkeypatch):
    # a run longer than a second shows, on a terminal, the operations done, the rate
    # and, with a total (an estimate for a workload), the time left; tqdm if installed
    import io
    import time as clock

    from pasid import cli

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setitem(sys.modules, "tqdm", None)      # the plain line
    now = [100.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    stream = Terminal()
    progress = cli.Progress("simulate", stream)
    progress(1000, 10_000)
    assert stream.getvalue() == ""                      # nothing in the first second
    now[0] += 2.0
    progress(2_000_000, 10_000_000)
    line = stream.getvalue()
    assert "simulate: 2.00M/10.00M, 1.00M/s, about 8 s left" in line
    progress(12_000_000, 10_000_000)                    # past the estimate: no total
    assert stream.getvalue().rsplit("\r", 1)[1].startswith("simulate: 12.00M, 6.00M/s")
    progress.close()


def test_simulate_reports_progress_by_operations():
    from pasid.sim.replay import simulate
    from pasid.sim.workload import preset

    calls = []
    rows, _ = simulate(preset("default", duration=20_000), ["lowest", "fifo"],
                       progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == rows[0]["ops"]
    assert all(total is not None and total > 0 for _, total in calls)


def test_a_recording_stopped_by_an_error_is_removed(tmp_path):
    # simulate --record writes the trace as it is replayed; if the chunks stop with an
    # error, the partial file goes (text and binary alike)
    from pasid.sim.trace import read_trace
    from pasid.sim.traceio import recorded
    from pasid.sim.workload import preset, stream

    for name in ("run.trace", "run.npz"):
        header, chunks = stream(preset("default", duration=20_000), 1)
        path = tmp_path / name
        taken = recorded(path, header, chunks)
        next(taken)
        assert path.exists()
        with pytest.raises(KeyboardInterrupt):
            taken.throw(KeyboardInterrupt)
        assert not path.exists()
        header, chunks = stream(preset("default", duration=2000), 1)
        whole = list(recorded(path, header, chunks))         # and to the end: kept, whole
        assert sum(map(len, whole)) == len(read_trace(path))


def test_simulate_refuses_what_is_not_a_trace_or_a_workload():
    from pasid.sim.replay import simulate

    with pytest.raises(TypeError, match="simulate needs a Trace, a Workload or a TraceStream"):
        simulate("default")


# ---------------------------------------------------------------- progress in a log

TINY_SWEEP = ["--param", "bits=10", "--param", "duration=200", "--param", "lifetime=50",
              "--param", "arrival=0.1,0.2", "--seeds", "2", "--strategy", "lowest",
              "--strategy", "fifo", "--workers", "1"]


def progress_lines(stderr, command):
    return [line for line in stderr.splitlines() if line.startswith(f"{command}: ")]


def test_sweep_prints_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    # stderr piped (a CI log, | tee): plain lines, n/N, elapsed, an estimate; every update
    # with PASID_PROGRESS_EVERY=0 (by default at most one every 5 s, none in the first 5 s)
    run = pasid("sweep", *TINY_SWEEP, "--out", str(tmp_path / "rows.jsonl"),
                env={"PASID_PROGRESS_EVERY": "0"}, check=0)
    lines = progress_lines(run.stderr, "sweep")
    assert [line.split(",")[0] for line in lines] == [f"sweep: {n}/4 tasks" for n in range(5)]
    assert all(" elapsed" in line for line in lines)
    assert all(", about " in line and line.endswith(" left") for line in lines[1:4])
    assert "\r" not in run.stderr and "\033" not in run.stderr
    assert run.stderr.splitlines()[len(lines)] == f"8 rows written to {tmp_path / 'rows.jsonl'}"
    quiet = pasid("sweep", *TINY_SWEEP, "--out", str(tmp_path / "again.jsonl"), check=0)
    assert progress_lines(quiet.stderr, "sweep") == []          # done within the first 5 s


@pytest.mark.skipif(NO_EXTENSION, reason="pasid bench measures the compiled core")
def test_bench_prints_progress_lines_when_stderr_is_not_a_terminal():
    run = pasid("bench", "--quick", "--repeat", "1", "--workload", "W6",
                env={"PASID_PROGRESS_EVERY": "0"}, check=0)
    lines = progress_lines(run.stderr, "bench")
    assert [line.split(",")[0] for line in lines] == [f"bench: {n}/2 steps" for n in range(3)]
    assert lines[0].endswith("(rep 1/1 W6-lifecycle cy-PA)") and lines[-1].endswith("(done)")
    assert "W6-lifecycle" in run.stdout and "W1-churn" not in run.stdout
    one_error_line(pasid("bench", "--workload", "W9"), "unknown workload 'W9'")


def test_a_bad_progress_interval_is_one_error_line(tmp_path):
    one_error_line(pasid("sweep", *TINY_SWEEP, "--out", str(tmp_path / "rows.jsonl"),
                         env={"PASID_PROGRESS_EVERY": "soon"}), "PASID_PROGRESS_EVERY")
    assert not (tmp_path / "rows.jsonl").exists()


def test_progress_in_a_log_is_rate_limited_and_ticks_without_updates(monkeypatch):
    import io
    import time as clock

    from pasid import cli

    now = [100.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    stream = io.StringIO()                                      # not a terminal
    progress = cli.Progress("sweep", stream, unit="tasks", every=5)
    progress(0, 10)
    now[0] += 4.0
    progress(1, 10)
    assert stream.getvalue() == ""                              # nothing in the first 5 s
    now[0] += 2.0
    progress(2, 10)
    assert stream.getvalue() == "sweep: 2/10 tasks, 6.0 s elapsed, about 24 s left\n"
    now[0] += 1.0
    progress(3, 10)                                             # 1 s after the last line
    assert stream.getvalue().count("\n") == 1
    now[0] += 113.0
    progress._log(now[0], final=False)                          # a tick (the thread's 5 s are
                                                                # real time): no update since
    assert stream.getvalue().splitlines()[-1] == (
        "sweep: 3/10 tasks, 2m 00s elapsed, about 4m 40s left")
    progress(10, 10)                                            # within 5 s of the tick
    progress.close()                                            # the last state, once
    assert stream.getvalue().splitlines()[-1] == "sweep: 10/10 tasks, 2m 00s elapsed"
    assert stream.getvalue().count("\n") == 3


def test_progress_ticks_while_no_work_finishes():
    import io
    import time

    from pasid import cli

    stream = io.StringIO()
    progress = cli.Progress("sweep", stream, unit="tasks", every=0.05)
    progress(0, 2)                                              # one slow task, no updates
    time.sleep(0.4)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("sweep: 0/2 tasks, ") for line in lines)
