"""A fresh Postgres schema for one test: its own engine, the service's migrations applied, and
the schema dropped afterwards (the shared database keeps nothing of the test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import checked_identifier, make_engine, migrate


@dataclass(frozen=True)
class FreshSchema:
    engine: AsyncEngine
    schema: str


@asynccontextmanager
async def fresh_schema(
    database_url: str, schema: str, migrations: Path, *, pool_size: int = 8
) -> AsyncIterator[FreshSchema]:
    engine = make_engine(database_url, schema, pool_size=pool_size)
    try:
        await migrate(engine, schema, migrations)
        yield FreshSchema(engine, schema)
    finally:
        async with engine.begin() as db:
            await db.execute(text(f"DROP SCHEMA IF EXISTS {checked_identifier(schema)} CASCADE"))
        await engine.dispose()
