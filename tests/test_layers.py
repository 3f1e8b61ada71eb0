"""The layout is the architecture: imports point one way, down the layers the README draws, with no cycles.

Every import counts, the lazy ones inside functions and the `TYPE_CHECKING` ones included: a cycle hidden
in a function is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"rlaif": REPO / "rlaif", "rlaif_rewards": REPO / "rewards", "rlaif_environments": REPO / "environments"}
LAYERS = [  # top first; a part imports only parts of lower layers (and within its layer, SIDEWAYS)
    ["rlaif.cli"],
    ["rlaif.train", "rlaif.distill", "rlaif.report"],
    ["rlaif.eval"],
    ["rlaif_environments"],
    ["rlaif_rewards"],
    ["rlaif.cluster"],
    ["rlaif.rollout", "rlaif.weights"],
    ["rlaif.policies", "rlaif.tools", "rlaif.registry", "rlaif.models"],
    ["rlaif.env"],
    ["rlaif.sandbox"],
    ["rlaif.core"],
    ["rlaif.types", "rlaif.errors"],
]
SIDEWAYS: set[tuple[str, str]] = set()
"""Imports within one layer that are allowed (importer, imported)."""
pytestmark = pytest.mark.unit


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            if "repos" in path.relative_to(folder).parts:  # repo_repair's package data: task sources, not code
                continue
            name = ".".join([package, *path.relative_to(folder).with_suffix("").parts]).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (the longest known prefix of each imported name)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    hits = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            hits.add(name)
    return hits


def _part(module: str) -> str:
    top, _, rest = module.partition(".")
    return f"rlaif.{rest.split('.')[0]}" if top == "rlaif" and rest else top


def _layer(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _modules()} - {"rlaif"}
    assert parts == {p for layer in LAYERS for p in layer}


def test_imports_point_down_the_layers():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        src = _part(name)
        for target in _imports(path, modules):
            dst = _part(target)
            if dst in (src, "rlaif"):
                continue
            if _layer(dst) < _layer(src) or (_layer(dst) == _layer(src) and (src, dst) not in SIDEWAYS):
                upward.append(f"{name} imports {target}")
    assert not upward


def test_no_two_modules_import_each_other_even_lazily():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # a package's __init__ is imported with every module under it, so edges into a parent package are noise
    graph = {n: {d for d in deps if not n.startswith(d + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles


def test_a_plugin_author_needs_only_the_plugin_surface():
    """The built-in environments import what a third-party plugin would: rlaif's plugin surface and the graders."""
    modules = _modules()
    surface = {"rlaif.env", "rlaif.types", "rlaif.errors", "rlaif.tools", "rlaif.core.jsonl"}
    used = {t for n, p in modules.items() if n.startswith("rlaif_environments") for t in _imports(p, modules)
            if t.startswith("rlaif.")}
    assert used <= surface
