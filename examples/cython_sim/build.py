"""Build ``churn.pyx`` against the installed pasid's ``pasid/capi.pxd``.

    python build.py                    # in place: churn.<abi>.so next to churn.pyx
    python build.py --build-dir DIR    # into DIR (churn.pyx is copied there first)
    python build.py --include DIR      # against the pasid package found in DIR

The one thing a simulator's build needs from pasid is the folder that holds
the installed ``pasid`` package: with it on Cython's ``include_path``,
``from pasid.capi cimport ...`` finds ``pasid/capi.pxd``. Nothing else of
pasid is read at build time and nothing is linked: the module finds pasid's
table of functions when it is imported. It keeps working when pasid is
rebuilt or upgraded (the table only grows); a pasid older than the one it was
built against refuses it at import with an ImportError.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE = "churn"

# The same choices as pasid's own setup.py, where they matter for a loop:
# no bounds or wrap-around checks on the victims array, -O2, no -march=native.
DIRECTIVES = {"language_level": 3, "boundscheck": False, "wraparound": False}
CFLAGS = ["-O2"]


def pasid_include_dir() -> str:
    """The folder holding the installed ``pasid`` package (for ``include_path``).

    Found without importing pasid; RuntimeError if pasid or its ``capi.pxd``
    is missing.
    """
    spec = importlib.util.find_spec("pasid")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pasid is not installed (pip install -e . in a checkout)")
    package = Path(list(spec.submodule_search_locations)[0])
    if not (package / "capi.pxd").is_file():
        raise RuntimeError(f"{package} has no capi.pxd: a pasid without its C-level API")
    return str(package.parent)


def built_path(build_dir: str | Path = HERE) -> Path:
    """Where :func:`build` puts the extension module for this interpreter."""
    return Path(build_dir) / (MODULE + sysconfig.get_config_var("EXT_SUFFIX"))


def build(build_dir: str | Path = HERE, *, include: str | None = None,
          verbose: bool = False) -> Path:
    """Cythonize and compile ``churn.pyx`` into ``build_dir``; the module's path.

    ``include``: the folder holding the ``pasid`` package to build against
    (default: :func:`pasid_include_dir`, the one this interpreter imports).
    """
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{MODULE}.pyx"
    if source != HERE / f"{MODULE}.pyx":
        shutil.copyfile(HERE / f"{MODULE}.pyx", source)
    extension = Extension(MODULE, [str(source)], extra_compile_args=CFLAGS)
    include = include or pasid_include_dir()
    if not (Path(include) / "pasid" / "capi.pxd").is_file():
        raise RuntimeError(f"{include} holds no pasid/capi.pxd")
    modules = cythonize([extension], include_path=[include],
                        compiler_directives=DIRECTIVES, quiet=not verbose, force=True)
    dist = Distribution({"name": "pasid-example-churn", "ext_modules": modules})
    dist.verbose = int(verbose)
    command = dist.get_command_obj("build_ext")
    command.build_lib = str(build_dir)
    command.build_temp = str(build_dir / "build")
    command.force = True
    dist.run_command("build_ext")
    path = built_path(build_dir)
    if not path.is_file():
        raise RuntimeError(f"the build finished but {path} is missing")
    return path


def load(build_dir: str | Path = HERE):
    """Import the module :func:`build` made in ``build_dir`` (not via sys.path)."""
    path = built_path(build_dir)
    spec = importlib.util.spec_from_file_location(MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=str(HERE),
                        help="where to build (default: in place, next to churn.pyx)")
    parser.add_argument("--include", help="the folder holding the pasid package to build "
                        "against (default: the installed one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the compiler's commands")
    args = parser.parse_args(argv)
    path = build(args.build_dir, include=args.include, verbose=args.verbose)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
