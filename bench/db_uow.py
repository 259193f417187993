"""bench/db_uow: one typical unit of work (SELECT ... FOR UPDATE of a card, UPDATE of it, one
event into the outbox, commit) through our engine and ServiceRuntime.unit_of_work(), against
raw asyncpg doing the same statements in one transaction on one connection, in the same run on
the stack's PostgreSQL.

A third path, "pre-ping", is our unit of work on an engine made as make_engine made it before
issue 17 (SQLAlchemy's pool_pre_ping on every checkout), for the before/after in one run.

The relay's pass that each commit wakes (shared/relay.py: claim the new outbox rows, publish
them to Kafka, delete them) is counted too, on a bench topic of the stack's Kafka: its round
trips to PostgreSQL per pass, on our engine and on the former one.

Two figures per path: the time of a unit (no relay between client and server) and the client's
round trips per unit, counted by a byte-forwarding relay that sees every turn on the wire
(tests/support/wire_turns.py), after a warm-up so that connections and statement caches are
made. Prints both paths, the ratio of their times and the round trips of each.

    source .run/env.sh; .venv/bin/python -m bench.db_uow [--units 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import make_engine, migrate
from shared.events import CardPrepared, encode_event
from shared.kafka_client import KafkaSecurity, ensure_topics, make_producer
from shared.relay import OutboxRelay
from shared.service import ServiceRuntime
from shared.settings import BureauSettings
from tests.conftest import load_stack_env
from tests.support.bus import prepared_event
from tests.support.wire_turns import via_port, wire_turns

NO_SERVICE_MIGRATIONS = Path(__file__).parent / "no_migrations"  # the shared ones only
SELECT = "SELECT state FROM cards WHERE card_id = {p} FOR UPDATE"
UPDATE = "UPDATE cards SET state = {p}, version = version + 1 WHERE card_id = {c}"
OUTBOX = (
    "INSERT INTO outbox (event_id, topic, key, payload, headers)"
    " VALUES ($1, $2, $3, $4, CAST($5 AS jsonb)) ON CONFLICT (event_id) DO NOTHING"
)
Unit = Callable[[CardPrepared], Awaitable[None]]


async def make_schema(settings: BureauSettings, schema: str, cards: list[uuid.UUID]) -> None:
    engine = make_engine(settings.database_url, schema, pool_size=1)
    try:
        await migrate(engine, schema, NO_SERVICE_MIGRATIONS)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    f"CREATE TABLE {schema}.cards (card_id uuid PRIMARY KEY,"
                    " state text NOT NULL, version int NOT NULL DEFAULT 0)"
                )
            )
            await conn.execute(
                text(f"INSERT INTO {schema}.cards (card_id, state) VALUES (:c, 'new')"),
                [{"c": card} for card in cards],
            )
    finally:
        await engine.dispose()


async def run_sql(settings: BureauSettings, schema: str, sql: str) -> None:
    """One statement on its own short-lived engine (the bench's set-up and clean-up)."""
    engine = make_engine(settings.database_url, schema, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


def runtime_for(settings: BureauSettings, schema: str) -> ServiceRuntime:
    """keymgmt's runtime shape (it emits card.prepared) on the bench schema; not started: the
    unit of work needs only the engine (no relay is woken)."""
    return ServiceRuntime(
        name="keymgmt", settings=settings, migrations=NO_SERVICE_MIGRATIONS, schema=schema
    )


def with_pre_ping(runtime: ServiceRuntime) -> ServiceRuntime:
    """The runtime on the former engine: the same pool, plus a ping on every checkout."""
    runtime.engine = create_async_engine(
        runtime.settings.database_url,
        pool_size=5,
        max_overflow=5,
        pool_pre_ping=True,
        connect_args={"server_settings": {"search_path": f"{runtime.schema},public"}},
    )
    return runtime


def ours(runtime: ServiceRuntime) -> Unit:
    select = text(SELECT.format(p=":c"))
    update = text(UPDATE.format(p=":s", c=":c"))

    async def unit(event: CardPrepared) -> None:
        async with runtime.unit_of_work() as uow:
            state = (await uow.conn.execute(select, {"c": event.card_id})).scalar_one()
            await uow.conn.execute(update, {"c": event.card_id, "s": f"{state}+"})
            await uow.emit(event)

    return unit


def raw(conn: asyncpg.Connection, topic: str) -> Unit:
    select = SELECT.format(p="$1")
    update = UPDATE.format(p="$2", c="$1")

    async def unit(event: CardPrepared) -> None:
        async with conn.transaction():
            state = await conn.fetchval(select, event.card_id)
            await conn.execute(update, event.card_id, f"{state}+")
            await conn.execute(
                OUTBOX, event.event_id, topic, event.partition_key(), encode_event(event), "{}"
            )

    return unit


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def raw_connection(url: str, schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        asyncpg_dsn(url), server_settings={"search_path": f"{schema},public"}
    )


def workload(cards: list[uuid.UUID], units: int) -> list[CardPrepared]:
    return [
        prepared_event().model_copy(update={"card_id": cards[i % len(cards)]}) for i in range(units)
    ]


async def timed(unit: Unit, events: list[CardPrepared]) -> float:
    """Seconds per unit, the units run one after the other."""
    start = time.perf_counter()
    for event in events:
        await unit(event)
    return (time.perf_counter() - start) / len(events)


async def timings(
    settings: BureauSettings, schema: str, cards: list[uuid.UUID], units: int, rounds: int
) -> dict[str, float]:
    """Best seconds per unit of each path over `rounds` rounds, the paths taking turns."""
    async with three_paths(settings, schema) as paths:
        best = dict.fromkeys(paths, float("inf"))
        for unit in paths.values():  # warm-up: connections, caches
            await timed(unit, workload(cards, 50))
        for _ in range(rounds):
            for name, unit in paths.items():
                best[name] = min(best[name], await timed(unit, workload(cards, units)))
    return best


@asynccontextmanager
async def three_paths(settings: BureauSettings, schema: str) -> AsyncIterator[dict[str, Unit]]:
    """The same unit by raw asyncpg, by our unit of work, and by it with the former pre-ping;
    their connections closed after."""
    runtime = runtime_for(settings, schema)
    former = with_pre_ping(runtime_for(settings, schema))
    conn = await raw_connection(settings.database_url, schema)
    try:
        yield {
            "raw": raw(conn, runtime.emit_topic),
            "ours": ours(runtime),
            "pre_ping": ours(former),
        }
    finally:
        await conn.close()
        await runtime.engine.dispose()
        await former.engine.dispose()


async def round_trips(
    settings: BureauSettings, schema: str, cards: list[uuid.UUID], units: int
) -> dict[str, Any]:
    """Client turns per unit on the wire for each path, warm (after 20 units)."""
    host_port = settings.database_url.rpartition("@")[2].partition("/")[0]
    host, _, port = host_port.rpartition(":")
    counts: dict[str, Any] = {}
    async with wire_turns(host, int(port)) as seen:
        url = via_port(settings.database_url, seen.port)
        proxied = settings.model_copy(update={"database_url": url})
        async with three_paths(proxied, schema) as paths:
            for name, unit in paths.items():
                await timed(unit, workload(cards, 20))
                seen.reset()
                await timed(unit, workload(cards, units))
                counts[f"{name}_round_trips_per_unit"] = round(seen.turns / units, 2)
                counts[f"{name}_connections_opened"] = seen.connections
    return counts


async def relay_round_trips(
    settings: BureauSettings, schema: str, cards: list[uuid.UUID], units: int
) -> dict[str, Any]:
    """Client turns to PostgreSQL per relay pass, one pass after each unit (as a commit wakes
    it when the service is not busy), on our engine and on the former one."""
    host_port = settings.database_url.rpartition("@")[2].partition("/")[0]
    host, _, port = host_port.rpartition(":")
    security = KafkaSecurity.of(settings)
    await ensure_topics(settings.kafka_bootstrap, [settings.topic("keymgmt")], security=security)
    producer = make_producer(settings.kafka_bootstrap, "bench-db-uow", security)
    await producer.start()
    counts: dict[str, Any] = {}
    try:
        async with wire_turns(host, int(port)) as seen:
            proxied = settings.model_copy(
                update={"database_url": via_port(settings.database_url, seen.port)}
            )
            for name, runtime in (
                ("ours", runtime_for(proxied, schema)),
                ("pre_ping", with_pre_ping(runtime_for(proxied, schema))),
            ):
                relay, unit, turns = OutboxRelay(runtime.engine, schema, producer), ours(runtime), 0
                try:
                    for i, event in enumerate(workload(cards, units + 10)):
                        await unit(event)
                        before = seen.turns
                        if await relay.publish_once() != 1:
                            raise SystemExit(
                                "bench/db_uow: the relay did not publish the unit's row"
                            )
                        turns += (seen.turns - before) if i >= 10 else 0  # 10 to warm up
                finally:
                    await runtime.engine.dispose()
                counts[f"{name}_relay_round_trips_per_pass"] = round(turns / units, 2)
    finally:
        await producer.stop()
    return counts


async def main(units: int, rounds: int) -> None:
    for key, value in load_stack_env().items():
        os.environ.setdefault(key, value)
    run = uuid.uuid4().hex[:8]
    # Bench topics: the outbox rows of the bench never reach the bureau's own topics.
    settings = BureauSettings(environment="test", topic_prefix=f"bench{run}")
    schema = f"bench_uow_{run}"
    cards = [uuid.uuid4() for _ in range(64)]
    await make_schema(settings, schema, cards)
    try:
        counts = await round_trips(settings, schema, cards, 200)
        # The relay passes below publish their own rows only.
        await run_sql(settings, schema, f"DELETE FROM {schema}.outbox")
        counts |= await relay_round_trips(settings, schema, cards, 100)
        best = await timings(settings, schema, cards, units, rounds)
    finally:
        await run_sql(settings, schema, f"DROP SCHEMA {schema} CASCADE")
    print(  # noqa: T201 - a benchmark prints its figures
        json.dumps(
            {
                "bench": "db_uow",
                "units": units,
                "rounds": rounds,
                **{f"{name}_ms_per_unit": round(s * 1000, 3) for name, s in best.items()},
                "ratio_ours_to_raw_time": round(best["ours"] / best["raw"], 2),
                "ratio_pre_ping_to_raw_time": round(best["pre_ping"] / best["raw"], 2),
                **counts,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.units, args.rounds))
