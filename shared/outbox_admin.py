"""The operator's command for parked outbox rows (rows the broker kept refusing, shared/outbox.py).

    python -m shared.outbox_admin list   --schema graphical
    python -m shared.outbox_admin replay --schema graphical [--id 17 --id 18]

`replay` unparks the rows (all of the schema's, or the ids named) with their attempts reset:
the service's relay publishes them on its next pass. Fix what made the broker refuse them
first (a topic's max.message.bytes, an ACL), or they are parked again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import checked_identifier, make_engine
from shared.settings import BureauSettings


async def parked_rows(engine: AsyncEngine, schema: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, event_id, topic, key, length(payload) AS size, attempts, last_error,"
                f" parked_at FROM {checked_identifier(schema)}.outbox"
                " WHERE parked_at IS NOT NULL ORDER BY id"
            )
        )
        return [dict(row._mapping) for row in rows]


async def replay_parked(engine: AsyncEngine, schema: str, ids: Sequence[int] = ()) -> list[int]:
    """Unpark the schema's parked rows (or those of `ids`); returns the ids unparked."""
    async with engine.begin() as conn:
        rows = await conn.execute(
            text(
                f"UPDATE {checked_identifier(schema)}.outbox"
                " SET parked_at = NULL, attempts = 0, last_error = NULL"
                " WHERE parked_at IS NOT NULL"
                " AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(CAST(:ids AS bigint[])))"
                " RETURNING id"
            ),
            {"ids": list(ids) or None},
        )
        return sorted(row[0] for row in rows)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.outbox_admin", description=__doc__)
    parser.add_argument("action", choices=("list", "replay"))
    parser.add_argument("--schema", required=True, help="the service's schema (its name)")
    parser.add_argument("--id", type=int, action="append", default=[], help="a parked row id")
    args = parser.parse_args(argv)
    engine = make_engine(BureauSettings().database_url, args.schema, pool_size=1)
    try:
        if args.action == "list":
            for row in await parked_rows(engine, args.schema):
                sys.stdout.write(json.dumps(row, default=str) + "\n")
        else:
            replayed = await replay_parked(engine, args.schema, args.id)
            sys.stdout.write(json.dumps({"replayed": replayed}) + "\n")
    finally:
        await engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
