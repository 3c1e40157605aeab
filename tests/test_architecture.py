"""Package architecture: no import cycles between miso_mapper's subpackages, and a torch-free configuration.

The import graph is read from the source with ``ast`` (every ``import`` and ``from ... import``, at module
level or inside functions), so a cycle hidden in a function-local import is found too. A node is a
subpackage (``miso_mapper.train``) or a top-level module (``miso_mapper.config``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "miso_mapper"
ROOT = "miso_mapper"


def _node(dotted: str) -> str:
    """The graph node of a dotted module name inside the package (the root package is its own node)."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Dotted names of the package's modules imported anywhere in ``tree`` (relative imports resolved)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            if base == ROOT:  # `from miso_mapper import train` imports the subpackage
                found |= {f"{ROOT}.{a.name}" for a in node.names
                          if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file()}
    return {name for name in found if name == ROOT or name.startswith(ROOT + ".")}


def import_graph() -> dict[str, set[str]]:
    """node -> nodes it imports (self-imports left out)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        source = _node(module)
        graph[source]
        for name in _imported(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py"):
            if _node(name) != source:
                graph[source].add(_node(name))
    return dict(graph)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None when it has none (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_graph_sees_function_local_and_relative_imports(tmp_path):
    tree = ast.parse("from . import x\ndef f():\n    from miso_mapper.train.loop import train_miso\n")
    assert _imported(tree, "miso_mapper.evaluate.run", False) == {"miso_mapper.evaluate", "miso_mapper.train.loop"}
    graph = import_graph()
    assert "train" in graph["evaluate"]  # function-local imports in evaluate/run.py
    assert {"config"} == graph["layout"]


def test_no_import_cycles_between_subpackages():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# That `miso_mapper.config` and `miso_mapper.plan` load no torch (and a plan computes without it) is checked in
# tests/test_predictor_settings.py::test_config_and_plan_load_no_torch.
