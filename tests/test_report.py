"""``pasid report`` and the summary at the end of ``pasid sweep`` (pasid.sim.report)."""

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from pasid.sim.report import METRICS, format_summary, read_rows, summarise
from sim_support import pasid_command as pasid

ROOT = Path(__file__).resolve().parent.parent
# 2 points x 2 seeds x 2 strategies, in a fraction of a second on either backend
TINY_SWEEP = ["--param", "bits=10", "--param", "duration=300", "--param", "lifetime=50",
              "--param", "arrival=0.1,0.2", "--seeds", "2", "--strategy", "lowest",
              "--strategy", "fifo", "--workers", "1"]


def one_error_line(run, *fragments):
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and lines[0].startswith("pasid: error: "), run.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(the rows file of the tiny sweep, the sweep's run)."""
    out = tmp_path_factory.mktemp("report") / "rows.jsonl"
    return out, pasid("sweep", *TINY_SWEEP, "--out", str(out), check=0)


def field(row, name):
    for part in name.split("."):
        row = row[part]
    return row


def expected_cells(rows, arrival, strategy):
    """The metric cells of one point and strategy, computed here from the rows."""
    mine = [r for r in rows if r["params"]["arrival"] == arrival and r["strategy"] == strategy]
    assert len(mine) == 2
    cells = []
    for name, _ in METRICS:
        values = [field(r, name) for r in mine if field(r, name) is not None]
        if not values:
            cells.append("-")
            continue
        mean, low, high = statistics.fmean(values), min(values), max(values)
        cell = f"{mean:.4g}" if low == high else f"{mean:.4g} ({low:.4g}..{high:.4g})"
        cells.append(cell + (f" [n={len(values)}]" if len(values) == 1 else ""))
    return cells


def table_cells(stdout):
    """{(arrival, strategy): [seeds, metric cells...]} from a printed table."""
    lines = stdout.splitlines()
    head = lines[1]
    starts = [m.end() for m in re.finditer(r"\S+(?: \S+)?(?=  |$)", head)]   # right edges
    cells = {}
    for line in lines[2:]:
        if not line.strip():
            break
        parts, left = [], 0
        for right in starts:
            parts.append(line[left:right].strip())
            left = right
        cells[(float(parts[0]), parts[1])] = parts[2:]
    return cells


def test_a_sweep_ends_with_its_summary(swept):
    out, run = swept
    rows = read_rows(out)
    assert len(rows) == 8
    lines = run.stdout.splitlines()
    assert lines[0] == ("workload default (generator 2), bits=10 duration=300.0 lifetime=50.0; "
                        "each metric: mean (min..max) over the seeds")
    assert lines[1].split() == ["arrival", "strategy", "seeds", "fail", "held^", "reuse",
                                "median", "stale-noq", "blocks^"]
    cells = table_cells(run.stdout)
    assert list(cells) == [(0.1, "lowest"), (0.1, "fifo"), (0.2, "lowest"), (0.2, "fifo")]
    for (arrival, strategy), got in cells.items():
        assert got == ["2", *expected_cells(rows, arrival, strategy)], (arrival, strategy)
    assert "8 rows written to" in run.stderr


def test_report_prints_what_the_sweep_printed(swept):
    out, run = swept
    assert pasid("report", str(out), check=0).stdout == run.stdout


def test_the_sweep_summary_is_of_its_own_grid(swept, tmp_path):
    # rows of another grid and strategy in the same file are not this sweep's summary;
    # pasid report shows the whole file
    out, _ = swept
    mixed = tmp_path / "rows.jsonl"
    mixed.write_bytes(out.read_bytes())
    other = pasid("sweep", *TINY_SWEEP[:6], "--param", "arrival=0.3", "--seeds", "1",
                  "--strategy", "cyclic", "--workers", "1", "--out", str(mixed), check=0)
    lines = other.stdout.splitlines()
    assert lines[0].startswith("workload default (generator 2), arrival=0.3 bits=10 ")
    assert len(lines) == 3 and lines[2].split()[:2] == ["cyclic", "1"]     # one point, 1 seed
    assert len(table_cells(pasid("report", str(mixed), check=0).stdout)) == 5


def test_report_plots(swept, tmp_path):
    pytest.importorskip("matplotlib")
    out, _ = swept
    png = tmp_path / "sweep.png"
    pasid("report", str(out), "--plot", str(png), check=0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_errors_name_the_file_and_line(tmp_path):
    missing = tmp_path / "none.jsonl"
    one_error_line(pasid("report", str(missing)), str(missing))
    bad = tmp_path / "bad.jsonl"
    row = {"workload": "default", "params": {}, "root_seed": 0, "seed_index": 0,
           "strategy": "lowest", "failures": 0}
    bad.write_text(json.dumps(row) + "\n\n{not json\n" + json.dumps(row) + "\n")
    one_error_line(pasid("report", str(bad)), f"{bad}:3: not a JSON line")
    bad.write_text(json.dumps(row) + '\n{"workload": "default"}\n')
    one_error_line(pasid("report", str(bad)), f"{bad}:2: not a sweep row",
                   "params, root_seed, seed_index, strategy")
    bad.write_bytes(b"\x7fELF\x02\x01\x01\x00\xd0\xff\n")
    one_error_line(pasid("report", str(bad)), f"{bad}:1: not UTF-8 text")
    bad.write_text("\n")
    one_error_line(pasid("report", str(bad)), f"{bad}: no sweep rows")
    one_error_line(pasid("report", str(tmp_path)), str(tmp_path))
    bad.write_text(json.dumps(row) + "\n")
    one_error_line(pasid("report", str(bad), "--workload", "vms"),
                   "no rows of workload 'vms' (it has default)")
    two = tmp_path / "two.jsonl"
    two.write_text(json.dumps(row) + "\n" + json.dumps({**row, "workload": "exhaustion"}) + "\n")
    pytest.importorskip("matplotlib")
    one_error_line(pasid("report", str(two), "--plot", str(tmp_path / "x.png")),
                   "a plot shows one workload", "--workload NAME")
    assert not (tmp_path / "x.png").exists()
    pasid("report", str(two), "--workload", "exhaustion", "--plot", str(tmp_path / "x.png"),
          check=0)


def test_a_last_line_cut_short_is_left_out(swept, tmp_path):
    out, _ = swept
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(out.read_bytes() + b'{"workload": "def')       # a write cut short
    assert read_rows(cut) == read_rows(out)


def test_summarise_counts_a_key_twice_once_and_skips_missing_values():
    row = {"workload": "default", "params": {"grace": 10}, "root_seed": 0, "strategy": "fifo",
           "peak_held": 5, "failures": 1, "reuse": {"median": None}, "stale_no_quarantine": 0,
           "blocks_peak": 2}
    rows = [{**row, "seed_index": 0}, {**row, "seed_index": 0, "failures": 99},
            {**row, "seed_index": 1, "failures": 3, "reuse": {"median": 8.0}}]
    [group] = summarise(rows)
    assert group.seeds == 2
    assert (group.metrics["failures"].mean, group.metrics["failures"].stdev) == (2.0, 2 ** 0.5)
    assert group.metrics["reuse.median"].n == 1
    assert format_summary([group]).splitlines()[2].split() == [
        "fifo", "2", "2", "(1..3)", "5", "8", "[n=1]", "0", "2"]


def test_vm_rows_are_summed_up_per_strategy_and_design():
    row = {"workload": "vms", "params": {"strategy": "fifo"}, "root_seed": 0, "seed_index": 0,
           "strategy": "fifo", "alloc_refused": 4, "migrations": 2, "peak_held": 7,
           "guest_reuse": {"mean": 3.5}, "stale_no_quarantine": 1,
           "stale_cross_vm_no_quarantine": 0}
    rows = [{**row, "mode": mode} for mode in ("identity", "translated")]
    text = format_summary(summarise(rows))
    lines = text.splitlines()
    assert lines[1].split() == ["strategy", "mode", "seeds", "alloc-fail", "migr", "held^",
                                "reuse", "mean", "stale-noq", "x-vm-noq"]
    assert lines[2].split() == ["fifo", "identity", "1", "4", "2", "7", "3.5", "1", "0"]


def readme_pandas_snippet():
    text = (ROOT / "README.md").read_text()
    start = text.index("import pandas as pd")
    start = text.rindex("```python\n", 0, start) + len("```python\n")
    return text[start:text.index("```", start)]


def test_the_readmes_pandas_snippet_runs(tmp_path):
    # pandas is not a dependency of pasid: the snippet runs where it is installed
    snippet = readme_pandas_snippet()
    assert "pd.json_normalize" in snippet
    pytest.importorskip("pandas", reason="pandas is not installed: the README's pandas "
                                         "snippet is not run")
    pasid("sweep", "--param", "grace=0,10", "--param", "duration=2000", "--seeds", "2",
          "--workers", "1", "--out", str(tmp_path / "rows.jsonl"), check=0)
    run = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "peak_held" in lines[0] and "reuse.median" in lines[0]
    # three heading lines, then 2 points x 4 strategies, the point named on its first row
    assert [line.split()[0] for line in lines[3:]] == [
        "0.0", "fifo", "lowest", "random", "10.0", "fifo", "lowest", "random"]
    assert [len(line.split()) for line in lines[3:]] == [6, 5, 5, 5, 6, 5, 5, 5]
