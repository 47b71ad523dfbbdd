"""The shape of the code: small modules, imports at the top, no cycles, svc never imports nirvana.

Read from the source with ``ast`` (nothing is imported), so a failure names the file and line.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nirvana", "svc")
MAX_LINES = 400   # a module past this does more than one job (issue 11; dramatiq's are 40-250)


def modules(package: str) -> dict[str, Path]:
    """Every module of a package by dotted name (generated protobuf code excluded)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if "_pb2" in path.name:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


ALL = {name: path for package in PACKAGES for name, path in modules(package).items()}


def imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function?) for each import of a kit module."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".")
                    base = base[: len(base) - child.level + (1 if is_package else 0)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                # ``from . import x`` names module x when there is one, else an attribute of ``.``
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in ALL else module
                           for alias in child.names]
            for target in targets:
                if target.split(".")[0] in PACKAGES:
                    found.append((target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def resolve(target: str) -> str | None:
    """The kit module an import names (``from . import x`` may name a module or an attribute)."""
    while target and target not in ALL:
        target = target.rpartition(".")[0]
    return target or None


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_module_is_over_400_lines(name):
    lines = len(ALL[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{ALL[name].relative_to(ROOT)} has {lines} lines: split it by job"


def test_svc_never_imports_nirvana():
    bad = [f"{ALL[name].relative_to(ROOT)}:{line} imports {target}"
           for name in ALL if name.startswith("svc")
           for target, line, _ in imports(name, ALL[name]) if target.startswith("nirvana")]
    assert bad == []


def test_nirvana_imports_the_kit_at_the_top_of_its_modules():
    # an import inside a function hides a dependency (and usually a cycle it works around)
    bad = [f"{ALL[name].relative_to(ROOT)}:{line} imports {target} inside a function"
           for name in ALL if name.startswith("nirvana")
           for target, line, inside in imports(name, ALL[name]) if inside]
    assert bad == []


def test_no_import_cycles():
    graph = {name: {resolve(t) for t, _, _ in imports(name, path)} - {None, name} for name, path in ALL.items()}
    # a package imports its own submodules to re-export them; that edge is not a dependency back
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    cycles = []
    state: dict[str, int] = {}

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [node, nxt]) if nxt in trail
                              else f"{node} -> {nxt}")
            elif nxt not in state:
                walk(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [])
    assert cycles == []
