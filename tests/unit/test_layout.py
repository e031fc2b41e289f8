"""The package's shape, beside the import-linter contract in pyproject.toml (which keeps the
layers): modules stay small, no two modules import each other at module level, even
through others, and every package says what it is for."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import REPO_ROOT

ROOT = REPO_ROOT
PACKAGE = ROOT / "agent"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run when the module is imported: everything but function bodies
    and the ``if TYPE_CHECKING:`` branch (its ``else`` runs)."""
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_time_statements(node.orelse)
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _import_time_statements(getattr(node, field, None) or [])
        for handler in getattr(node, "handlers", None) or []:
            yield from _import_time_statements(handler.body)
        for case in getattr(node, "cases", None) or []:
            yield from _import_time_statements(case.body)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def module_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports when it is imported.
    ``from pkg import mod`` counts as importing ``pkg.mod`` when that is a module."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in _import_time_statements(tree.body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, path.name == "__init__.py", node)
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")
                elif target in known:
                    found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: module_imports(name, path, known) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def a_cycle(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    """One import cycle through the first of ``members`` (a strongly connected set)."""
    inside = set(members)
    start = members[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & inside):
                if child == start:
                    return [*paths[node], start]
                if child not in paths:
                    paths[child] = [*paths[node], child]
                    nxt.append(child)
        frontier = nxt
    return members


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return [a_cycle(graph, c) for c in strongly_connected(graph)
            if len(c) > 1 or c[0] in graph[c[0]]]


def test_no_module_is_over_the_line_limit() -> None:
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, (f"modules over {MAX_LINES} lines (split them by responsibility): "
                      + ", ".join(f"{name} ({n})" for name, n in sorted(long.items())))


def test_no_module_level_import_cycle() -> None:
    cycles = import_cycles(import_graph())
    assert not cycles, ("module-level import cycles (move one import into the function "
                        "that needs it, or the shared part down a layer):\n"
                        + "\n".join(" -> ".join(c) for c in cycles))


def test_every_package_says_what_it_is_for() -> None:
    unclear = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        name = _module_name(init)
        doc = ast.get_docstring(ast.parse(init.read_text()))
        first = doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""
        words = first.replace("`", "").split()
        if len(words) < 4 or first.rstrip(".").strip("`") in (name, name.rsplit(".", 1)[-1]):
            unclear.append(f"{name}: {first or '(no docstring)'}")
    assert not unclear, ("packages whose docstring's first line does not say what the package "
                         "is for:\n" + "\n".join(unclear))


def test_every_package_lists_its_modules() -> None:
    """A package's docstring names each of its modules and sub-packages, so it cannot drift."""
    missing = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        members = [p.stem for p in init.parent.glob("*.py")
                   if p.stem not in ("__init__", "__main__")]
        members += [p.name for p in init.parent.iterdir() if (p / "__init__.py").is_file()]
        missing += [f"{_module_name(init)}.{m}" for m in sorted(members) if f"``{m}``" not in doc]
    assert not missing, "modules missing from their package's docstring:\n" + "\n".join(missing)


# The checker itself, on small graphs and sources.

def test_cycle_finder_reports_a_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert sorted(import_cycles(graph)) == [["a", "b", "c", "a"], ["e", "e"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(("source", "expected"), [
    ("import agent.core.errors", {"agent.core.errors"}),
    ("from agent.core import errors", {"agent.core.errors"}),
    ("from agent.core.errors import AgentError", {"agent.core.errors"}),
    ("from . import errors", {"agent.core.errors"}),
    ("from .errors import AgentError", {"agent.core.errors"}),
    ("def f():\n    import agent.core.errors", set()),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import agent.core.errors",
     set()),
    ("try:\n    import agent.core.errors\nexcept ImportError:\n    pass", {"agent.core.errors"}),
    ("class C:\n    import agent.core.errors", {"agent.core.errors"}),
])
def test_import_reader(tmp_path: Path, source: str, expected: set[str]) -> None:
    module = tmp_path / "histogram.py"
    module.write_text(source + "\n")
    known = {"agent.core", "agent.core.errors", "agent.core.histogram"}
    assert module_imports("agent.core.histogram", module, known) == expected
