"""A small real service for bus tests: it records one row per effect and emits a follow-up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text

from shared import events
from shared.handlers import PoisonEvent
from shared.kafka_client import client_options, make_producer
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime
from shared.settings import BureauSettings

MIGRATIONS = Path(__file__).parent / "bus_migrations"
POISON_ISSUER = "poison-issuer"


async def record_effect(uow: UnitOfWork[Any], event: events.CardPrepared) -> None:
    if event.issuer_id == POISON_ISSUER:
        raise PoisonEvent(f"issuer {event.issuer_id} is not served here")
    await uow.conn.execute(
        text("INSERT INTO effects (card_id, event_id) VALUES (:c, :e)"),
        {"c": event.card_id, "e": event.event_id},
    )
    await uow.emit(
        events.CardEncoded(
            issuer_id=event.issuer_id,
            actor="test-station",
            card_id=event.card_id,
            batch_id=event.batch_id,
            chip_serial="A1B2C3D4E5F6",
            station_id="s1",
            reader="r1",
            apdu_count=7,
        )
    )


def harness_runtime(settings: BureauSettings, schema: str) -> ServiceRuntime:
    return ServiceRuntime(
        name="electrical",
        settings=settings,
        migrations=MIGRATIONS,
        handlers={events.CardPrepared: [record_effect]},
        subscribe=["keymgmt"],
        schema=schema,
        consumer_group=f"{settings.topic_prefix}.bus-test",
    )


def prepared_event(issuer_id: str = "acme") -> events.CardPrepared:
    return events.CardPrepared(
        issuer_id=issuer_id,
        actor="keymgmt",
        card_id=uuid.uuid4(),
        batch_id=uuid.uuid4(),
        product_id="acme-visa",
        masked_pan="411111******1111",
        application="emv",
        key_scheme="EMV-OPTION-A",
    )


async def effect_count(runtime: ServiceRuntime, card_id: uuid.UUID) -> int:
    async with runtime.engine.connect() as conn:
        row = await conn.execute(
            text("SELECT count(*) FROM effects WHERE card_id = :c"), {"c": card_id}
        )
        return int(row.scalar_one())


async def collect(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Any]], bool],
    timeout: float = 30.0,
) -> list[Any]:
    """Read a topic from the beginning until the predicate holds over the records seen."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(bootstrap),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while not until(seen):
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    seen.extend(records)
    finally:
        await consumer.stop()
    return seen


def records_of(kind: str, n: int) -> Callable[[list[Any]], bool]:
    """A `collect` predicate: at least n records of that event type (others on the topic, a
    batch.assigned beside the card.prepared, do not count)."""

    def enough(seen: list[Any]) -> bool:
        return sum(events.decode_event(r.value).type == kind for r in seen) >= n

    return enough


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.1)


async def settled(runtime: ServiceRuntime, count: int) -> None:
    """Wait until the service's consumer has taken `count` events (handled, duplicate or
    parked)."""
    consumer = runtime.consumer
    assert consumer is not None

    async def seen_all() -> bool:
        return consumer.processed + consumer.duplicates + consumer.dead_lettered >= count

    await wait_for(seen_all)


async def publish(settings: BureauSettings, stream: str, *payloads: tuple[str, bytes]) -> None:
    producer = AIOKafkaProducer(
        **client_options(settings.kafka_bootstrap), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for key, value in payloads:
            await producer.send_and_wait(settings.topic(stream), value=value, key=key.encode())
    finally:
        await producer.stop()


async def produce_events(bootstrap: str, *items: tuple[str, events.Event]) -> None:
    """Play other services: each (topic, event) sent as their outbox relay sends it, keyed by
    the event's partition key, through the services' own producer settings."""
    producer = make_producer(bootstrap, "tests")
    await producer.start()
    try:
        for topic, item in items:
            await producer.send_and_wait(
                topic, events.encode_event(item), key=item.partition_key().encode()
            )
    finally:
        await producer.stop()


async def publish_events(settings: BureauSettings, *items: tuple[str, events.Event]) -> None:
    """The same for (stream, event): each on that stream's topic of the test's prefix."""
    await produce_events(settings.kafka_bootstrap, *((settings.topic(s), e) for s, e in items))
