"""One suite, two transports: the in-process delivery helper (real Postgres, no broker) behaves
as the real Kafka broker does for a service's HANDLERS table (tests/support/delivery.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared import events
from shared.settings import BureauSettings
from tests.support.bus import POISON_ISSUER, effect_count, harness_runtime, prepared_event
from tests.support.delivery import Delivery, delivering

pytestmark = pytest.mark.integration


@pytest.fixture(params=["in_process", "kafka"])
async def delivery(
    request: pytest.FixtureRequest, bureau_settings: BureauSettings, unique: str
) -> AsyncIterator[Delivery]:
    async with delivering(harness_runtime(bureau_settings, f"dl_{unique}"), request.param) as d:
        yield d


async def test_an_event_has_its_effect_and_emits_the_follow_up(delivery: Delivery) -> None:
    event = prepared_event()
    await delivery.deliver(event)
    out = await delivery.emitted()
    assert await effect_count(delivery.runtime, event.card_id) == 1
    assert [type(e) for e in out.events] == [events.CardEncoded]
    assert out.events[0].card_id == event.card_id  # type: ignore[attr-defined]
    assert out.dead_letters == []


async def test_a_duplicate_has_no_second_effect(delivery: Delivery) -> None:
    event = prepared_event()
    await delivery.deliver(event, event)
    await delivery.deliver(event)
    out = await delivery.emitted()
    assert await effect_count(delivery.runtime, event.card_id) == 1
    assert len(out.events) == 1


async def test_poison_is_dead_lettered_and_the_next_event_applied(delivery: Delivery) -> None:
    poison, good = prepared_event(POISON_ISSUER), prepared_event()
    await delivery.deliver(poison, good)
    out = await delivery.emitted()
    assert await effect_count(delivery.runtime, poison.card_id) == 0
    assert await effect_count(delivery.runtime, good.card_id) == 1
    assert len(out.dead_letters) == 1
    assert events.decode_event(out.dead_letters[0]).event_id == poison.event_id
    kinds = sorted(type(e).__name__ for e in out.events)
    assert kinds == ["CardEncoded", "DeadLetterRecorded"]
