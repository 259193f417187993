"""Runtime roles on the real Postgres for the least-privilege tests: each test gets its own
LOGIN role (random password) and its own schemas, dropped afterwards."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine


def runtime_url(owner_url: str, role: str, password: str) -> str:
    """The owner's URL with the runtime role's name and password instead."""
    url = make_url(owner_url).set(username=role, password=password)
    return url.render_as_string(hide_password=False)


@asynccontextmanager
async def login_role(owner: AsyncEngine, role: str, *schemas: str) -> AsyncIterator[str]:
    """A LOGIN role with a random password (yielded); afterwards the schemas it was granted are
    dropped (its grants and default privileges go with them), then the role."""
    password = secrets.token_hex(16)
    async with owner.begin() as conn:
        await conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
    try:
        yield password
    finally:
        await drop_schemas(owner, *schemas)
        async with owner.begin() as conn:
            await conn.execute(text(f"DROP ROLE IF EXISTS {role}"))


async def drop_schemas(owner: AsyncEngine, *schemas: str) -> None:
    """Drop the schemas first: their grants and default privileges go with them, so the role
    holds nothing and can be dropped."""
    async with owner.begin() as conn:
        for schema in schemas:
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
