"""No import circles: the module import graph of esper_env/, agents/ and benchmarks/ has no cycle.

The graph is built from the source with :mod:`ast`; nothing is imported. Every import counts: at
module level, inside functions (lazy imports), under ``if TYPE_CHECKING:``, and literal
``importlib.import_module("...")`` calls. ``import a.b.c`` is an edge to ``a.b.c``; ``from a.b
import c`` is an edge to the module ``a.b.c`` when there is one, else to ``a.b``; relative
imports resolve against the importing module's package; a folder of scripts that is no package
(run with the folder on ``sys.path``) resolves its bare imports to its own files.

A package's implicit edges to and from its own submodules are not drawn: Python runs
``esper_env/__init__.py`` before any ``esper_env.x``, but that makes no module depend on another,
so a package that hands on its submodules (``esper_env/__init__.py`` importing ``esper_env.env``)
is no cycle by itself. An import that a submodule writes of its package (``from esper_env import
__version__`` in ``esper_env/env.py``) is an edge like any other, and with the package's own
import of that submodule it closes a cycle: the order in which the two files run then decides
whether the name exists yet.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = ("esper_env", "agents", "benchmarks")


def module_name(path: Path, root: Path) -> str:
    """Dotted name of the file ``path`` under ``root`` (a package is named by its folder)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(tree: ast.AST) -> Iterable[tuple[str, list[str], int]]:
    """(module, names, level) of every import in ``tree``, wherever it stands."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], 0
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", [a.name for a in node.names], node.level
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                yield node.args[0].value, [], 0


def build_graph(root: Path, trees: Iterable[str] = TREES) -> dict[str, set[str]]:
    """Module name -> the modules of the same trees that it imports (see the module docstring)."""
    files = {module_name(p, root): p for t in trees for p in sorted((root / t).rglob("*.py"))}
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if _is_package(path) else name.rpartition(".")[0]
        script_dir = None if (path.parent / "__init__.py").exists() else package
        edges = set()
        for module, names, level in _imports(ast.parse(path.read_text(), str(path))):
            if level:
                base = package.split(".")
                base = base[:len(base) - (level - 1)]
                module = ".".join([*base, module] if module else base)
            elif script_dir and module.split(".")[0] not in known and \
                    f"{script_dir}.{module}" in known:
                module = f"{script_dir}.{module}"
            targets = [f"{module}.{n}" if f"{module}.{n}" in known else module for n in names] \
                or [module]
            for target in targets:
                while target and target not in known:  # `import a.b.x` of a name: the module a.b
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                edges.add(target)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path a -> ... -> a) per strongly connected component with a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graphs are small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_cycle_in(graph, comp) for comp in sorted(components)]


def _cycle_in(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest closed path through the component's first module, staying in the component."""
    start, members = comp[0], set(comp)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{comp} is no cycle")  # pragma: no cover


def format_cycles(cycles: list[list[str]]) -> str:
    """One line per cycle: ``a -> b -> a``."""
    return "\n".join(" -> ".join(c) for c in cycles)


# ---- the rule, on this repository ---------------------------------------------------------------

def test_no_import_cycles():
    cycles = find_cycles(build_graph(ROOT))
    assert not cycles, f"{len(cycles)} import cycle(s):\n{format_cycles(cycles)}"


def test_no_module_edits_sys_path():
    """Imports resolve by package names only (benchmarks run as ``python -m benchmarks.x``)."""
    edits = [f"{p.relative_to(ROOT)}:{n}" for t in TREES for p in sorted((ROOT / t).rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if "sys.path.insert" in line or "sys.path.append" in line]
    assert not edits, edits


def test_the_graph_sees_the_repository():
    graph = build_graph(ROOT)
    assert {"esper_env", "esper_env.env", "agents.train", "esper_env.core.state"} <= set(graph)
    assert "esper_env.config" in graph["esper_env.env"]


# ---- the graph builder, on a made-up package -----------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_a_lazy_import_is_found(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import f\n",
        "pkg/b.py": "def f():\n    from pkg import c\n    return c\n",
        "pkg/c.py": "import pkg.a\n",
    })
    graph = build_graph(root, ["pkg"])
    assert graph["pkg.b"] == {"pkg.c"}  # `from pkg import c`: the submodule, not the package
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert format_cycles(find_cycles(graph)) == "pkg.a -> pkg.b -> pkg.c -> pkg.a"


def test_type_checking_and_relative_imports_count(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..y import Y\n",
        "pkg/y.py": "from .sub import x\nimport importlib\nimportlib.import_module('pkg.z')\n",
        "pkg/z.py": "from . import NAME\n",
    })
    graph = build_graph(root, ["pkg"])
    assert graph["pkg.sub.x"] == {"pkg.y"}
    assert graph["pkg.y"] == {"pkg.sub.x", "pkg.z"}
    assert graph["pkg.z"] == {"pkg"}  # a name of the package: the package itself
    assert find_cycles(graph) == [["pkg.sub.x", "pkg.y", "pkg.sub.x"]]


def test_a_package_handing_on_its_submodules_is_no_cycle(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import A\nfrom pkg.sub import B\n\ndef __getattr__(n):\n"
                           "    from pkg import b\n    return b\n",
        "pkg/a.py": "from pkg.b import helper\nA = 1\n",
        "pkg/b.py": "import os\nhelper = 2\n",
        "pkg/sub/__init__.py": "from .deep import B\n",
        "pkg/sub/deep.py": "from pkg.a import A\nB = A\n",
    })
    graph = build_graph(root, ["pkg"])
    assert graph["pkg"] == {"pkg.a", "pkg.sub", "pkg.b"} and graph["pkg.sub"] == {"pkg.sub.deep"}
    assert graph["pkg.sub.deep"] == {"pkg.a"}  # no implicit edge to the packages it lies in
    assert find_cycles(graph) == []


def test_a_submodule_importing_a_name_of_its_package_closes_a_cycle(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "VERSION = '1'\n\ndef __getattr__(n):\n    from pkg.env import Env\n"
                           "    return Env\n",
        "pkg/env.py": "from pkg import VERSION\n",
        "pkg/_version.py": "VERSION = '1'\n",
    })
    assert find_cycles(build_graph(root, ["pkg"])) == [["pkg", "pkg.env", "pkg"]]
    (root / "pkg" / "env.py").write_text("from pkg._version import VERSION\n")  # the mend
    assert find_cycles(build_graph(root, ["pkg"])) == []


def test_scripts_in_a_folder_that_is_no_package_import_each_other(tmp_path):
    root = _write(tmp_path, {
        "tools/_common.py": "import one\n",
        "tools/one.py": "from _common import x\nimport numpy\n",
    })
    graph = build_graph(root, ["tools"])
    assert graph == {"tools._common": {"tools.one"}, "tools.one": {"tools._common"}}
    assert find_cycles(graph) == [["tools._common", "tools.one", "tools._common"]]


@pytest.mark.parametrize("rel", ["pkg/__init__.py", "pkg/m.py"])
def test_module_names(tmp_path, rel):
    assert module_name(tmp_path / rel, tmp_path) == ("pkg" if rel.endswith("__init__.py") else "pkg.m")
