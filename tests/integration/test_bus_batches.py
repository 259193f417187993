"""shared.handlers.BatchHandler on the real broker and database: a fetched run of events in one
handler call, inbox dedup before the call, poison isolated by the record-by-record replay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import text

from shared import events
from shared.handlers import BatchHandler, PoisonEvent
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime
from shared.settings import BureauSettings
from tests.conftest import running
from tests.support.bus import (
    MIGRATIONS,
    POISON_ISSUER,
    collect,
    effect_count,
    prepared_event,
    publish,
    wait_for,
)

pytestmark = pytest.mark.integration


def batch_runtime(settings: BureauSettings, schema: str, runs: list[int]) -> ServiceRuntime:
    """The bus harness service with a batch handler that notes the size of each call."""

    async def record_effects(uow: UnitOfWork[Any], prepared: Sequence[events.CardPrepared]) -> None:
        runs.append(len(prepared))
        if any(e.issuer_id == POISON_ISSUER for e in prepared):
            raise PoisonEvent(f"issuer {POISON_ISSUER} is not served here")
        await uow.conn.execute(
            text("INSERT INTO effects (card_id, event_id) VALUES (:c, :e)"),
            [{"c": e.card_id, "e": e.event_id} for e in prepared],
        )
        for e in prepared:
            await uow.emit(
                events.CardEncoded(
                    issuer_id=e.issuer_id,
                    actor="test-station",
                    card_id=e.card_id,
                    batch_id=e.batch_id,
                    chip_serial="A1B2C3D4E5F6",
                    station_id="s1",
                    reader="r1",
                    apdu_count=7,
                    trace=e.trace,
                )
            )

    return ServiceRuntime(
        name="electrical",
        settings=settings,
        migrations=MIGRATIONS,
        handlers={events.CardPrepared: [BatchHandler(record_effects)]},
        subscribe=["keymgmt"],
        schema=schema,
        consumer_group=f"{settings.topic_prefix}.bus-batch-test",
    )


async def test_a_fetched_run_is_one_call_and_a_duplicate_is_dropped_before_it(
    bureau_settings: BureauSettings, unique: str
) -> None:
    batch = [prepared_event() for _ in range(20)]
    payloads = [("one-partition", events.encode_event(e)) for e in batch]
    payloads.insert(7, payloads[3])  # the same event delivered twice inside the run
    await publish(bureau_settings, "keymgmt", *payloads)  # all there before the consumer starts
    runs: list[int] = []
    async with running(batch_runtime(bureau_settings, f"busb_{unique}", runs)) as runtime:
        assert runtime.consumer is not None
        consumer = runtime.consumer

        async def all_seen() -> bool:
            return consumer.processed + consumer.duplicates >= 21

        await wait_for(all_seen)
        assert consumer.processed == 20
        assert consumer.duplicates == 1
        for event in batch:
            assert await effect_count(runtime, event.card_id) == 1
    assert sum(runs) == 20, "every fresh event handed over exactly once"
    assert max(runs) > 1, f"the fetched records came as one run, not one by one: {runs}"
    encoded = await collect(
        bureau_settings.kafka_bootstrap,
        bureau_settings.topic("electrical"),
        lambda seen: len(seen) >= 20,
    )
    decoded = [events.decode_event(r.value) for r in encoded]
    assert all(isinstance(e, events.CardEncoded) for e in decoded)
    assert sorted(str(getattr(e, "card_id", "")) for e in decoded) == sorted(
        str(e.card_id) for e in batch
    )


async def test_a_poison_event_in_a_run_is_dead_lettered_alone(
    bureau_settings: BureauSettings, unique: str
) -> None:
    good = [prepared_event() for _ in range(6)]
    poison = prepared_event(issuer_id=POISON_ISSUER)
    run = [*good[:3], poison, *good[3:]]
    await publish(bureau_settings, "keymgmt", *(("p", events.encode_event(e)) for e in run))
    runs: list[int] = []
    async with running(batch_runtime(bureau_settings, f"busb_{unique}", runs)) as runtime:
        dead = await collect(
            bureau_settings.kafka_bootstrap,
            bureau_settings.topic("dlq"),
            lambda seen: len(seen) >= 1,
        )
        assert runtime.consumer is not None
        consumer = runtime.consumer

        async def settled() -> bool:
            return consumer.processed >= 6

        await wait_for(settled)
        assert consumer.dead_lettered == 1
        assert await effect_count(runtime, poison.card_id) == 0
        for event in good:
            assert await effect_count(runtime, event.card_id) == 1
    assert [events.decode_event(r.value).event_id for r in dead] == [poison.event_id]
    assert dict(dead[0].headers)["dlq.reason"].startswith(b"poison: issuer poison-issuer")
