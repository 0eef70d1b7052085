"""The documentation's examples run, and its reference covers the public API.

The docs (``docs/``, built by Sphinx in CI with warnings as errors) are the README,
included whole as the guide, and reference pages whose text is the docstrings (autodoc).
So their examples are the docstrings' examples, which ``tests/test_doctests.py`` runs on
both backends with each module's globals, and the README's Python blocks, run here in
order as a reader follows them. The pages themselves hold no example of their own: one
that did would run nowhere. Building the docs needs Sphinx (the ``docs`` extra): CI's
``docs`` step does that.
"""

import importlib
import re
from pathlib import Path

import pytest

import pasid
import pasid.sim

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*") if p.suffix in (".rst", ".md") and "_build" not in p.parts)
# the objects a page documents: autodoc's directives, and py:data for data it cannot
DIRECTIVE = re.compile(r"^\s*(?:\.\. |```\{)(?:auto(?:module|class|exception|function)"
                       r"|py:data)(?::: |\} ?)([\w.]+)", re.M)


def documented():
    """The dotted names the reference pages document."""
    return {name for page in PAGES for name in DIRECTIVE.findall(page.read_text(encoding="utf-8"))}


def test_the_pages_hold_no_example_of_their_own():
    assert PAGES, "docs/ has no pages"
    own = [f"{page.relative_to(ROOT)}:{n}" for page in PAGES
           for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
           if line.lstrip().startswith(">>>")]
    assert own == [], "examples belong in docstrings, where tests/test_doctests.py runs them"


def test_the_reference_documents_every_public_name():
    names = documented()
    assert [f"pasid.{name}" for name in pasid.__all__ if name != "pure"
            if f"pasid.{name}" not in names] == []
    # pasid.sim's names, each from a module documented with its public members
    modules = [importlib.import_module(name) for name in names if name.startswith("pasid.sim.")]
    assert [name for name in pasid.sim.__all__
            if not any(name in getattr(module, "__all__", ()) for module in modules)] == []
    assert {"pasid.sim", "pasid.simpy"} <= names


def test_every_documented_module_is_one_whose_doctests_run():
    # tests/test_doctests.py walks the package: every module of pasid
    from test_doctests import package_modules

    walked = {param.values[0] for param in package_modules()}
    modules = {name if name in walked else name.rpartition(".")[0] for name in documented()}
    assert modules and modules <= walked, modules - walked


def test_the_capi_page_shows_the_declarations_and_the_table():
    page = (DOCS / "api" / "capi.md").read_text(encoding="utf-8")
    assert "literalinclude} ../../pasid/capi.pxd" in page
    readme = (ROOT / "examples" / "cython_sim" / "README.md").read_text(encoding="utf-8")
    # the included part of the example's README: its markers must stay
    for marker in re.findall(r':(?:start-after|end-before): "([^"]+)"', page):
        assert marker in readme, marker


def test_the_readmes_python_examples_run():
    # the guide's examples: each ```python block of the README, in order, in one namespace
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"),
                        re.S | re.M)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        if "import pandas" in block:
            continue        # pandas is not pasid's: tests/test_report.py runs it where installed
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["a"].state(namespace["h"].pasid) is pasid.State.FREE


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "index.rst"],
                         ids=lambda p: str(p.relative_to(DOCS)))
def test_every_page_is_in_the_table_of_contents(page):
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    assert f"   {page.relative_to(DOCS).with_suffix('')}\n" in index


def test_the_signature_the_reference_writes_for_add_device_is_the_methods():
    # the compiled add_device's embedded signature cannot be evaluated (a default that is
    # an expression), so allocator.rst writes it: it must stay the pure twin's
    import inspect

    import pasid.pure

    written = re.search(r"automethod:: add_device(\(.*\))$",
                        (DOCS / "api" / "allocator.rst").read_text(encoding="utf-8"), re.M)
    twin = inspect.signature(pasid.pure.PasidAllocator.add_device)
    parameters = [p.replace(annotation=inspect.Parameter.empty)
                  for p in list(twin.parameters.values())[1:]]
    assert written and written.group(1) == str(
        twin.replace(parameters=parameters, return_annotation=inspect.Signature.empty))
