"""A unit of work on a real PostgreSQL of the test's own (tests/support/private_postgres.py):
five round trips, no pre-ping; connections the server dropped (stopped hard and started again)
replaced before a unit's block runs; a connection lost inside a block fails that unit only,
which is never run twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared.db import migrate
from shared.outage import is_outage
from shared.service import ServiceRuntime
from shared.settings import BureauSettings
from tests.support.bus import prepared_event
from tests.support.private_postgres import PrivatePostgres
from tests.support.wire_turns import via_port, wire_turns

NO_SERVICE_MIGRATIONS = Path(__file__).parent / "no_migrations"  # the shared ones only
SCHEMA = "uow"
CARDS = [uuid.uuid4() for _ in range(8)]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    instance = PrivatePostgres()
    try:
        instance.start()
        yield instance
    finally:
        instance.remove()


def runtime_on(url: str) -> ServiceRuntime:
    settings = BureauSettings(environment="test").model_copy(update={"database_url": url})
    return ServiceRuntime(
        name="keymgmt", settings=settings, migrations=NO_SERVICE_MIGRATIONS, schema=SCHEMA
    )


async def prepare(runtime: ServiceRuntime) -> None:
    """The shared migrations (the outbox) and a table of cards, each at state 0."""
    await migrate(runtime.engine, SCHEMA, NO_SERVICE_MIGRATIONS)
    async with runtime.engine.begin() as conn:
        await conn.execute(
            text("CREATE TABLE IF NOT EXISTS cards (card_id uuid PRIMARY KEY, state int NOT NULL)")
        )
        await conn.execute(text("TRUNCATE cards, outbox"))
        await conn.execute(
            text("INSERT INTO cards (card_id, state) VALUES (:c, 0)"), [{"c": c} for c in CARDS]
        )


@pytest.fixture
async def runtime(postgres: PrivatePostgres) -> AsyncIterator[ServiceRuntime]:
    runtime = runtime_on(postgres.url)
    await prepare(runtime)
    yield runtime
    await runtime.engine.dispose()


async def card_unit(runtime: ServiceRuntime, card: uuid.UUID, ran: list[Any] | None = None) -> None:
    """The typical unit: lock a card, change it, emit its event."""
    async with runtime.unit_of_work() as uow:
        if ran is not None:
            ran.append(card)
        state = (
            await uow.conn.execute(
                text("SELECT state FROM cards WHERE card_id = :c FOR UPDATE"), {"c": card}
            )
        ).scalar_one()
        await uow.conn.execute(
            text("UPDATE cards SET state = :s WHERE card_id = :c"), {"c": card, "s": state + 1}
        )
        await uow.emit(prepared_event().model_copy(update={"card_id": card}))


async def states(runtime: ServiceRuntime) -> dict[uuid.UUID, int]:
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(text("SELECT card_id, state FROM cards"))
        return {row.card_id: row.state for row in rows}


async def fill_pool(runtime: ServiceRuntime) -> None:
    """Several connections made and returned to the pool, idle there."""
    await asyncio.gather(*(card_unit(runtime, card) for card in CARDS[:4]))


async def test_a_unit_of_work_costs_five_round_trips(postgres: PrivatePostgres) -> None:
    """BEGIN, SELECT ... FOR UPDATE, UPDATE, the outbox INSERT, COMMIT: nothing else (no
    pre-ping, no rollback on return to the pool, statements prepared once per connection)."""
    async with wire_turns("127.0.0.1", postgres.port) as seen:
        runtime = runtime_on(via_port(postgres.url, seen.port))
        try:
            await prepare(runtime)
            for card in CARDS:  # warm: the connection made, its statements prepared
                await card_unit(runtime, card)
            seen.reset()
            for card in CARDS * 3:
                await card_unit(runtime, card)
            assert seen.connections == 0
            assert seen.turns == 5 * len(CARDS) * 3
        finally:
            await runtime.engine.dispose()


async def test_units_go_on_after_postgres_is_stopped_hard_and_started(
    postgres: PrivatePostgres, runtime: ServiceRuntime
) -> None:
    await fill_pool(runtime)
    await asyncio.to_thread(postgres.stop_hard)
    with pytest.raises((DBAPIError, OSError)) as down:  # refused at connect: an OSError
        await card_unit(runtime, CARDS[0])
    assert is_outage(down.value), down.value
    await asyncio.to_thread(postgres.start)
    before = await states(runtime)
    await asyncio.gather(*(card_unit(runtime, card) for card in CARDS))
    after = await states(runtime)
    assert all(after[card] == before[card] + 1 for card in CARDS)


async def test_a_dead_connection_the_loop_has_not_noticed_is_replaced_before_the_block(
    postgres: PrivatePostgres, runtime: ServiceRuntime
) -> None:
    """Stopped and started while the event loop is blocked: the pooled connections look alive
    when taken, their BEGIN meets the dead socket, and the unit starts again on a fresh one
    before its block runs: each block once, each card changed once, no error."""
    await fill_pool(runtime)
    before = await states(runtime)
    postgres.stop_hard()  # blocking on purpose: the loop reads no goodbye in between
    postgres.start()
    ran: list[Any] = []
    await card_unit(runtime, CARDS[0], ran)
    await asyncio.gather(*(card_unit(runtime, card, ran) for card in CARDS[1:]))
    assert sorted(ran) == sorted(CARDS)
    after = await states(runtime)
    assert all(after[card] == before[card] + 1 for card in CARDS)


async def unit_losing_its_connection(runtime: ServiceRuntime, port: int, ran: list[Any]) -> None:
    """A unit whose backend is terminated after its UPDATE, before it commits."""
    killer = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    try:
        async with runtime.unit_of_work() as uow:
            ran.append(CARDS[0])
            pid = (await uow.conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await uow.conn.execute(
                text("UPDATE cards SET state = state + 1 WHERE card_id = :c"), {"c": CARDS[0]}
            )
            await killer.execute("SELECT pg_terminate_backend($1)", pid)
            await uow.conn.execute(text("SELECT 1"))
    finally:
        await killer.close()


async def test_a_connection_lost_inside_the_block_fails_that_unit_without_rerunning_it(
    postgres: PrivatePostgres, runtime: ServiceRuntime
) -> None:
    await fill_pool(runtime)
    before = await states(runtime)
    ran: list[Any] = []
    with pytest.raises(DBAPIError) as lost:
        await unit_losing_its_connection(runtime, postgres.port, ran)
    assert is_outage(lost.value), lost.value
    assert ran == [CARDS[0]]
    assert (await states(runtime))[CARDS[0]] == before[CARDS[0]]
    await card_unit(runtime, CARDS[0])
    assert (await states(runtime))[CARDS[0]] == before[CARDS[0]] + 1
