"""The import structure of ``src/reluflow`` (docs/architecture.md, "Layers"): no import cycles between modules, and
no import from a lower layer to a higher one.

The graph is read from the source with ``ast``, nothing is imported. Every ``import`` counts, wherever it stands:
at module level, inside a function (lazy imports) and under ``if TYPE_CHECKING:``. Importing ``a.b.c`` runs
``a/__init__.py`` and ``a/b/__init__.py`` first, so it is an edge to each of those packages as well, except the
packages that hold the importing module (they are already being imported when it runs).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "reluflow"

#: docs/architecture.md's layers, top to bottom. A module belongs to the first entry that is its name or a package
#: above it (``reluflow`` itself, the package's face, is matched last). Imports may point down or stay within one
#: layer; never up.
LAYERS: list[list[str]] = [
    ["reluflow.__main__", "reluflow.cli"],  # the command line
    ["reluflow.pipeline"],  # stages: files, dask, provenance, figures
    ["reluflow.config"],  # configs read and validated once; Study, Cell, Execution
    ["reluflow.plot"],  # figures drawn from loaded tables (matplotlib); the pipeline draws the study's with them
    ["reluflow"],  # the package's face: __version__, load, simulate, ...
    ["reluflow._simulate", "reluflow._load"],  # one cell's simulation; reading a study's tables
    ["reluflow._tableschema"],  # the tables' contract with their readers (schema version, required columns)
    ["reluflow.analysis"],  # per-trajectory statistics, per-cell aggregates
    ["reluflow.dynamics"],  # initializations, GD and GF solvers, the integrate loop
    ["reluflow.problem"],  # measures, targets, Problem (chooses a risk backend)
    ["reluflow.risk"],  # risk backends behind one risk_and_grad contract
    # parameter layout; stable keys; the version; stated limits; what counts as a number
    ["reluflow.network", "reluflow._keys", "reluflow._version", "reluflow._limits", "reluflow._numbers"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_package(name: str, mods: dict[str, Path]) -> bool:
    return mods[name].name == "__init__.py"


def imported_modules(name: str, tree: ast.AST, mods: dict[str, Path]) -> set[str]:
    """The modules of this package that ``name``'s code imports (explicitly, or as a parent package)."""
    package = name if _is_package(name, mods) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            for alias in node.names:  # `from . import _scan`: a submodule; `from .. import __version__`: a name
                sub = f"{base_name}.{alias.name}"
                targets.add(sub if sub in mods else base_name)
    out: set[str] = set()
    for target in targets:
        if target != "reluflow" and not target.startswith("reluflow."):
            continue
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            # parent packages holding the importing module are already (being) imported: no edge to them
            implicit_and_ours = i < len(parts) and (name == prefix or name.startswith(prefix + "."))
            if prefix in mods and prefix != name and not implicit_and_ours:
                out.add(prefix)
    return out


@functools.cache
def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported_modules(name, ast.parse(path.read_text(), str(path)), mods) for name, path in mods.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components with more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def layer_of(name: str) -> int:
    best, best_len = None, -1
    for i, layer in enumerate(LAYERS):
        for entry in layer:
            if (name == entry or name.startswith(entry + ".")) and len(entry) > best_len:
                best, best_len = i, len(entry)
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS (and to docs/architecture.md)")
    return best


def test_graph_is_read():
    """The reader sees the imports it must see (a guard against a test that passes because it reads nothing)."""
    graph = import_graph()
    assert "reluflow.problem._problem" in graph
    assert "reluflow.risk" in graph["reluflow.problem._problem"]  # module level
    assert "reluflow.pipeline" in graph["reluflow.cli"]  # inside functions only
    assert "reluflow.network" in graph["reluflow.risk._base"]  # under TYPE_CHECKING
    assert "reluflow.dynamics" in graph["reluflow.config._study"]
    assert "reluflow" in graph["reluflow.cli"]  # from . import __version__
    assert "reluflow.network" in graph["reluflow.dynamics._integrate"]  # the parent package of network._units
    assert "reluflow.dynamics" not in graph["reluflow.dynamics._integrate"]  # its own package: no edge


def test_no_import_cycles():
    graph = import_graph()
    cycles = strongly_connected(graph)
    assert not cycles, "modules that import each other (directly or through others), and their imports:\n" + "\n".join(
        ", ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c) for c in cycles)


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_point_down(name):
    graph = import_graph()
    up = sorted(t for t in graph[name] if layer_of(t) < layer_of(name))
    assert not up, f"{name} (layer {layer_of(name)}) imports a higher layer: " + ", ".join(
        f"{t} (layer {layer_of(t)})" for t in up)
