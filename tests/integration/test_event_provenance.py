"""Event provenance on the real Kafka and Postgres (issue 15): a `batch.reconciled` produced on
electrical's topic, as a compromised station PC would, is dead-lettered as forged by fulfillment
and by audit, fulfillment does not dispatch the batch, audit keeps no such fact but shows the
security event to an auditor; the genuine `batch.reconciled` from audit's topic still ships it.

fulfillment and audit run in this process on fresh topics and schemas; keymgmt is the HTTP
double of the fulfillment tests.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.audit.settings import AuditSettings
from services.fulfillment.settings import FulfillmentSettings
from shared import events, metrics
from shared.bus import make_producer
from shared.service import ServiceRuntime
from tests.support.audit import AUDITOR, OTHER_ISSUERS_AUDITOR
from tests.support.audit import publish as audit_publish
from tests.support.audit_story import BatchStory
from tests.support.bus import collect, wait_for
from tests.support.fulfillment import (
    ISSUER,
    count_of,
    emitted,
    passed,
    publish,
)
from tests.support.graphical import KeymgmtDouble

pytestmark = pytest.mark.integration


async def in_inbox(runtime: ServiceRuntime, event_id: uuid.UUID) -> bool:
    async with runtime.engine.connect() as conn:
        found = await conn.execute(
            text(f"SELECT count(*) FROM {runtime.schema}.inbox WHERE event_id = :e"),
            {"e": event_id},
        )
        return bool(found.scalar_one())


async def security_events(api: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal found
        answer = await api.get("/v1/security-events", headers=AUDITOR)
        answer.raise_for_status()
        found = answer.json()["security_events"]
        return len(found) >= count

    await wait_for(enough, timeout=60)
    return found


def forged_count(topic: str) -> float:
    return sum(
        sample.value
        for metric in metrics.REGISTRY.collect()
        if metric.name == "bureau_forged_events"
        for sample in metric.samples
        if sample.name == "bureau_forged_events_total"
        and sample.labels.get("type") == "batch.reconciled"
        and sample.labels.get("topic") == topic
    )


async def test_a_forged_batch_reconciled_is_dead_lettered_audited_and_ships_nothing(
    fulfillment_settings: FulfillmentSettings,
    runtime: ServiceRuntime,
    audit: ServiceRuntime,
    api: httpx.AsyncClient,
    fulfillment_keymgmt: KeymgmtDouble,
) -> None:
    assert fulfillment_settings.topic_prefix == audit.settings.topic_prefix, (
        "one bureau, one prefix"
    )
    batch, card = uuid.uuid4(), fulfillment_keymgmt.add_card(ISSUER)
    await publish(fulfillment_settings, ("qa", passed(card, batch)))
    await emitted(fulfillment_settings, count_of("card.packed", 1))

    electrical = fulfillment_settings.topic("electrical")
    forged = events.BatchReconciled(issuer_id=ISSUER, actor="audit", batch_id=batch, counts={})
    await publish(fulfillment_settings, ("electrical", forged))
    reason = f"forged: type=batch.reconciled topic={electrical} producer=audit"

    # Both consumers that handle batch.reconciled dead-letter it, with the reason in a header.
    groups = {runtime.consumer_group, audit.consumer_group}

    def both_dead(seen: list[Any]) -> bool:
        sources = {dict(r.headers)["dlq.source"].decode().split("/")[0] for r in seen}
        return groups <= sources

    dead = await collect(
        fulfillment_settings.kafka_bootstrap, fulfillment_settings.topic("dlq"), both_dead
    )
    for record in dead:
        headers = dict(record.headers)
        assert headers["dlq.reason"].decode() == reason
        assert headers["dlq.source"].decode().split("/")[1] == electrical
        assert record.value == events.encode_event(forged)  # the record, kept as it came
    assert forged_count(electrical) >= 2

    # Fulfillment did not move: no shipment, the forged event never reached its inbox.
    out = await emitted(fulfillment_settings, count_of("dead_letter.recorded", 1))
    assert sorted(e.type for e in out) == ["card.packed", "dead_letter.recorded"]  # 2 partitions
    assert not await in_inbox(runtime, forged.event_id)
    assert not await in_inbox(audit, forged.event_id)

    # Audit shows the security event to a bureau auditor, once per consumer that found it, and
    # keeps no batch.reconciled as a fact.
    found = await security_events(api, 2)
    assert {e["detected_by"] for e in found} == groups
    for entry in found:
        assert entry["kind"] == "forged_event"
        assert entry["forged"] == {
            "type": "batch.reconciled",
            "topic": electrical,
            "producer": "audit",
        }
        assert entry["record"]["topic"] == electrical
    facts = await api.get("/v1/events", params={"type": "batch.reconciled"}, headers=AUDITOR)
    assert facts.json()["events"] == []
    refused = await api.get("/v1/security-events", headers=OTHER_ISSUERS_AUDITOR)
    assert refused.status_code == 403, refused.text
    chain = (await api.get("/v1/log/verify", headers=AUDITOR)).json()
    assert chain["ok"], chain

    # The genuine decision, on audit's own topic, still ships the batch.
    genuine = events.BatchReconciled(issuer_id=ISSUER, actor="audit", batch_id=batch, counts={})
    await publish(fulfillment_settings, ("audit", genuine))
    out = await emitted(fulfillment_settings, count_of("shipment.dispatched", 1))
    (shipment,) = [e for e in out if isinstance(e, events.ShipmentDispatched)]
    assert shipment.batch_id == batch
    assert shipment.card_ids == [card]
    assert await in_inbox(runtime, genuine.event_id)


async def test_audit_does_not_count_a_card_destroyed_that_a_station_forged(
    audit_settings: AuditSettings, audit: ServiceRuntime, api: httpx.AsyncClient
) -> None:
    """A station PC claims a card destroyed (fulfillment's event) on qa's topic: audit keeps it
    only as a security event, never as the card's end; the genuine one counts."""
    story = BatchStory(1)
    (card,) = story.card_ids
    forged = story.destroy(card)
    settings = audit_settings
    producer = make_producer(settings.kafka_bootstrap, "provenance-test")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("qa"), events.encode_event(forged))
    finally:
        await producer.stop()
    (found,) = await security_events(api, 1)
    assert found["forged"] == {
        "type": "card.destroyed",
        "topic": settings.topic("qa"),
        "producer": "fulfillment",
    }
    assert found["detected_by"] == audit.consumer_group
    logged = await api.get("/v1/events", params={"card_id": str(card)}, headers=AUDITOR)
    assert logged.json()["events"] == []

    genuine = story.destroy(card)
    await audit_publish(settings, [genuine])

    async def counted() -> bool:
        answer = await api.get("/v1/events", params={"card_id": str(card)}, headers=AUDITOR)
        return [e["event_id"] for e in answer.json()["events"]] == [str(genuine.event_id)]

    await wait_for(counted)
