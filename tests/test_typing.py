"""The package is typed for every checker: mypy and stubtest, as CI runs them.

* ``mypy --strict pasid examples/typed_program.py``: the package and an
  ordinary typed program on its public API pass strict checking (the
  ``[tool.mypy]`` section of ``pyproject.toml`` is read too: it names the
  third-party modules without type information). Once for the running Python
  and once for the oldest supported one (3.10).
* ``python -m mypy.stubtest pasid``: the hand-written stubs of the compiled
  modules (``pasid/_core.pyi``, ``pasid/sim/_replay.pyi``) agree with what
  the built extension really has.
* After the README's install (``pip install -e '.[test]'``) or a plain one, a
  user's program outside the checkout type-checks (``mypy --strict``), and
  stubtest run there finds the stubs: the editable install is a static ``.pth``
  file naming the checkout (``package-dir`` in ``pyproject.toml``), which type
  checkers read, not setuptools' import hook, which they cannot follow. These
  run where the environment's installed ``pasid`` is the one under test (CI's
  install, editable, and its sdist's, not editable); elsewhere they are skipped,
  or stubtest runs from the checkout.

Each check is one mypy run in a subprocess (10-20 s without a cache). They are
static, the same whichever backend runs, so they are skipped in the
``PASID_NO_EXTENSION=1`` pass, and without mypy installed (the ``test`` extra
has it). The typed program also runs, on the backend in use.
"""

import importlib.util
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from backends import NO_EXTENSION

static = pytest.mark.skipif(
    NO_EXTENSION,
    reason="static checks, the same on either backend: they run in the default pass",
)
needs_mypy = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="the typing checks need mypy (pip install mypy; the test extra has it)",
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "examples/typed_program.py"
OLDEST_PYTHON = "3.10"


def installed_here():
    """Whether the ``pasid`` this process imports is the environment's installed one, the
    one a type checker run from anywhere finds: the checkout an editable install names,
    or the installed copy."""
    import pasid

    try:
        dist = metadata.distribution("pasid")
    except metadata.PackageNotFoundError:
        return False
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct_url.get("dir_info", {}).get("editable"):
        root = Path(url2pathname(urlparse(direct_url["url"]).path))
    else:
        root = Path(dist.locate_file(""))
    return Path(pasid.__file__).resolve().parent.parent == root.resolve()


def run(args, cwd=ROOT):
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)}: exit {proc.returncode}\n{output}"
    return output


@static
@needs_mypy
def test_mypy_strict_on_the_package_and_a_typed_program():
    output = run(["mypy", "--strict", "pasid", EXAMPLE])
    assert "Success: no issues found" in output, output


def numpy_supports(version):
    """Whether the installed numpy (its stubs included) supports that Python."""
    from importlib.metadata import metadata

    from packaging.specifiers import SpecifierSet

    return SpecifierSet(metadata("numpy")["Requires-Python"] or "").contains(f"{version}.0")


@static
@needs_mypy
def test_mypy_strict_on_the_oldest_python():
    if not numpy_supports(OLDEST_PYTHON):
        pytest.skip(f"the installed numpy does not support Python {OLDEST_PYTHON}: its stubs "
                    "say nothing about it (the version matrix checks that Python for real)")
    output = run(["mypy", "--strict", "--python-version", OLDEST_PYTHON, "pasid", EXAMPLE])
    assert "Success: no issues found" in output, output


@static
@needs_mypy
def test_stubtest_finds_the_stubs_true_to_the_compiled_modules(tmp_path):
    import pasid._core  # noqa: F401  (a compiled core that fails to import is an error)

    # Check the pasid this process imports, from outside the checkout as a user would
    # when it is the installed one (an editable install of this checkout, or an installed
    # copy), else from the checkout's root (built in place, not installed here).
    cwd = tmp_path if installed_here() else ROOT
    output = run(["mypy.stubtest", "pasid", "--mypy-config-file", str(ROOT / "pyproject.toml")],
                 cwd=cwd)
    assert "Success: no issues found" in output, output


@static
@needs_mypy
def test_a_typed_program_outside_the_checkout_finds_pasid(tmp_path):
    # a user's program in a folder of its own, checked with no configuration: mypy finds
    # pasid only as the environment installed it
    if not installed_here():
        pytest.skip("pasid is not installed from here (pip install -e '.[test]' in this "
                    "checkout): a type checker outside it would see another or none")
    shutil.copy(ROOT / EXAMPLE, tmp_path / "program.py")
    output = run(["mypy", "--strict", "program.py"], cwd=tmp_path)
    assert "Success: no issues found in 1 source file" in output, output


def test_the_typed_program_runs():
    proc = subprocess.run([sys.executable, EXAMPLE], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "backend" in proc.stdout
