"""The tree drawn in agent.core.errors' docstring is the real tree of AgentError subclasses.

Every module of the package is imported, every subclass of AgentError defined in it is
collected, and each must appear in the drawing exactly once, under its real (first)
parent, in its real module, with a meaning; nothing may be drawn that does not exist.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass

import pytest

import agent
from agent.core import errors as core_errors
from agent.core.errors import AgentError

ROOT_MODULE = core_errors.__name__
# One drawn class: the tree's connectors, its name, an optional [module], its meaning.
ENTRY = re.compile(r"^(?P<indent>(?:│   |    )*)(?:├── |└── )(?P<name>[A-Za-z_]\w*)"
                   r"(?: \[(?P<module>[\w.]+)\])?(?:\s{2,}(?P<meaning>\S.*))?$")
ROOT = re.compile(r"^(?P<name>AgentError)(?:\s{2,}(?P<meaning>\S.*))?$")
CONTINUATION = re.compile(r"^[│ ]+(?P<meaning>\S.*)$")


@dataclass
class Drawn:
    name: str
    parent: str | None
    module: str
    meaning: str


def drawn_tree(doc: str) -> dict[str, Drawn]:
    """Parse the tree of the docstring: each class with its parent (by indentation) and
    its module (its own bracket, else its nearest bracketed ancestor's, else core's)."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if ROOT.match(line.strip()))
    block = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line[4:] if line.startswith("    ") else line)
    drawn: dict[str, Drawn] = {}
    path: list[Drawn] = []  # the ancestors of the next entry, by depth
    last: Drawn | None = None
    for line in block:
        root = ROOT.match(line)
        entry = ENTRY.match(line)
        if root:
            last = Drawn("AgentError", None, ROOT_MODULE, root["meaning"] or "")
            path = [last]
        elif entry:
            depth = len(entry["indent"]) // 4 + 1
            assert 1 <= depth <= len(path), f"bad indentation: {line!r}"
            parent = path[depth - 1]
            module = f"agent.{entry['module']}" if entry["module"] else parent.module
            last = Drawn(entry["name"], parent.name, module, entry["meaning"] or "")
            path = [*path[:depth], last]
        else:
            continuation = CONTINUATION.match(line)
            assert continuation and last is not None, f"not a tree line: {line!r}"
            assert not last.meaning, f"{last.name}: more than one line of meaning"
            last.meaning = continuation["meaning"]
            continue
        assert last.name not in drawn, f"{last.name} is drawn twice"
        drawn[last.name] = last
    return drawn


def agent_error_classes() -> list[type[AgentError]]:
    """Every subclass of AgentError defined in the package (all modules imported)."""
    for module in pkgutil.walk_packages(agent.__path__, f"{agent.__name__}."):
        if module.name.rsplit(".", 1)[-1] == "__main__":
            continue
        importlib.import_module(module.name)
    found: dict[type[AgentError], None] = {AgentError: None}
    pending: list[type[AgentError]] = [AgentError]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub not in found and sub.__module__.startswith(f"{agent.__name__}."):
                found[sub] = None
                pending.append(sub)
    return list(found)


CLASSES = agent_error_classes()
DRAWN = drawn_tree(core_errors.__doc__ or "")


def agent_bases(cls: type) -> list[type]:
    return [base for base in cls.__bases__ if issubclass(base, AgentError)]


def test_error_class_names_are_unique() -> None:
    names = sorted(cls.__name__ for cls in CLASSES)
    assert sorted(set(names)) == names, "two error classes share a name"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_is_drawn_under_its_parent(cls: type[AgentError]) -> None:
    assert cls.__name__ in DRAWN, f"{cls.__module__}.{cls.__name__} is missing from the tree"
    drawn = DRAWN[cls.__name__]
    assert drawn.module == cls.__module__, f"{cls.__name__} is drawn in the wrong module"
    assert drawn.meaning, f"{cls.__name__} has no meaning in the tree"
    if cls is AgentError:
        assert drawn.parent is None
        return
    first, *others = agent_bases(cls)
    assert drawn.parent == first.__name__, f"{cls.__name__} is drawn under the wrong parent"
    for other in others:
        assert re.search(rf"\balso (?:an? )?{other.__name__}\b", drawn.meaning), (
            f"{cls.__name__}: the meaning must name its other parent {other.__name__}")


def test_nothing_is_drawn_that_does_not_exist() -> None:
    assert sorted(DRAWN) == sorted(cls.__name__ for cls in CLASSES)
