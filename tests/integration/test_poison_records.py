"""Poison never blocks, on the real Kafka and Postgres: records no producer of ours would write
(a key that is not UTF-8, random values and headers, a tombstone, a record near the broker's
1 MB limit) land in the DLQ, the DLQ records fit the broker, and the good record behind them
on the same partition is applied. A refused outbox row is parked and the rows behind it go.
(shared/bus.py, shared/dead_letter.py, shared/outbox.py)"""

from __future__ import annotations

import hashlib
import json
import os
import random
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text

from shared import events, metrics
from shared.bus import make_producer
from shared.db import migrate
from shared.dead_letter import DLQ_INLINE_MAX
from shared.kafka_client import client_options
from shared.outbox import OutboxRelay, OutboxRow, add_outbox_rows
from shared.outbox_admin import parked_rows, replay_parked
from shared.settings import BureauSettings
from tests.conftest import running
from tests.support.bus import collect, effect_count, harness_runtime, prepared_event, wait_for

pytestmark = pytest.mark.integration

NEAR_BROKER_MAX = 1_000_000  # the broker takes 1,048,588 bytes a record batch by default


def poison_records() -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """(key, value, headers) of records that are not events of ours."""
    rng = random.Random(19)
    junk_header = "".join(chr(rng.randrange(0x20, 0xD7FF)) for _ in range(12))
    return [
        (b"\xff\xfe\xfd not utf-8", b"\x80\x81 not an event either", []),
        (os.urandom(64), os.urandom(512), [(junk_header, os.urandom(40)), ("b", b"\xff\x00")]),
        (b"card-7", b'{"type": "card.encoded", "version": 1, "card_id": "nope"}', []),
        (b"tombstone", None, []),
        (b"\xc3\x28", b'{"type": "no.such.event"}\xff', [("x", os.urandom(2048))]),
        (os.urandom(16), os.urandom(NEAR_BROKER_MAX), [("big", b"\xfe" * 100)]),
    ]


async def produce_raw(settings: BureauSettings, topic: str, records: list[Any]) -> None:
    producer = AIOKafkaProducer(
        **client_options(settings.kafka_bootstrap),
        acks="all",
        enable_idempotence=True,
        max_request_size=1_048_000,
    )
    await producer.start()
    try:
        for key, value, headers in records:  # one partition: the good record waits behind
            await producer.send_and_wait(topic, value, key=key, headers=headers, partition=0)
    finally:
        await producer.stop()


async def test_poison_of_every_kind_is_dead_lettered_and_the_good_record_behind_it_applied(
    bureau_settings: BureauSettings, unique: str
) -> None:
    poison = poison_records()
    good = prepared_event()
    async with running(harness_runtime(bureau_settings, f"poison_{unique}")) as runtime:
        consumer = runtime.consumer
        assert consumer is not None
        await wait_for(lambda: _ready(consumer))
        topic = runtime.subscribe[0]
        await produce_raw(
            bureau_settings,
            topic,
            [*poison, (good.partition_key().encode(), events.encode_event(good), [])],
        )

        async def good_applied() -> bool:
            return await effect_count(runtime, good.card_id) == 1

        await wait_for(good_applied, timeout=60)
        assert consumer.dead_lettered == len(poison)
        assert runtime.supervisor.problems() == []
        dead = await collect(
            bureau_settings.kafka_bootstrap,
            bureau_settings.topic("dlq"),
            lambda seen: len(seen) >= len(poison),
        )
        async with runtime.engine.connect() as conn:
            kept = (
                await conn.execute(
                    text("SELECT source, value, sha256, size, key, headers FROM dead_letter_bodies")
                )
            ).all()
    assert len(dead) == len(poison)
    by_offset = {int(dict(r.headers)["dlq.source"].decode().rsplit("/", 1)[1]): r for r in dead}
    for offset, (key, value, _headers) in enumerate(poison):
        record = by_offset[offset]
        headers = dict(record.headers)
        assert headers["dlq.reason"].startswith(b"undecodable: ")
        assert headers["dlq.key"].decode() == (key or b"").hex()  # the key as it was, as hex
        assert len(record.value) + sum(len(v) for v in headers.values()) < DLQ_INLINE_MAX + 20_000
        if value is not None and len(value) > DLQ_INLINE_MAX:
            assert headers["dlq.body"] == b"kept-in-postgres"
            reference = json.loads(record.value)
            assert reference["value_sha256"] == hashlib.sha256(value).hexdigest()
            ((source, body, sha256, size, kept_key, _kept_headers),) = kept
            assert bytes(body) == value
            assert bytes(kept_key) == key
            assert sha256 == reference["value_sha256"]
            assert size > NEAR_BROKER_MAX
            assert source == headers["dlq.source"].decode()
        else:
            assert record.value == (value or b"")  # the raw bytes, kept


async def _ready(consumer: Any) -> bool:
    return bool(consumer.ready.is_set())


async def test_a_row_the_broker_refuses_is_parked_and_the_rows_behind_it_published(
    bureau_settings: BureauSettings, unique: str
) -> None:
    """A topic that takes 20 kB records; a 50 kB row for card A, then a small row for card A
    and rows for cards B and C. B and C go at once, A's second row waits behind A's first
    (order per card), which is parked after its attempts; then A's second row goes."""
    topic = bureau_settings.topic(f"narrow{unique}")
    admin = AIOKafkaAdminClient(**client_options(bureau_settings.kafka_bootstrap))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "20000"})]
        )
    finally:
        await admin.close()
    runtime = harness_runtime(bureau_settings, f"park_{unique}")
    await migrate(runtime.engine, runtime.schema, runtime.migrations)
    producer = make_producer(bureau_settings.kafka_bootstrap, client_id="park-test")
    await producer.start()
    metrics.set_service_name("park-test")
    relay = OutboxRelay(
        runtime.engine,
        runtime.schema,
        producer,
        max_attempts=3,
        # A refused batch leaves the idempotent producer's sequence out of step: renewed.
        new_producer=lambda: make_producer(bureau_settings.kafka_bootstrap, "park-test"),
    )
    rows: list[OutboxRow] = [
        (prepared_event().event_id, topic, "card-A", b"A1" + os.urandom(50_000), {}),
        (prepared_event().event_id, topic, "card-A", b"A2", {}),
        (prepared_event().event_id, topic, "card-B", b"B1", {}),
        (prepared_event().event_id, topic, "card-C", b"C1", {}),
    ]
    try:
        async with runtime.engine.begin() as conn:
            await add_outbox_rows(conn, runtime.schema, rows)
        for _round in range(8):
            await relay.publish_once()
        parked = await parked_rows(runtime.engine, runtime.schema)
        assert relay.published == 3, [(r["key"], r["attempts"], r["last_error"]) for r in parked]
        published = await collect(
            bureau_settings.kafka_bootstrap, topic, lambda seen: len(seen) >= 3
        )
        parked_total = metrics.REGISTRY.get_sample_value(
            "bureau_outbox_parked_total", {"service": "park-test"}
        )
        replayed = await replay_parked(runtime.engine, runtime.schema)
        after_replay = await parked_rows(runtime.engine, runtime.schema)
    finally:
        await relay.producer.stop()
        await runtime.engine.dispose()
    assert [r.value for r in published] in (
        [b"B1", b"C1", b"A2"],
        [b"C1", b"B1", b"A2"],
    )
    assert relay.parked == 1
    assert parked_total == 1.0
    (row,) = parked
    assert row["key"] == "card-A"
    assert row["attempts"] == 3
    assert "TooLarge" in row["last_error"]
    assert replayed == [row["id"]]
    assert after_replay == []
