"""The station's queue on real Postgres: the claim order (oldest batch first, then arrival),
concurrent readers each getting a different card, used chips never bound twice, and which
states may go back to the queue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from services.electrical.app import MIGRATIONS
from services.electrical.repository import StationRepository
from services.electrical.service import QueuedCard, next_to_claim
from shared.settings import BureauSettings
from tests.support.schemas import FreshSchema, fresh_schema

pytestmark = pytest.mark.integration


@pytest.fixture
async def queue(bureau_settings: BureauSettings, unique: str) -> AsyncIterator[FreshSchema]:
    url, schema = bureau_settings.database_url, f"electrical_q_{unique}"
    async with fresh_schema(url, schema, MIGRATIONS) as fresh:
        yield fresh


async def enqueue(queue: FreshSchema, *cards: tuple[uuid.UUID, uuid.UUID]) -> None:
    """Queue the cards, each batch assigned to station-a (keymgmt's batch.assigned)."""
    async with queue.engine.begin() as db:
        repo = StationRepository(db, queue.schema)
        for card_id, batch_id in cards:
            assert await repo.enqueue(card_id, batch_id, "acme", "acme-visa", uuid.uuid4())
            await repo.assign(batch_id, ["station-a"], 1)


async def claim(queue: FreshSchema, chip: str) -> QueuedCard | None:
    async with queue.engine.begin() as db:
        return await StationRepository(db, queue.schema).claim_next(chip, "station-a", "reader-0")


async def test_claims_take_the_oldest_batch_first_then_arrival_order(queue: FreshSchema) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    a1, a2, b1, a3, b2 = (uuid.uuid4() for _ in range(5))
    # a3 arrives after b1, but its batch reached the station first.
    await enqueue(queue, (a1, a), (a2, a), (b1, b), (a3, a), (b2, b))
    claimed = []
    for n in range(6):
        card = await claim(queue, f"C0FFEE{n:06d}")
        claimed.append(None if card is None else card.card_id)
    assert claimed == [a1, a2, a3, b1, b2, None]


async def test_the_sql_order_is_the_domain_order(queue: FreshSchema) -> None:
    batches = [uuid.uuid4() for _ in range(3)]
    arrivals = [(uuid.uuid4(), batches[i % 3]) for i in range(9)]
    await enqueue(queue, *arrivals)
    claimed: list[QueuedCard] = []
    while (card := await claim(queue, f"C0FFEE{len(claimed):06d}")) is not None:
        claimed.append(card)
    remaining = list(claimed)
    expected = []
    while (best := next_to_claim(remaining)) is not None:
        expected.append(best)
        remaining.remove(best)
    assert claimed == expected


async def test_concurrent_readers_never_get_the_same_card(queue: FreshSchema) -> None:
    batch = uuid.uuid4()
    cards = [(uuid.uuid4(), batch) for _ in range(40)]
    await enqueue(queue, *cards)

    async def reader(n: int) -> list[uuid.UUID]:
        got: list[uuid.UUID] = []
        for i in range(100):
            card = await claim(queue, f"{n:02d}{i:010d}")
            if card is None:
                return got
            got.append(card.card_id)
        return got

    results = await asyncio.gather(*(reader(n) for n in range(6)))
    everything = [card for got in results for card in got]
    assert sorted(everything) == sorted(c for c, _ in cards)
    assert sum(1 for got in results if got) >= 2  # the claims really ran side by side


async def test_a_used_chip_is_never_bound_again_and_only_unwritten_cards_requeue(
    queue: FreshSchema,
) -> None:
    batch = uuid.uuid4()
    first, second, third = (uuid.uuid4() for _ in range(3))
    await enqueue(queue, (first, batch), (second, batch), (third, batch))
    schema = queue.schema
    async with queue.engine.begin() as db:
        repo = StationRepository(db, schema)
        bound, card = await repo.claim_for_chip("AAAA00000001", "station-a", "r0")
        assert (bound, card.card_id if card else None) == (None, first)
        assert await repo.start_encoding(first)
        assert not await repo.release(first)  # written (or being written): never requeued
        assert await repo.mark_encoded(first, 5)
        assert await repo.claim_for_chip("AAAA00000001", "station-a", "r0") == ("encoded", None)
        bound, card = await repo.claim_for_chip("AAAA00000002", "station-a", "r0")
        assert card is not None
        assert card.card_id == second
        assert await repo.release(second)  # claimed, never written: back in the queue
        bound, card = await repo.claim_for_chip("AAAA00000002", "station-a", "r0")
        assert card is not None
        assert card.card_id == second  # its place in the order kept
        # keymgmt refused it: spoiled without touching the chip, which takes the next card
        assert await repo.mark_spoiled(second, "refused", chip_consumed=False)
        bound, card = await repo.claim_for_chip("AAAA00000002", "station-a", "r0")
        assert card is not None
        assert card.card_id == third
        assert await repo.counts() == {"encoded": 1, "spoiled": 1, "assigned": 1}
        assert not await repo.enqueue(first, batch, "acme", "acme-visa", uuid.uuid4())


async def test_cancelled_cards_leave_the_queue_or_never_join_it(queue: FreshSchema) -> None:
    batch = uuid.uuid4()
    queued, early, claimed = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await enqueue(queue, (claimed, batch), (queued, batch))
    assert (await claim(queue, "C0FFEE000010")) is not None  # `claimed` is at a reader now
    async with queue.engine.begin() as db:
        repo = StationRepository(db, queue.schema)
        assert await repo.cancel(queued, batch, "issuer cancelled", uuid.uuid4()) == "cancelled"
        # card.cancelled overtook card.prepared (another topic): remembered, never queued.
        assert await repo.cancel(early, batch, "issuer cancelled", uuid.uuid4()) == "remembered"
        assert not await repo.enqueue(early, batch, "acme", "acme-visa", uuid.uuid4())
        # Too late: the card at a reader goes on, and the caller learns its state.
        assert await repo.cancel(claimed, batch, "issuer cancelled", uuid.uuid4()) == "assigned"
        # A redelivered cancellation changes nothing.
        assert await repo.cancel(queued, batch, "issuer cancelled", uuid.uuid4()) == "cancelled"
        counts = await repo.counts()
    assert counts == {"assigned": 1, "cancelled": 1}
    assert (await claim(queue, "C0FFEE000011")) is None  # nothing left to personalise
