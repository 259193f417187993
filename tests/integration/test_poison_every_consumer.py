"""Poison never blocks any consumer (issue 19), on the real Kafka and Postgres: for each service
that consumes, a runtime with the service's own name, migrations (its schema, fresh) and
subscriptions (its topics, under a fresh prefix) is fed, on one partition of the first topic it
reads, a record with a random key, one whose value is not UTF-8, one whose header KEY is not
UTF-8 (aiokafka cannot even unpack it: shared/unreadable.py), one whose header value is not
UTF-8 and one of the broker's maximum size, then a good event. Each poison record is in the DLQ
under its own offset, the good event behind them is applied, and no task is left stopped.

The good event's handler records that it ran; the service's own handlers are not bound here (they
need pcscd, the HSM and printers): what is under test is the consumer every service runs. The good
event is one the first topic's service produces (shared/events/producers.py), so it is genuine
there.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from services.audit import app as audit_app
from services.electrical import app as electrical_app
from services.fulfillment import app as fulfillment_app
from services.graphical import app as graphical_app
from services.intake import app as intake_app
from services.keymgmt import app as keymgmt_app
from services.qa import app as qa_app
from shared import events
from shared.events.producers import producer_of
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime
from shared.settings import BureauSettings
from tests.conftest import running
from tests.support.audit_story import BatchStory
from tests.support.bus import collect, wait_for
from tests.support.poison import RawRecord, broker_max_value, poison_records, produce_raw

pytestmark = pytest.mark.integration

CONSUMERS: dict[str, tuple[Path, tuple[str, ...]]] = {
    module.NAME: (module.MIGRATIONS, tuple(module.SUBSCRIBE))
    for module in (
        intake_app,
        keymgmt_app,
        electrical_app,
        graphical_app,
        qa_app,
        fulfillment_app,
        audit_app,
    )
}


async def _applied_in_inbox(runtime: ServiceRuntime, event_id: uuid.UUID) -> bool:
    async with runtime.engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM inbox WHERE event_id = :e"), {"e": event_id}
        )
        return int(found.scalar_one()) == 1


@pytest.mark.parametrize("service", sorted(CONSUMERS))
async def test_every_consumer_dead_letters_each_poison_record_and_applies_the_good_one(
    service: str, bureau_settings: BureauSettings, unique: str
) -> None:
    migrations, subscribe = CONSUMERS[service]
    applied: list[uuid.UUID] = []

    # A good event of a batch's life that the first topic's service produces.
    good = next(e for e in BatchStory(1).good_batch() if producer_of(e) == subscribe[0])

    async def apply(_uow: UnitOfWork[Any], event: events.Event) -> None:
        applied.append(event.event_id)

    runtime = ServiceRuntime(
        name=service,
        settings=bureau_settings,
        migrations=migrations,
        handlers={type(good): [apply]},
        subscribe=subscribe,
        schema=f"{service}_poison_{unique}",
    )
    async with running(runtime):
        consumer = runtime.consumer
        assert consumer is not None
        await wait_for(lambda: _ready(consumer))
        topic = runtime.subscribe[0]
        poison = poison_records(await broker_max_value(bureau_settings.kafka_bootstrap, topic))
        good_record = RawRecord(
            "good", good.partition_key().encode(), events.encode_event(good), ()
        )
        offsets = await produce_raw(bureau_settings.kafka_bootstrap, topic, [*poison, good_record])
        await wait_for(lambda: _applied_in_inbox(runtime, good.event_id), timeout=90)
        assert applied == [good.event_id]
        assert consumer.dead_lettered == len(poison)
        assert runtime.supervisor.problems() == []
        dead = await collect(
            bureau_settings.kafka_bootstrap,
            bureau_settings.topic("dlq"),
            lambda seen: len(seen) >= len(poison),
        )
    by_source = {dict(r.headers)["dlq.source"].decode(): r for r in dead}
    assert len(by_source) == len(dead) == len(poison)
    for record, offset in zip(poison, offsets, strict=False):
        source = f"{runtime.consumer_group}/{topic}/0/{offset}"
        assert source in by_source, f"{service}: {record.what} (offset {offset}) not in the DLQ"
        headers = dict(by_source[source].headers)
        assert headers["dlq.reason"].startswith(b"undecodable: "), record.what
        if record.what == "non-UTF-8 header key":
            assert b"cannot unpack" in headers["dlq.reason"]  # its bytes stay on the broker
        else:
            assert headers["dlq.key"].decode() == (record.key or b"").hex(), record.what


async def _ready(consumer: Any) -> bool:
    return bool(consumer.ready.is_set())
