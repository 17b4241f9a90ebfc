"""The import graph of ``mechlin`` runs one way: foundations <- datasets <- research areas.

Every ``import`` in the package counts, function-level ones included (a circle hidden inside a
function is still a circle). Research areas may use each other only along ``AREA_EDGES``, and
never through a private name or a private module of another area.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mechlin"
AREAS = ("recall", "neurons", "directions", "origins", "cognition")
# area -> the areas it may import (public names only)
AREA_EDGES = {
    "recall": set(),
    "neurons": set(),
    "directions": {"neurons"},
    "origins": {"neurons", "directions"},
    "cognition": {"neurons", "directions"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("mechlin")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).rstrip(".")
            if not base.startswith("mechlin"):
                continue
            for alias in node.names:  # `from mechlin import sites` imports a module
                sub = f"{base}.{alias.name}"
                out.append((sub, []) if sub in MODULES else (base, [alias.name]))
    return out


def _layer(name: str) -> tuple[int, str]:
    parts = name.split(".")
    if name in ("mechlin", "mechlin.cli", "mechlin.__main__"):
        return 3, "api"
    if parts[1] == "datasets":
        return 1, "datasets"
    if parts[1] in AREAS:
        return 2, parts[1]
    return 0, "foundation"


def test_no_upward_edges_and_areas_only_along_allowed_edges() -> None:
    bad = []
    for name in MODULES:
        if name == "mechlin":
            continue  # the top level re-exports everything
        layer, area = _layer(name)
        for target, names in _imports(name):
            t_layer, t_area = _layer(target)
            if t_layer > layer:
                bad.append(f"{name} -> {target} (upward)")
            elif layer == t_layer == 2 and t_area != area:
                if t_area not in AREA_EDGES[area]:
                    bad.append(f"{name} -> {target} ({area} may not use {t_area})")
                private = [n for n in names if n.startswith("_")]
                if private or any(p.startswith("_") for p in target.split(".")):
                    bad.append(f"{name} -> {target} {private} (another area's private name)")
    assert not bad, "\n".join(bad)


def test_import_graph_is_acyclic() -> None:
    graph = {n: {t for t, _ in _imports(n) if t in MODULES and t != n} for n in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def longest_import_path() -> list[str]:
    """The longest chain of imports inside the package (reported in the session notes)."""
    graph = {n: {t for t, _ in _imports(n) if t in MODULES and t != n} for n in MODULES}
    memo: dict[str, list[str]] = {}

    def longest(node: str) -> list[str]:
        if node not in memo:
            tails = [longest(n) for n in graph[node]]
            memo[node] = [node, *max(tails, key=len, default=[])]
        return memo[node]

    return max((longest(n) for n in graph if n != "mechlin"), key=len)


def test_no_module_is_named_like_a_function_it_exports() -> None:
    bad = []
    for name, path in MODULES.items():
        short = name.rpartition(".")[2]
        tree = ast.parse(path.read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        if short in defined:
            bad.append(f"{name} defines {short}()")
        parent = name.rpartition(".")[0]
        if parent in MODULES and path.name != "__init__.py":
            exported = _all_of(parent)
            if short in exported:
                bad.append(f"{parent} exports a name {short!r} that hides the module {name}")
    assert not bad, "\n".join(bad)


def _all_of(name: str) -> set[str]:
    for node in ast.parse(MODULES[name].read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    return set()


def test_every_area_has_a_docstring_and_an_explicit_all() -> None:
    for area in ("datasets", *AREAS):
        name = f"mechlin.{area}"
        if name not in MODULES:
            continue  # an area still to come
        tree = ast.parse(MODULES[name].read_text())
        doc = ast.get_docstring(tree)
        assert doc and len(doc.split()) >= 20, f"{name} needs a paragraph docstring"
        exported = _all_of(name)
        assert exported, f"{name} needs an explicit __all__"
        import importlib

        module = importlib.import_module(name)
        missing = [n for n in exported if not hasattr(module, n)]
        assert not missing, f"{name}.__all__ names {missing}, which it does not define"


def test_the_layering_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The checks above can fail: a foundation importing an area is an upward edge."""
    assert _layer("mechlin.sites") < _layer("mechlin.recall.tracing")
    assert _layer("mechlin.datasets.facts") < _layer("mechlin.neurons.probing")
    assert "neurons" not in AREA_EDGES["recall"] and "recall" not in AREA_EDGES["neurons"]
