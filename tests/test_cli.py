"""The ``pasid`` command line: ``pasid bench`` and its errors."""

import io
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("PASID_NO_EXTENSION") == "1", reason="pasid bench measures the compiled core"
)


def test_bench_prints_every_row_with_ratios():
    from pasid import cli

    out, progress = io.StringIO(), io.StringIO()
    cli.bench(repeat=1, quick=True, out=out, progress=progress)
    rows = out.getvalue().splitlines()
    assert rows[0].split() == ["workload", "candidate", "ns/op", "vs", "pure", "IDA"]
    for workload, candidate in [("W1", "pasid.IDA"), ("W1", "pasid.PasidAllocator"),
                                ("W3", "pasid.IDA"), ("W3", "pasid.PasidAllocator")]:
        row = next(r for r in rows if r.split()[:2] == [workload, candidate])
        ns, ratio = row.split()[2:]
        assert float(ns) > 0 and ratio.endswith("x") and float(ratio[:-1]) > 1
    assert any(r.startswith("W4") and "alloc_many" in r for r in rows)
    assert "repetition 1/1" in progress.getvalue()


def test_bad_input_is_one_line_and_a_nonzero_exit():
    run = subprocess.run([sys.executable, "-m", "pasid", "bench", "--repeat", "0"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == "pasid: error: --repeat must be >= 1"
    run = subprocess.run([sys.executable, "-m", "pasid"], capture_output=True, text=True)
    assert run.returncode == 2
