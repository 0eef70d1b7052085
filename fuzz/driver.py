"""What fuzz_ops.py and fuzz_snapshot.py share: their common options and the
choice of engine. Imports nothing of pasid, so that atheris can instrument
pasid's modules before their first import (which fuzzlib would do)."""

from __future__ import annotations

import argparse
import os


def parser(description: str, *, ops: int, ops_help: str,
           backend_help: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with the options both fuzzers take."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    p.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    p.add_argument("--backend", choices=["both", "cython", "python"], default="both",
                   help=backend_help)
    p.add_argument("--ops", type=int, default=ops, help=ops_help)
    p.add_argument("--seed", type=int, default=0, help="random engine: the first seed")
    p.add_argument("--no-avoid", action="store_true",
                   help="do not steer around the failures in fuzzlib.KNOWN")
    p.add_argument("--keep-going", action="store_true",
                   help="random engine: report every distinct failure, exit 1 at the end")
    return p


def engine(args: argparse.Namespace, *, trace_replay: bool) -> str:
    """The engine to run: atheris when asked or installed ("auto"), else random;
    random for a ``--replay`` (traced if ``trace_replay``). With atheris, pasid's
    Python modules are imported instrumented here, before anything else imports them."""
    chosen = args.engine
    if chosen == "auto":
        try:
            import atheris  # noqa: F401
            chosen = "atheris"
        except ImportError:
            chosen = "random"
    if args.replay is not None:
        if trace_replay:
            os.environ["FUZZ_TRACE"] = "1"
        chosen = "random"
    if chosen == "atheris":
        import atheris
        with atheris.instrument_imports(include=["pasid"]):
            import pasid._snapshot  # noqa: F401
            import pasid.pure  # noqa: F401
    return chosen
