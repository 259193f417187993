"""The tests' house rules, kept true by walking the tests tree: every test_*.py holds a test,
no test module imports another test module, and fixtures are registered, never imported
(helpers live in tests/support, their fixtures in tests/conftest.py's pytest_plugins)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
TEST_MODULES = sorted(TESTS.rglob("test_*.py"))
PYTHON_FILES = sorted(TESTS.rglob("*.py"))
TEST_MODULE_NAME = re.compile(r"^tests\.(unit|integration|e2e)\.test_\w+$")


def relative(path: Path) -> str:
    return str(path.relative_to(TESTS.parent))


def imported_modules(tree: ast.Module) -> list[str]:
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    return modules


def fixtures_of(path: Path) -> set[str]:
    return {
        node.name
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    }


def test_the_tree_has_test_modules() -> None:
    assert len(TEST_MODULES) > 50


@pytest.mark.parametrize("path", TEST_MODULES, ids=relative)
def test_every_test_module_holds_a_test(path: Path) -> None:
    tree = ast.parse(path.read_text())
    tests = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_")
    ]
    assert tests, f"{relative(path)} holds no test: a helper belongs in tests/support"


def test_no_module_imports_a_test_module() -> None:
    offenders = [
        f"{relative(path)} imports {module}"
        for path in PYTHON_FILES
        for module in imported_modules(ast.parse(path.read_text()))
        if TEST_MODULE_NAME.match(module)
    ]
    assert offenders == []


def test_fixtures_are_registered_not_imported() -> None:
    support = TESTS / "support"
    fixtures = {f"tests.support.{path.stem}": fixtures_of(path) for path in support.glob("*.py")}
    offenders = [
        f"{relative(path)} imports the fixture {alias.name} from {node.module}"
        for path in TEST_MODULES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module in fixtures
        for alias in node.names
        if alias.name in fixtures[node.module]
    ]
    assert offenders == []


def test_no_redefinition_is_silenced() -> None:
    marker = "noqa: " + "F811"  # spelled apart so this file does not match itself
    offenders = [relative(p) for p in PYTHON_FILES if marker in p.read_text()]
    assert offenders == []


def test_every_support_module_with_fixtures_is_registered() -> None:
    conftest = ast.parse((TESTS / "conftest.py").read_text())
    plugins: list[str] = [
        name
        for node in conftest.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets)
        for name in ast.literal_eval(node.value)
    ]
    with_fixtures = {
        f"tests.support.{path.stem}"
        for path in (TESTS / "support").glob("*.py")
        if fixtures_of(path)
    }
    assert with_fixtures <= set(plugins)
