"""The package's import graph: no circles, and every import points down the layers of the README's design."""

from __future__ import annotations

import ast
from pathlib import Path

import autoembed

PACKAGE = Path(autoembed.__file__).parent

# top to bottom; a module may import its own layer or lower ones, never a higher one, and never in a circle
LAYERS = [
    {"cli"},
    {"search", "recipe", "dashboard", "evaluate", "examples"},
    {"trials", "raytune", "runs", "plan", "screening"},
    {"training", "provenance"},
    {"model", "losses", "mining", "evaluation", "space", "pruners", "study"}
    | {"techniques", "classification", "adversarial", "progressive", "augment", "export"},
    {"data", "config", "yamlio", "errors", "fileio", "progress", "spaces", "schema", "__init__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str:
    """The layer unit of a module: ``autoembed.dashboard.figures`` -> ``dashboard``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph() -> dict[str, set[str]]:
    """Module -> the autoembed modules it imports anywhere in its file (lazy imports count)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("autoembed"):
                targets.add(node.module)
            elif isinstance(node, ast.ImportFrom) and node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if path.name == "__init__.py" else 0)]
                targets.add(".".join([*base, node.module] if node.module else base))
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("autoembed")}
        graph[name] = {t for t in targets if t != name}
    return graph


def test_every_module_has_a_layer():
    units = {_unit(m) for m in import_graph()}
    assert units - set(RANK) == set(), "add new modules to LAYERS"


def test_imports_point_down():
    wrong = [
        f"{m} -> {t}"
        for m, targets in import_graph().items()
        for t in targets
        if _unit(t) != _unit(m) and RANK[_unit(t)] < RANK[_unit(m)]
    ]
    assert wrong == []


def test_no_import_circles():
    graph = {m: {t for t in ts if t in import_graph()} for m, ts in import_graph().items()}
    # units (a package counts as one node) must form a DAG
    units: dict[str, set[str]] = {}
    for m, ts in graph.items():
        units.setdefault(_unit(m), set()).update(_unit(t) for t in ts if _unit(t) != _unit(m))
    seen: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(units.get(node, ())):
            if seen.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in seen:
                visit(nxt, [*stack, nxt])
        seen[node] = 2

    for unit in sorted(units):
        if unit not in seen:
            visit(unit, [unit])
    assert cycles == []


def test_the_graph_is_read():
    graph = import_graph()
    # a check that finds no edges would pass vacuously
    assert "autoembed.trials" in graph["autoembed.raytune"]
    assert "autoembed.runs" in graph["autoembed.recipe"]
