"""The docstring examples of every module run as tests, the compiled one included.

``doctest.testmod`` finds the examples of a Cython module through the
docstrings Cython keeps (``binding=True``); the compiled module is skipped
under ``PASID_NO_EXTENSION=1``.
"""

import doctest
import importlib
import os

import pytest

NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"

MODULES = [
    pytest.param(
        "pasid._core",
        marks=pytest.mark.skipif(NO_EXTENSION, reason="PASID_NO_EXTENSION=1: no compiled core"),
    ),
    "pasid.pure.allocator",
    "pasid.pure.ida",
    "pasid.pure.idspace",
    "pasid._handle",
    "pasid._rng",
    "pasid.sim.trace",
    "pasid.sim.replay",
    "pasid.sim.workload",
    "pasid.sim.sweep",
]

# Modules whose docstrings are known to carry examples: finding none there means
# the examples were lost (e.g. a compiled module built without its docstrings).
HAVE_EXAMPLES = {"pasid._core", "pasid.pure.allocator", "pasid.pure.ida", "pasid.pure.idspace",
                 "pasid._handle", "pasid._rng", "pasid.sim.trace", "pasid.sim.replay",
                 "pasid.sim.workload", "pasid.sim.sweep"}


def count_examples(module):
    finder = doctest.DocTestFinder()
    return sum(len(test.examples) for test in finder.find(module))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, verbose=False, report=True,
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
    assert result.attempted == count_examples(module)
    if name in HAVE_EXAMPLES:
        assert result.attempted > 0, f"{name}: no doctest examples found"
