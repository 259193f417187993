"""The house rules of issue 12, read from the source: no import inside a function (unless a
`# import inside:` comment names the reason), no module of services/X importing services/Y,
no import cycle among modules, no production file over 400 lines, no function over 80 lines.

The walk covers all of services/ and shared/, and every rule holds for all of it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREES = ("services", "shared")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80
REASON = "# import inside:"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement names (submodules of `from X import y` too)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".")[: -node.level]
            base = ".".join([*package, base] if base else package)
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return [name for name in names if name in MODULES]


def _imports_inside_functions(path: Path) -> Iterator[str]:
    lines = path.read_text().splitlines()
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import | ast.ImportFrom):
                around = lines[max(node.lineno - 2, 0) : node.lineno]
                if not any(REASON in line for line in around):
                    yield f"{path.relative_to(ROOT)}:{node.lineno} in {fn.name}()"


def _graph() -> dict[str, set[str]]:
    """module -> project modules it imports at module level (TYPE_CHECKING blocks excluded)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(_imported(module, node))
        graph[module] = edges - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _service_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def _long_functions(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if node.end_lineno - first + 1 > MAX_FUNCTION_LINES:
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}()"


def _all(problems: dict[str, list[str]]) -> list[str]:
    return [problem for found in problems.values() for problem in found]


def test_no_import_inside_a_function_without_a_reason() -> None:
    problems = {m: list(_imports_inside_functions(p)) for m, p in MODULES.items()}
    assert _all(problems) == []


def test_no_service_imports_another_service() -> None:
    graph = _graph()
    problems = {
        module: [
            f"{module} imports {other}"
            for other in sorted(edges)
            if _service_of(other) not in (None, _service_of(module))
        ]
        for module, edges in graph.items()
    }
    assert _all(problems) == []


def test_no_import_cycle() -> None:
    problems: dict[str, list[str]] = {}
    for cycle in _cycles(_graph()):
        problems.setdefault(cycle[0], []).append(" <-> ".join(cycle))
    assert _all(problems) == []


@pytest.mark.parametrize("limit", [MAX_FILE_LINES])
def test_files_and_functions_stay_small(limit: int) -> None:
    problems: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        found = list(_long_functions(path))
        lines = len(path.read_text().splitlines())
        if lines > limit:
            found.append(f"{path.relative_to(ROOT)}: {lines} lines")
        problems[module] = found
    assert _all(problems) == []
