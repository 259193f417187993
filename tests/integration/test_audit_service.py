"""The audit service on the real broker and database: a batch's events from every stream, in
any order, end in batch.reconciled and batch.closed; gaps end in a named batch.discrepancy."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.audit.settings import AuditSettings
from shared import events
from shared.kafka_client import client_options
from shared.service import ServiceRuntime
from tests.support.audit import (
    AUDITOR,
    OPERATOR,
    OTHER_ISSUERS_AUDITOR,
    audit_events,
    logged,
    publish,
    read_stream,
    stream_of,
)
from tests.support.audit_story import BatchStory
from tests.support.bus import collect, wait_for

pytestmark = pytest.mark.integration


async def test_a_batch_from_every_stream_in_any_order_is_reconciled_then_closed(
    audit: ServiceRuntime, audit_settings: AuditSettings, api: httpx.AsyncClient
) -> None:
    story = BatchStory(4)
    rejected, good = story.card_ids[0], story.card_ids[1:]
    batch = [*story.good_batch({rejected: "graphical"}), story.destroy(rejected)]
    # Downstream streams first: the order.accepted and card.ordered events come last.
    await publish(audit_settings, sorted(batch, key=lambda e: stream_of(e) == "intake"))

    (reconciled,) = await audit_events(audit_settings, story.batch_id, "batch.reconciled")
    assert isinstance(reconciled, events.BatchReconciled)
    assert reconciled.issuer_id == "bank-a"
    assert reconciled.counts["ordered"] == 4
    assert reconciled.counts["encoded"] == 4
    assert reconciled.counts["spoiled_graphical"] == 1
    assert reconciled.counts["packed"] == 3
    assert reconciled.counts["destroyed"] == 1

    view = (await api.get(f"/v1/batches/{story.batch_id}/reconciliation", headers=AUDITOR)).json()
    assert view["status"] == "reconciled"
    assert view["missing"] == {"dispatch": sorted(str(c) for c in good)}

    await publish(audit_settings, [story.dispatch(good)])
    (closed,) = await audit_events(audit_settings, story.batch_id, "batch.closed")
    assert isinstance(closed, events.BatchClosed)
    assert (closed.dispatched, closed.destroyed) == (3, 1)

    # Every event is in the log, audit's own decisions included (they come back on its stream).
    entries = await logged(api, len(batch) + 3, batch_id=str(story.batch_id))
    assert {e["type"] for e in entries} >= {"order.accepted", "batch.reconciled", "batch.closed"}
    by_card = await logged(api, 7, card_id=str(good[0]))
    assert by_card[-1]["type"] == "shipment.dispatched"
    view = (await api.get(f"/v1/batches/{story.batch_id}/reconciliation", headers=AUDITOR)).json()
    assert view["status"] == "closed"
    assert view["complete"] is True
    verdict = (await api.get("/v1/log/verify", headers=AUDITOR)).json()
    assert verdict["ok"] is True
    assert verdict["checked"] >= len(batch) + 3

    # An auditor bound to another issuer sees neither the batch nor its events.
    other = await api.get(
        f"/v1/batches/{story.batch_id}/reconciliation", headers=OTHER_ISSUERS_AUDITOR
    )
    assert other.status_code == 404
    hidden = await api.get(
        "/v1/events", params={"batch_id": str(story.batch_id)}, headers=OTHER_ISSUERS_AUDITOR
    )
    assert hidden.json()["events"] == []
    operator_read = await api.get(f"/v1/batches/{story.batch_id}/reconciliation", headers=OPERATOR)
    assert operator_read.status_code == 403


async def test_a_duplicated_event_is_stored_once(
    audit: ServiceRuntime, audit_settings: AuditSettings, api: httpx.AsyncClient
) -> None:
    story = BatchStory(1)
    ordered = story.ordered(story.card_ids[0])
    await publish(audit_settings, [ordered, ordered])
    assert audit.consumer is not None
    consumer = audit.consumer

    async def both_seen() -> bool:
        return consumer.duplicates >= 1

    await wait_for(both_seen, timeout=60)
    entries = await logged(api, 1, card_id=str(ordered.card_id))
    assert [e["event_id"] for e in entries] == [str(ordered.event_id)]


async def test_a_withheld_card_is_named_when_asked_and_its_late_event_reconciles(
    audit: ServiceRuntime, audit_settings: AuditSettings, api: httpx.AsyncClient
) -> None:
    story = BatchStory(3)
    withheld_card = story.card_ids[1]
    batch = story.good_batch()
    withheld = next(
        e for e in batch if isinstance(e, events.CardEncoded) and e.card_id == withheld_card
    )
    delivered = [e for e in batch if e.event_id != withheld.event_id]
    await publish(audit_settings, delivered)
    await logged(api, len(delivered), batch_id=str(story.batch_id))

    asked = await api.post(f"/v1/batches/{story.batch_id}/reconcile", headers=OPERATOR)
    assert asked.status_code == 200, asked.text
    report = asked.json()
    assert report["status"] == "held"
    assert report["emitted"] == ["batch.discrepancy"]
    assert report["missing"] == {"electrical": [str(withheld_card)]}
    assert "stock: issued 3, encoded 2 + spoiled 0 + returned 0" in report["problems"]
    (discrepancy,) = await audit_events(audit_settings, story.batch_id, "batch.discrepancy")
    assert isinstance(discrepancy, events.BatchDiscrepancy)
    assert discrepancy.missing == {"electrical": [withheld_card]}

    again = (await api.post(f"/v1/batches/{story.batch_id}/reconcile", headers=AUDITOR)).json()
    assert again["emitted"] == []  # the same discrepancy is reported once
    assert again["last_discrepancy"]["missing"] == {"electrical": [str(withheld_card)]}

    await publish(audit_settings, [withheld])
    (reconciled,) = await audit_events(audit_settings, story.batch_id, "batch.reconciled")
    assert isinstance(reconciled, events.BatchReconciled)
    assert reconciled.counts["encoded"] == 3


@pytest.mark.parametrize(
    "audit_settings",
    [{"stale_after_seconds": 1.0, "sweep_interval_seconds": 0.3}],
    indirect=True,
)
async def test_the_sweep_reports_a_quiet_incomplete_batch_once(
    audit: ServiceRuntime, audit_settings: AuditSettings
) -> None:
    story = BatchStory(2)
    missing_card = story.card_ids[0]
    delivered = [
        e
        for e in story.good_batch()
        if not (isinstance(e, events.CardPacked) and e.card_id == missing_card)
    ]
    await publish(audit_settings, delivered)
    (discrepancy,) = await audit_events(audit_settings, story.batch_id, "batch.discrepancy")
    assert isinstance(discrepancy, events.BatchDiscrepancy)
    assert discrepancy.missing == {"packing": [missing_card]}
    assert discrepancy.problems == ["packing: in 2, packed 1 + destroyed 0"]

    # A later event makes the sweep look again; the same discrepancy is not reported twice.
    await publish(audit_settings, [story.ordered(story.card_ids[1])])
    await asyncio.sleep(3 * audit_settings.stale_after_seconds)
    reports = await read_stream(audit_settings, "audit", seconds=3)
    assert [e.type for e in reports if getattr(e, "batch_id", None) == story.batch_id] == [
        "batch.discrepancy"
    ]


async def test_the_log_refuses_update_delete_and_truncate_and_shows_tampering(
    audit: ServiceRuntime, audit_settings: AuditSettings, api: httpx.AsyncClient
) -> None:
    story = BatchStory(2)
    await publish(audit_settings, story.order())
    await logged(api, 3, batch_id=str(story.batch_id))
    for statement in (
        "UPDATE events SET actor = 'mallory'",
        "DELETE FROM events WHERE type = 'card.ordered'",
        "DELETE FROM events WHERE false",
        "TRUNCATE events",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with audit.engine.begin() as conn:
                await conn.execute(text(statement))
    assert len(await logged(api, 3, batch_id=str(story.batch_id))) == 3

    # Whoever gets past the trigger (the table owner) still cannot hide the change.
    async with audit.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE events DISABLE TRIGGER events_append_only"))
        await conn.execute(
            text(
                "UPDATE events SET payload = jsonb_set(payload, '{actor}', '\"mallory\"')"
                " WHERE type = 'card.ordered'"
            )
        )
        await conn.execute(text("ALTER TABLE events ENABLE TRIGGER events_append_only"))
    verdict = (await api.get("/v1/log/verify", headers=AUDITOR)).json()
    assert verdict["ok"] is False
    assert "altered" in verdict["problem"]


async def test_an_undecodable_record_is_dead_lettered_and_counted_in_the_log(
    audit: ServiceRuntime, audit_settings: AuditSettings, api: httpx.AsyncClient
) -> None:
    producer = AIOKafkaProducer(**client_options(audit_settings.kafka_bootstrap))
    await producer.start()
    try:
        await producer.send_and_wait(
            audit_settings.topic("qa"), value=b'{"type": "card.qa_passed"', key=b"garbage"
        )
    finally:
        await producer.stop()
    (dead,) = await collect(
        audit_settings.kafka_bootstrap, audit_settings.topic("dlq"), lambda seen: len(seen) >= 1
    )
    assert dead.value == b'{"type": "card.qa_passed"'
    assert dict(dead.headers)["dlq.reason"].decode().startswith("undecodable")
    (notice,) = await logged(api, 1, type="dead_letter.recorded")
    assert notice["payload"]["source_topic"] == audit_settings.topic("qa")
    assert notice["payload"]["consumer"] == audit.consumer_group
