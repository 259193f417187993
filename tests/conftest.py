"""Fixtures every tier shares: the local stack's environment and per-test isolation.

Integration and e2e tests run against the real stack started by `make test` (deploy/local).
Isolation is by name: each test gets a fresh Kafka topic prefix and fresh schema names.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from shared.service import ServiceRuntime
from shared.settings import BureauSettings

# The fixtures of tests/support, registered once for every tier (pytest takes pytest_plugins only
# here, in the root conftest). Helpers that are not fixtures are imported from tests/support,
# whose asserts pytest rewrites like a test module's (they import each other before registration).
pytest.register_assert_rewrite("tests.support")
pytest_plugins = [
    "tests.support.audit",
    "tests.support.audit_log",
    "tests.support.electrical",
    "tests.support.electrical_keymgmt",
    "tests.support.fulfillment",
    "tests.support.graphical",
    "tests.support.hsm",
    "tests.support.keymgmt",
    "tests.support.pcscd",
]

REPO = Path(__file__).resolve().parent.parent
_EXPORT = re.compile(r"^export (\w+)=(.*)$")


def load_stack_env() -> dict[str, str]:
    """The variables deploy/local/stack.sh wrote to .run/env.sh (environment wins)."""
    run_dir = Path(os.environ.get("BUREAU_RUN_DIR", REPO / ".run"))
    env_file = run_dir / "env.sh"
    values: dict[str, str] = {}
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            match = _EXPORT.match(line.strip())
            if match:
                values[match.group(1)] = match.group(2).strip("'\"")
    return values


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    values = load_stack_env()
    if not values and "BUREAU_DATABASE_URL" not in os.environ:
        pytest.fail("the local stack is not up: run `make stack-up` (deploy/local/stack.sh up)")
    for key, value in values.items():
        os.environ.setdefault(key, value)
    return {**values, **{k: v for k, v in os.environ.items() if k.startswith("BUREAU_")}}


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic prefixes and schema names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def bureau_settings(stack_env: dict[str, str], unique: str) -> BureauSettings:
    return BureauSettings(environment="test", topic_prefix=f"t{unique}")


@asynccontextmanager
async def running(runtime: ServiceRuntime) -> AsyncIterator[ServiceRuntime]:
    """Start a service's runtime in this process and stop it afterwards."""
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
