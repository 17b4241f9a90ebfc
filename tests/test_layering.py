"""The import graph of ``mechlin`` runs one way: foundations <- datasets <- research areas.

Every ``import`` in the package counts, function-level ones included (a circle hidden inside a
function is still a circle). Research areas may use each other only along ``AREA_EDGES``, and
never through a private name or a private module of another area.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mechlin"
AREAS = ("recall", "neurons", "directions", "origins", "cognition", "compression")
# area -> the areas it may import (public names only)
AREA_EDGES = {
    "recall": set(),
    "neurons": set(),
    "directions": {"neurons"},
    "origins": {"neurons", "directions"},
    "cognition": {"neurons", "directions"},
    "compression": {"cognition"},
}


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, modules: dict[str, Path] = MODULES) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in module ``name``."""
    path = modules[name]
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
                out.append((sub, []) if sub in modules else (base, [alias.name]))
    return out


def _layer(name: str) -> tuple[int, str]:
    parts = name.split(".")
    if name in ("mechlin", "mechlin.__main__") or parts[:2] == ["mechlin", "cli"]:
        return 3, "api"  # the command line is a package: mechlin.cli and its modules
    if parts[1] == "datasets":
        return 1, "datasets"
    if parts[1] in AREAS:
        return 2, parts[1]
    return 0, "foundation"


def layering_violations(modules: dict[str, Path] = MODULES) -> list[str]:
    """Upward edges, area edges not allowed, and other areas' private names."""
    bad = []
    for name in modules:
        if name == "mechlin":
            continue  # the top level re-exports everything
        layer, area = _layer(name)
        for target, names in _imports(name, modules):
            t_layer, t_area = _layer(target)
            if t_layer > layer:
                bad.append(f"{name} -> {target} (upward)")
            elif layer == t_layer == 2 and t_area != area:
                if t_area not in AREA_EDGES[area]:
                    bad.append(f"{name} -> {target} ({area} may not use {t_area})")
                private = [n for n in names if n.startswith("_")]
                if private or any(p.startswith("_") for p in target.split(".")):
                    bad.append(f"{name} -> {target} {private} (another area's private name)")
    return bad


def test_no_upward_edges_and_areas_only_along_allowed_edges() -> None:
    bad = layering_violations()
    assert not bad, "\n".join(bad)


def import_cycle(modules: dict[str, Path] = MODULES) -> list[str] | None:
    """One import cycle of the package (function-level imports included), or None."""
    graph = {n: {t for t, _ in _imports(n, modules) if t in modules and t != n} for n in modules}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_import_graph_is_acyclic() -> None:
    cycle = import_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


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


def test_the_checks_catch_a_planted_upward_import_and_cycle(tmp_path: Path) -> None:
    """The checks above can fail: a package with a foundation importing an area (inside a
    function), an area using another's private module, and a circle between them."""
    root = tmp_path / "mechlin"
    files = {
        "__init__.py": "",
        "sites.py": "def f():\n    from mechlin.recall import tracing\n",
        "recall/__init__.py": "",
        "recall/tracing.py": "from mechlin import sites\n",
        "neurons/__init__.py": "",
        "neurons/_osp.py": "",
        "directions/__init__.py": "",
        "directions/concepts.py": "from mechlin.neurons._osp import x\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    planted = _modules(root)
    bad = layering_violations(planted)
    assert any("mechlin.sites -> mechlin.recall.tracing (upward)" in b for b in bad), bad
    assert any("private" in b and "directions.concepts" in b for b in bad), bad
    assert import_cycle(planted) in (
        ["mechlin.recall.tracing", "mechlin.sites", "mechlin.recall.tracing"],
        ["mechlin.sites", "mechlin.recall.tracing", "mechlin.sites"],
    )
