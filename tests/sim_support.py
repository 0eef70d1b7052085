"""What the simulator tests share: the replay engines to run on, and the hand-worked trace.

``ENGINES``: ``(engine, allocator)`` pairs, every one this run can load (the tests that
compare the engines with each other); ``TESTED_ENGINES``: those whose allocator is one of
``PASID_TEST_BACKENDS``'s (``tests/backends.py``), for the tests run once per pair.

``pasid_command``: the ``pasid`` command line, run for a test.

``compiled``: the C loop over the compiled allocator (``pasid.sim._replay``);
``python``: one public-API call per operation, over either allocator. Under
``PASID_NO_EXTENSION=1`` only the pure pair runs; otherwise a compiled loop or
core that fails to import fails the tests that ask for it, never a skip.
"""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from backends import BACKEND_NAMES, NO_EXTENSION

ENGINES = (
    [("python", "python")]
    if NO_EXTENSION
    else [("compiled", "cython"), ("python", "cython"), ("python", "python")]
)
TESTED_ENGINES = [(engine, allocator) for engine, allocator in ENGINES if allocator in BACKEND_NAMES]

# 8-bit space, grace 1, two devices; its metrics are worked by hand in test_replay.py
HAND_TRACE = Path(__file__).parent / "data" / "hand.trace"


def pasid_command(*args, env=None, process=False, check=None):
    """``pasid ARGS``: a ``subprocess.CompletedProcess`` (text) of its exit status and output.

    Run in this process (``pasid.cli.main``, its stdout and stderr captured, the parser's
    exits caught) unless ``env`` (variables to add, read by a new interpreter as it starts)
    or ``process`` asks for a Python of its own (``python -m pasid``). A new interpreter
    costs a numpy import and more (about three times as much under the sanitizers), and
    what the command does is the same code either way: the tests of the process itself
    (the entry point, an environment read at import, signals) ask for one. ``check``: the
    exit status expected, asserted with stderr in the message.
    """
    if env is not None or process:
        run = subprocess.run([sys.executable, "-m", "pasid", *args], capture_output=True,
                             text=True, env={**os.environ, **(env or {})}, timeout=600)
    else:
        from pasid.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(list(args))
            except SystemExit as exc:        # argparse: --help, --version, a usage error
                status = 0 if exc.code is None else exc.code
        run = subprocess.CompletedProcess(["pasid", *args], status, out.getvalue(),
                                          err.getvalue())
    if check is not None:
        assert run.returncode == check, (run.returncode, run.stderr)
    return run
