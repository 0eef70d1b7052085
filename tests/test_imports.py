"""The imports of the package run one way: no module imports one that imports it back.

The graph is read from the source with ``ast``: every ``import`` and ``from ...
import`` of a module of ``pasid`` in a ``.py`` file, those inside functions
included. Those a type checker alone sees (``if TYPE_CHECKING:``) are not run
and are left out: the pure backend's components name the allocator class whose
tables their functions take only for the type checker. A compiled
module is its stub (``.pyi``, what a type checker reads) and the Python imports
of its ``.pyx`` and the ``.pxi`` files it includes (``cimport``
is the C API and not counted). Each module also imports first in a fresh
interpreter, so none works only when another was imported before it.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pasid

ROOT = Path(pasid.__file__).parent
COMPILED = {"pasid._core", "pasid.sim._replay", "pasid.sim._textread", "pasid.sim._tracecheck",
            "pasid.sim._vmreplay"}


def module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources():
    """{module name: its files}: the .py files; for a compiled module, its stub, its
    .pyx and the .pxi files that includes."""
    found = {module_name(path): [path] for path in sorted(ROOT.rglob("*.py"))}
    for path in sorted(ROOT.rglob("*.pyi")):
        if module_name(path) in COMPILED:
            pyx = path.with_suffix(".pyx")
            included = re.findall(r'^include "([^"]+)"', pyx.read_text(encoding="utf-8"), re.M)
            found[module_name(path)] = [path, pyx] + [pyx.parent / name for name in included]
    return found


PYTHON_IMPORT = re.compile(r"^\s*(?:from\s+\S+\s+import\s|import\s)")


def syntax(path):
    """The imports of ``path`` as ast nodes: the whole file, or for Cython its
    Python import lines."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".py", ".pyi"):
        return list(run_time_nodes(ast.parse(text, str(path))))
    nodes = []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if PYTHON_IMPORT.match(line) and "cimport" not in line:
            statement = line.strip()
            while statement.count("(") > statement.count(")") and number < len(lines):
                statement += " " + lines[number].strip()     # "from m import (a,\n b)"
                number += 1
            try:
                nodes += ast.parse(statement).body
            except SyntaxError:
                raise AssertionError(f"{path}:{number}: an import this test cannot read") from None
    return nodes


def run_time_nodes(tree):
    """The nodes of ``tree`` but those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                    "typing.TYPE_CHECKING"):
            for other in node.orelse:
                yield other
                yield from run_time_nodes(other)
            continue
        yield node
        yield from run_time_nodes(node)


def imports(name, paths, modules):
    """The modules of the package that ``name`` (in ``paths``) imports."""
    package = name if paths[0].stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in (node for path in paths for node in syntax(path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from a import b": the module a.b when there is one, else a
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in modules and target != name)
    return found


def import_graph():
    modules = sources()
    return {name: imports(name, paths, modules) for name, paths in modules.items()}


def cycles(graph):
    """Every cycle found by a depth-first walk, each as the path that closes it."""
    found, state, stack = [], {}, []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return found


def test_the_graph_is_read_right():
    graph = import_graph()
    assert {"pasid", "pasid.sim", "pasid.sim.replay", "pasid.sim._replay_py",
            "pasid.sim._replaystate", "pasid._core", "pasid.sim._replay"} <= set(graph)
    assert graph["pasid.sim.replay"] >= {"pasid.sim._replay_py", "pasid.sim._replaystate",
                                         "pasid._args", "pasid.sim.trace", "pasid"}
    assert graph["pasid.sim._replay"] >= {"pasid.sim._replaystate", "pasid._core",
                                          "pasid._state", "pasid.sim.trace"}
    assert graph["pasid._core"] >= {"pasid._snapshot", "pasid._fork", "pasid._state"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_pure_backend_reaches_nothing_compiled():
    # What lets the run without the compiled core (.ci/run's suite-pure) skip the
    # per-backend tests (PASID_TEST_BACKENDS=none): pasid.pure behaves the same whether
    # or not the core imports, so its tests there would repeat the main suite's. Nor does
    # it reach the package's root, where the backend is chosen.
    graph = import_graph()
    reached, todo = set(), [name for name in graph if name.startswith("pasid.pure")]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(graph[name])
    assert "pasid.pure.allocator" in reached and "pasid._snapshot" in reached
    assert not reached & (COMPILED | {"pasid"}), sorted(reached & (COMPILED | {"pasid"}))


def test_the_replay_loops_sit_below_their_caller():
    graph = import_graph()
    for loop in ("pasid.sim._replay_py", "pasid.sim._replay", "pasid.sim._replaystate"):
        assert "pasid.sim.replay" not in graph[loop], loop


def test_no_file_of_the_package_is_over_1200_lines():
    # Issue 16: a file a reader can hold in their head; what grows past it splits along
    # its seams (a component, what a harness times) into a module of its own
    files = [path for path in sorted(ROOT.rglob("*"))
             if path.suffix in {".py", ".pyi", ".pyx", ".pxi", ".pxd"}]
    assert len(files) > 40
    long = {str(path.relative_to(ROOT)): n for path in files
            if (n := len(path.read_text().splitlines())) > 1200}
    assert not long, long


def test_each_compiled_component_names_its_twin():
    # Issue 16: the compiled core's components and the pure backend's pair by name; each
    # include of pasid/_core.pyx says its twin, and the twin is there
    core = (ROOT / "_core.pyx").read_text()
    includes = re.findall(r'^include "(\w+)\.pxi" +# (\S+)', core, re.M)
    assert len(includes) >= 13, includes
    for stem, twin in includes:
        assert (ROOT / f"{stem}.pxi").exists(), stem
        if twin == "(compiled":         # the C-level API: compiled only
            continue
        path = twin.rstrip(":")
        assert (ROOT.parent / path).exists(), (stem, twin)
        if path.startswith("pasid/pure/"):
            assert Path(path).stem == stem.lstrip("_"), (stem, twin)


# pasid.simpy needs the simpy extra; pasid.__main__ is the command line's entry point
OPTIONAL = {"pasid.simpy": "simpy"}


@pytest.mark.parametrize("name", sorted(set(sources()) - COMPILED - {"pasid.__main__"}))
def test_each_module_imports_first_in_a_fresh_interpreter(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    run = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                         text=True, cwd=ROOT.parent, timeout=120)
    assert run.returncode == 0, run.stderr
