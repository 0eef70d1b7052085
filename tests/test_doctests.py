"""Every docstring example of the package runs as a test, the compiled modules' included.

The modules are found by walking the package, so a new module's examples run
without anyone listing it; the compiled ones (``pasid._core``,
``pasid.sim._replay``) are skipped under ``PASID_NO_EXTENSION=1``.
``doctest`` finds the examples of a Cython module through the docstrings
Cython keeps (``binding=True``); Cython's ``__test__`` dict repeats each of
them, and a repeat runs once.

Each module's examples are counted against its source: the ``>>>`` lines of
its ``.py``, or of its ``.pyx`` and the ``.pxi`` files that includes (and of
the docstrings its classes take from their pure twins at import). An
example no test reaches (a compiled module built without its docstrings, a
docstring the finder does not look at) fails the count.
"""

import doctest
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import pkgutil
import re
from pathlib import Path

import pytest

import pasid

NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Modules known to carry examples: finding none there means they were lost.
HAVE_EXAMPLES = {"pasid._core", "pasid._args", "pasid._snapshot", "pasid._handle", "pasid._rng",
                 "pasid._vcmd",
                 "pasid.pure.allocator", "pasid.pure.ida", "pasid.pure.idspace",
                 "pasid.pure.release", "pasid.sim.trace", "pasid.sim.replay",
                 "pasid.sim.workload", "pasid.sim.sweep", "pasid.sim.vms", "pasid.sim.report",
                 "pasid.simpy"}


def reraise(name):
    """``walk_packages``' error hook: a package that fails to import is an error, not a gap."""
    raise


def is_compiled(name):
    return importlib.util.find_spec(name).origin.endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES))


def package_modules():
    """Every module of ``pasid``, as test parameters."""
    names = ["pasid"] + sorted(
        info.name for info in pkgutil.walk_packages(pasid.__path__, "pasid.", onerror=reraise))
    skip = pytest.mark.skipif(NO_EXTENSION, reason="PASID_NO_EXTENSION=1: no compiled modules")
    return [pytest.param(name, marks=[skip] if is_compiled(name) else [], id=name)
            for name in names]


def source_examples(module):
    """The ``>>>`` lines of ``module``'s source (a compiled one: its .pyx and includes)."""
    path = Path(module.__file__)
    if path.suffix == ".py":
        sources = [path]
    else:
        pyx = path.with_name(module.__name__.rpartition(".")[2] + ".pyx")
        included = re.findall(r'^include "([^"]+)"', pyx.read_text(encoding="utf-8"), re.M)
        sources = [pyx] + [pyx.with_name(name) for name in included]
    count = sum(len(re.findall(r"^\s*>>>", source.read_text(encoding="utf-8"), re.M))
                for source in sources)
    return count + taken_examples(module)


def taken_examples(module):
    """The ``>>>`` lines of the docstrings ``module``'s classes take from their pure twins
    at import (``pasid._core``: PasidAllocator and IDA take pasid.pure's)."""
    if module.__name__ != "pasid._core":
        return 0
    import pasid.pure

    count = 0
    import pasid.pure.guest

    takes = [("PasidAllocator", pasid.pure.PasidAllocator), ("IDA", pasid.pure.IDA),
             ("PasidAllocator", pasid.pure.guest.VMHost),
             ("GuestSpace", pasid.pure.GuestSpace)]
    for name, twin in takes:
        compiled, reference = vars(getattr(module, name)), vars(twin)
        for member, value in reference.items():
            kind = type(compiled.get(member)).__name__
            if kind in ("method_descriptor", "classmethod_descriptor", "getset_descriptor"):
                count += len(re.findall(r"^\s*>>>", inspect.getdoc(value) or "", re.M))
    return count


def run_examples(module):
    """(failed, attempted, report) of ``module``'s examples, each run once."""
    tests = doctest.DocTestFinder().find(module)
    # Cython's __test__ keeps a docstring's indentation, the function's __doc__ does not
    documented = {inspect.cleandoc(test.docstring) for test in tests
                  if ".__test__." not in test.name}
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    for test in tests:
        if ".__test__." in test.name and inspect.cleandoc(test.docstring) in documented:
            continue            # a repeat of a docstring run already
        runner.run(test, out=report.append)
    return runner.failures, runner.tries, "".join(report)


@pytest.mark.parametrize("name", package_modules())
def test_doctests(name):
    module = importlib.import_module(name)
    failed, attempted, report = run_examples(module)
    assert failed == 0, f"{name}: {failed} of {attempted} examples failed\n{report}"
    written = source_examples(module)
    assert attempted == written, f"{name}: {attempted} examples ran, the source has {written}"
    if name in HAVE_EXAMPLES:
        assert attempted > 0, f"{name}: no doctest examples found"
