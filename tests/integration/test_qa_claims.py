"""QA's queue on real Postgres, with several positions and stations: concurrent claims each
get a different card (SKIP LOCKED, never luck), every card is claimed once, the claim names the
station and reader, and a station's restart puts back only the cards it held."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from services.qa.app import MIGRATIONS
from services.qa.repository import QaCard, QaRepository
from shared.settings import BureauSettings
from tests.support.schemas import FreshSchema, fresh_schema

pytestmark = pytest.mark.integration


@pytest.fixture
async def queue(bureau_settings: BureauSettings, unique: str) -> AsyncIterator[FreshSchema]:
    url, schema = bureau_settings.database_url, f"qa_claims_{unique}"
    async with fresh_schema(url, schema, MIGRATIONS) as fresh:
        yield fresh


async def enqueue(queue: FreshSchema, count: int) -> list[uuid.UUID]:
    cards = [uuid.uuid4() for _ in range(count)]
    batch = uuid.uuid4()
    async with queue.engine.begin() as db:
        repo = QaRepository(db, queue.schema)
        for n, card in enumerate(cards):
            chip = f"C0FFEE{n:06d}"
            assert await repo.enqueue(card, batch, "acme", chip, "00" * 32, uuid.uuid4())
    return cards


async def claim(
    queue: FreshSchema, station: str, reader: str, hold_s: float = 0.0
) -> QaCard | None:
    """One claim in its own transaction, held open `hold_s` so the others run meanwhile."""
    async with queue.engine.begin() as db:
        card = await QaRepository(db, queue.schema).claim_next(station, reader)
        await asyncio.sleep(hold_s)
    return card


async def test_concurrent_positions_and_stations_each_claim_a_different_card(
    queue: FreshSchema,
) -> None:
    cards = await enqueue(queue, 12)
    positions = [(station, f"reader-{n}") for station in ("qa-1", "qa-2") for n in range(3)]
    claimed: list[QaCard | None] = []
    for _ in range(3):  # 6 positions claim at once, each holding its transaction a moment
        claimed += await asyncio.gather(*(claim(queue, s, r, 0.05) for s, r in positions))
    got = [card.card_id for card in claimed if card is not None]
    assert sorted(got) == sorted(cards)  # every card claimed once, none twice
    assert claimed.count(None) == 6  # the queue ran dry, nobody waited on a lock
    async with queue.engine.connect() as db:
        rows = (
            await db.execute(
                text(f"SELECT claimed_by, claimed_reader, attempts FROM {queue.schema}.qa_cards")
            )
        ).all()
    assert {(by, reader) for by, reader, _ in rows} <= set(positions)
    assert {attempts for *_, attempts in rows} == {1}


async def test_a_restarting_station_puts_back_only_its_own_cards(queue: FreshSchema) -> None:
    first, second, third = await enqueue(queue, 3)
    assert (await claim(queue, "qa-1", "reader-a")).card_id == first  # type: ignore[union-attr]
    assert (await claim(queue, "qa-2", "reader-b")).card_id == second  # type: ignore[union-attr]
    async with queue.engine.begin() as db:
        released = await QaRepository(db, queue.schema).release_all_checking("qa-1")
    assert released == 1
    async with queue.engine.begin() as db:
        rows = await db.execute(text(f"SELECT card_id, state FROM {queue.schema}.qa_cards"))
        states: dict[uuid.UUID, str] = {row[0]: row[1] for row in rows.all()}
    # qa-1's card waits again; qa-2's stays with qa-2, which is still checking it.
    assert states == {first: "queued", second: "checking", third: "queued"}
    again = await claim(queue, "qa-1", "reader-a")
    assert again is not None
    assert (again.card_id, again.attempts) == (first, 2)
