"""Which backends the tests run on, importable by any test (never ``from conftest import``).

Every behavioural test takes the ``backend`` fixture (``tests/conftest.py``) and
runs once on the compiled core (``pasid._core``) and once on the pure backend
(``pasid.pure``). With ``PASID_NO_EXTENSION=1`` only the pure backend runs;
otherwise a compiled core that fails to import is an error, never a skip.

``PASID_TEST_BACKENDS`` (names, comma-separated: ``cython``, ``python``) restricts the
per-backend tests to the backends named: the ``backend`` fixture, and each test or
fixture parametrised over ``BACKEND_NAMES`` (the simulator's engines over the pure
allocator, the release queue's twins, the races). CI sets ``PASID_TEST_BACKENDS=cython``
where the pure backend's run would only repeat the main suite's (the version cells, the
oldest numpy, the sanitizers: .ci/run). It does not touch the tests that compare the two
backends with each other (``ALL_BACKENDS``: the differential test, snapshots loaded
across backends, ...): they run wherever both import. ``none`` runs no per-backend test:
the run without the compiled core (``PASID_NO_EXTENSION=1``) says it, as its pure
backend's tests are the ones the main suite ran (``pasid.pure`` imports nothing compiled),
and it is there for what changes without the core: the package's choice of backend, the
simulator, the command line. A name that is not a backend, or a selection that leaves
none by accident (``cython`` with ``PASID_NO_EXTENSION=1``), is an error.
"""

import os

NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"
# every backend this process can load
ALL_BACKENDS = ["python"] if NO_EXTENSION else ["cython", "python"]


def _selected():
    """ALL_BACKENDS, less those PASID_TEST_BACKENDS leaves out."""
    value = os.environ.get("PASID_TEST_BACKENDS", "").strip()
    if not value:
        return list(ALL_BACKENDS)
    if value == "none":
        return []
    wanted = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(wanted) - {"cython", "python"})
    if unknown:
        raise ValueError(f"PASID_TEST_BACKENDS={value!r}: no backend {unknown} "
                         "(the backends: cython, python)")
    names = [name for name in ALL_BACKENDS if name in wanted]
    if not names:
        raise ValueError(f"PASID_TEST_BACKENDS={value!r} leaves no backend to test "
                         f"(this run has {ALL_BACKENDS})")
    return names


# the backends each per-backend test runs on
BACKEND_NAMES = _selected()


def load_backend(name):
    """The module implementing ``IDA`` and ``PasidAllocator`` for *name*."""
    if name == "cython":
        import pasid._core as module
    else:
        import pasid.pure as module
    return module
