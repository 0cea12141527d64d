"""No module of jobpool imports itself back, however far round: the package has no import circle.

A circle hides the order in which modules can be read and changed (a change to one end breaks
the other), and it used to be closed quietly, by an import inside a function. So every import
counts here: at the top, inside a function, under ``TYPE_CHECKING``; only the implicit import of
a package's ``__init__`` does not (jobpool's own imports its public names lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

import jobpool

PACKAGE = Path(jobpool.__file__).resolve().parent  # the jobpool this test runs


def module_name(path: Path, root: Path) -> str:
    parts = ["jobpool", *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The jobpool modules that ``path`` imports, anywhere in its text."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            submodules = {f"{source}.{alias.name}" for alias in node.names} & modules
            # "from . import _x" imports the submodule _x; "from .pkg import f" pkg itself
            found.update(submodules or {source})
    return {module for module in found if module in modules and module != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(path, root) for path in paths}
    return {module_name(path, root): imports_of(path, root, modules) for path in paths}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of ``graph`` with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(graph: dict[str, set[str]], circle: list[str]) -> str:
    members = set(circle)
    ties = [f"{a} -> {b}" for a in circle for b in sorted(graph[a] & members)]
    return f"{len(circle)} modules: " + "; ".join(ties)


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert len(graph) > 50, "the package's modules were not found"
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(describe(graph, c) for c in found)


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The walk itself: an import in a function, under TYPE_CHECKING or of a sibling by
    ``from . import`` closes a circle as a top-level one does."""
    package = tmp_path / "jobpool"
    (package / "_sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_sub" / "__init__.py").write_text("")
    (package / "_a.py").write_text("def f():\n    from ._b import g\n")
    (package / "_b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._sub import _c\n"
    )
    (package / "_sub" / "_c.py").write_text("from .. import _a\n")
    (package / "_d.py").write_text("import jobpool._a\n")
    graph = import_graph(package)
    assert graph["jobpool._d"] == {"jobpool._a"}
    assert circles(graph) == [["jobpool._a", "jobpool._b", "jobpool._sub._c"]]
