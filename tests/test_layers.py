"""Imports point down the layers: no two slimcv modules import each other, directly or through others."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _walk(nodes: list[ast.stmt], lazy: bool):
    """The statements run on import (with ``lazy``, also those inside functions); never TYPE_CHECKING blocks."""
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _walk(node.orelse, lazy)
            continue
        yield node
        if lazy or isinstance(node, (ast.If, ast.Try, ast.With)):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from _walk([child], lazy)
                elif isinstance(child, ast.excepthandler):
                    yield from _walk(child.body, lazy)


def _imports(tree: ast.Module, lazy: bool) -> set[str]:
    """slimcv modules imported at module level (or, with ``lazy``, anywhere, except under TYPE_CHECKING)."""
    out: set[str] = set()
    for node in _walk(tree.body, lazy):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("slimcv"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("slimcv")}
    return out


def _graph(lazy: bool) -> dict[str, set[str]]:
    graph = {}
    for path in SRC.rglob("*.py"):
        graph[_module(path)] = _imports(ast.parse(path.read_text()), lazy)
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def _cycle_through(graph: dict[str, set[str]], a: str, b: str) -> bool:
    """True when ``b`` imports its way back to ``a``."""
    seen, stack = set(), [b]
    while stack:
        m = stack.pop()
        if m == a:
            return True
        if m not in seen:
            seen.add(m)
            stack += [d for d in graph.get(m, ()) if not d.startswith(m + ".")]  # a package imports its parts
    return False


def test_the_layers_below_the_artifact_layer_never_import_it():
    graph = _graph(lazy=True)
    below = [m for m in graph if m.startswith(("slimcv.models", "slimcv.engine.checkpoint", "slimcv.data",
                                               "slimcv.deploy.predictor", "slimcv._io"))]
    assert below and not [(m, d) for m in below for d in graph[m] if d == "slimcv.artifact"]


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "imports-inside-functions-too"])
def test_no_import_cycles(lazy):
    graph = _graph(lazy=lazy)
    for a, deps in graph.items():
        for b in deps:
            if b.startswith(a + ".") or a.startswith(b + "."):
                continue  # a package and its own submodules
            assert not _cycle_through(graph, a, b), f"{a} -> {b} -> ... -> {a}"
