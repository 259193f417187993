"""Deliver events to a service's HANDLERS the way the bus does, on the real database: in process
(no broker) or through the real Kafka broker, so one suite of cases runs both ways (the
faststream way: the same tests against an in-memory transport and the real broker).

Both go through the service's own EventConsumer (inbox, handlers, unit of work with the
service's repository, outbox, dead-lettering); they differ only in how records arrive and how
what the service emitted is read back.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text

from shared.bus import EventConsumer, make_producer
from shared.db import migrate
from shared.events import Event, UndecodableEvent, decode_event, encode_event
from shared.kafka_client import client_options
from shared.outbox import OutboxRelay
from shared.service import ServiceRuntime


@dataclass(frozen=True)
class InProcessRecord:
    """The fields of Kafka's ConsumerRecord that the consumer reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class Emitted:
    events: list[Event] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)


class Delivery(Protocol):
    runtime: ServiceRuntime

    async def deliver(self, *events: Event, stream: str | None = None) -> None:
        """Hand the events to the service as one fetched batch of one partition."""

    async def emitted(self) -> Emitted:
        """What the service emitted (and dead-lettered) since the last call."""


class InProcessDelivery:
    """Records made in process and fed to the consumer; emitted events read from the outbox."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self._offsets = itertools.count()
        self._relay = OutboxRelay(runtime.engine, runtime.schema, producer=None)
        self._consumer: EventConsumer = runtime.build_consumer(self._relay)

    async def deliver(self, *events: Event, stream: str | None = None) -> None:
        topic = self.runtime.settings.topic(stream) if stream else self.runtime.subscribe[0]
        records = [
            InProcessRecord(
                topic, 0, next(self._offsets), e.partition_key().encode(), encode_event(e)
            )
            for e in events
        ]
        await self._consumer.deliver(records)

    async def emitted(self) -> Emitted:
        async with self.runtime.engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(f"DELETE FROM {self.runtime.schema}.outbox RETURNING id, topic, payload")
                )
            ).all()
        return _sorted_out(self.runtime, [(row[0], row[1], bytes(row[2])) for row in rows])


class KafkaDelivery:
    """Records produced to the real broker and consumed by the running service; emitted events
    read back from its topic once its outbox has drained."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self._event_ids: list[uuid.UUID] = []
        self._read_to: dict[TopicPartition, int] = {}

    async def deliver(self, *events: Event, stream: str | None = None) -> None:
        topic = self.runtime.settings.topic(stream) if stream else self.runtime.subscribe[0]
        producer = make_producer(self.runtime.settings.kafka_bootstrap, client_id="delivery")
        await producer.start()
        try:
            batch = [
                await producer.send(topic, encode_event(e), key=e.partition_key().encode())
                for e in events
            ]
            await asyncio.gather(*batch)
        finally:
            await producer.stop()
        self._event_ids += [e.event_id for e in events]

    async def emitted(self) -> Emitted:
        """Waits until every event delivered so far is applied (in the inbox) or dead-lettered,
        and the outbox has drained, then reads what the service published. A service that also
        consumes its own stream (audit) processes its echoes too, so the consumer's counters
        alone cannot tell when the delivered events are done."""
        consumer = self.runtime.consumer
        assert consumer is not None, "the runtime subscribes to nothing"
        ids = sorted(set(self._event_ids))
        async with asyncio.timeout(60):
            while await _in_inbox(self.runtime, ids) + consumer.dead_lettered < len(
                ids
            ) or await _outbox_rows(self.runtime):
                await asyncio.sleep(0.05)
        return await self._read_new()

    async def _read_new(self) -> Emitted:
        settings = self.runtime.settings
        topics = [self.runtime.emit_topic, settings.topic("dlq")]
        reader = AIOKafkaConsumer(
            *topics,
            **client_options(settings.kafka_bootstrap),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await reader.start()
        out: list[tuple[int, str, bytes]] = []
        try:
            async with asyncio.timeout(30):
                while not reader.assignment():
                    await asyncio.sleep(0.05)
                parts = sorted(reader.assignment())
                ends = await reader.end_offsets(parts)
                for tp in parts:
                    reader.seek(tp, self._read_to.get(tp, 0))
                while [tp for tp in parts if await reader.position(tp) < ends[tp]]:
                    for tp, records in (await reader.getmany(timeout_ms=300)).items():
                        out.extend((r.offset, tp.topic, r.value) for r in records)
                self._read_to.update(ends)
        finally:
            await reader.stop()
        return _sorted_out(self.runtime, out)


async def _in_inbox(runtime: ServiceRuntime, ids: list[uuid.UUID]) -> int:
    async with runtime.engine.connect() as conn:
        row = await conn.execute(
            text(f"SELECT count(*) FROM {runtime.schema}.inbox WHERE event_id = ANY(:ids)"),
            {"ids": ids},
        )
        return int(row.scalar_one())


async def _outbox_rows(runtime: ServiceRuntime) -> int:
    async with runtime.engine.connect() as conn:
        row = await conn.execute(text(f"SELECT count(*) FROM {runtime.schema}.outbox"))
        return int(row.scalar_one())


def _sorted_out(runtime: ServiceRuntime, rows: list[tuple[int, str, bytes]]) -> Emitted:
    out = Emitted()
    dlq = runtime.settings.topic("dlq")
    for _order, topic, payload in sorted(rows, key=lambda r: r[0]):
        if topic == dlq:
            out.dead_letters.append(payload)
            continue
        try:
            out.events.append(decode_event(payload))
        except UndecodableEvent:
            out.dead_letters.append(payload)
    return out


@asynccontextmanager
async def delivering(runtime: ServiceRuntime, how: str) -> AsyncIterator[Delivery]:
    """A Delivery for `runtime`: "in_process" (real database, no broker) or "kafka" (the
    runtime started for real). Use it from a fixture parametrized over both."""
    if how == "in_process":
        await migrate(runtime.engine, runtime.schema, runtime.migrations)
        try:
            yield InProcessDelivery(runtime)
        finally:
            await runtime.engine.dispose()
        return
    assert how == "kafka", how
    await runtime.start()
    try:
        assert runtime.consumer is not None
        async with asyncio.timeout(30):
            await runtime.consumer.ready.wait()
        yield KafkaDelivery(runtime)
    finally:
        await runtime.stop()
