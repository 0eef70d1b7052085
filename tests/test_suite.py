"""The README's test command, ``python -m pytest``, runs the suite in parallel.

``tests/conftest.py`` makes ``-n auto`` (pytest-xdist, one worker a core) the default
when no ``-n`` is given; CI's suite step is that same command.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_plain_command_runs_on_xdist_workers():
    # a pytest of its own (outside this run's workers), on a few quick tests
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/test_docs.py",
         "-k", "table_of_contents"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # pytest-xdist's line: one worker a core ("auto"), each of the tests run on one
    assert re.search(r"^created: (\d+)/\1 workers$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^\d+ workers \[\d+ items\]$", proc.stdout, re.M), proc.stdout
