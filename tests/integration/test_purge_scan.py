"""The purge scan on real PostgreSQL columns (tests/support/purge_scan.py table_hits): a PAN and
a cardholder's name planted in bytea, jsonb, a text array and a bigint column are caught, each
where it was planted, as the driver hands the columns over; the same table without them scans
clean, so the hits are the planted values and nothing else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.support.purge_scan import pan_secret, table_hits, text_secret

pytestmark = pytest.mark.integration

PAN = "5413330089010434"
NAME = "Ségolène Łukasiewicz"
SECRETS = [pan_secret("PAN", PAN), text_secret("name", NAME)]
COLUMNS = (
    "id uuid PRIMARY KEY DEFAULT gen_random_uuid(), sealed bytea, legacy bytea,"
    " payload jsonb, extra json, tags text[], number bigint, at timestamptz DEFAULT now()"
)


@pytest.fixture
async def engine(stack_env: dict[str, str], unique: str) -> AsyncIterator[tuple[AsyncEngine, str]]:
    """A throwaway schema named like the integration tier's (bureau_schemas leaves it out)."""
    schema = f"scan_{unique}"
    db = create_async_engine(stack_env["BUREAU_DATABASE_URL"])
    async with db.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
        await conn.execute(text(f"CREATE TABLE {schema}.cards ({COLUMNS})"))
    try:
        yield db, schema
    finally:
        async with db.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await db.dispose()


async def plant(db: AsyncEngine, schema: str, column: str, value: object) -> None:
    typed = {"payload": "jsonb", "extra": "json"}  # sent as text, stored as JSON
    value_sql = f"CAST(CAST(:v AS text) AS {typed[column]})" if column in typed else ":v"
    async with db.begin() as conn:
        await conn.execute(text(f"DELETE FROM {schema}.cards"))
        await conn.execute(
            text(f"INSERT INTO {schema}.cards ({column}) VALUES ({value_sql})"), {"v": value}
        )


async def test_cardholder_data_in_bytea_json_array_and_number_columns_is_caught(
    engine: tuple[AsyncEngine, str],
) -> None:
    db, schema = engine
    planted = [
        ("sealed", b"\x00\x01" + bytes.fromhex(PAN) + NAME.encode() + b"\xfe", {"PAN", "name"}),
        ("legacy", "Zoë Müller".encode("latin-1"), {"latin-1 name"}),
        ("payload", json.dumps({"card": {"pan": int(PAN)}, "holder": NAME}), {"PAN", "name"}),
        ("extra", json.dumps({"embossed": NAME.upper()}), {"name"}),
        ("tags", ["gold", NAME], {"name"}),
        ("number", int(PAN), {"PAN"}),
    ]
    secrets = [*SECRETS, text_secret("latin-1 name", "Zoë Müller")]
    for column, value, expected in planted:
        await plant(db, schema, column, value)
        found = await table_hits(db, [schema], secrets)
        assert found == sorted(f"{name} in {schema}.cards.{column}" for name in expected)


async def test_the_same_columns_without_cardholder_data_scan_clean(
    engine: tuple[AsyncEngine, str],
) -> None:
    db, schema = engine
    async with db.begin() as conn:
        await conn.execute(
            text(
                f"INSERT INTO {schema}.cards (sealed, legacy, payload, extra, tags, number)"
                " VALUES (:b, :b, CAST(CAST(:j AS text) AS jsonb), CAST(CAST(:j AS text) AS json),"
                " :t, 5413)"
            ),
            {"b": b"\x54\x13\x33\x00", "j": '{"status": "dispatched"}', "t": ["ordered"]},
        )
    assert await table_hits(db, [schema], SECRETS) == []
