"""Effectively-once processing on the real broker and database (the spine's guarantees)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from shared import events
from shared.settings import BureauSettings
from tests.conftest import REPO, running
from tests.support.bus import (
    POISON_ISSUER,
    collect,
    effect_count,
    harness_runtime,
    prepared_event,
    publish,
    wait_for,
)

pytestmark = pytest.mark.integration


async def test_same_event_delivered_twice_has_one_effect(
    bureau_settings: BureauSettings, unique: str
) -> None:
    event = prepared_event()
    raw = events.encode_event(event)
    async with running(harness_runtime(bureau_settings, f"bus_{unique}")) as runtime:
        await publish(
            bureau_settings, "keymgmt", (str(event.card_id), raw), (str(event.card_id), raw)
        )
        assert runtime.consumer is not None
        consumer = runtime.consumer

        async def both_seen() -> bool:
            return consumer.processed + consumer.duplicates >= 2

        await wait_for(both_seen)
        assert await effect_count(runtime, event.card_id) == 1
        assert consumer.duplicates == 1
    encoded = await collect(
        bureau_settings.kafka_bootstrap,
        bureau_settings.topic("electrical"),
        lambda seen: len(seen) >= 1,
    )
    assert [events.decode_event(r.value).type for r in encoded] == ["card.encoded"]


async def test_consumer_killed_after_effect_before_commit_causes_no_duplicate(
    bureau_settings: BureauSettings, unique: str
) -> None:
    schema = f"bus_{unique}"
    event = prepared_event()
    await publish(bureau_settings, "keymgmt", (str(event.card_id), events.encode_event(event)))
    crashed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.crash_consumer",
        bureau_settings.topic_prefix,
        schema,
        cwd=REPO,
    )
    assert await asyncio.wait_for(crashed.wait(), 90) == -9, "the consumer should die by SIGKILL"
    async with running(harness_runtime(bureau_settings, schema)) as runtime:
        assert await effect_count(runtime, event.card_id) == 1, "effect was durable before kill"
        assert runtime.consumer is not None
        consumer = runtime.consumer

        async def redelivered() -> bool:
            return consumer.duplicates >= 1

        await wait_for(redelivered, timeout=60)
        assert await effect_count(runtime, event.card_id) == 1
        assert consumer.processed == 0


async def test_undecodable_and_poison_events_land_in_the_dead_letter_topic(
    bureau_settings: BureauSettings, unique: str
) -> None:
    poison = prepared_event(issuer_id=POISON_ISSUER)
    async with running(harness_runtime(bureau_settings, f"bus_{unique}")) as runtime:
        await publish(
            bureau_settings,
            "keymgmt",
            ("garbage", b"{this is not an event"),
            (str(poison.card_id), events.encode_event(poison)),
        )
        dead = await collect(
            bureau_settings.kafka_bootstrap,
            bureau_settings.topic("dlq"),
            lambda seen: len(seen) >= 2,
        )
        assert runtime.consumer is not None
        assert runtime.consumer.dead_lettered == 2
        assert await effect_count(runtime, poison.card_id) == 0
    reasons = sorted(dict(r.headers)["dlq.reason"].decode().split(":")[0] for r in dead)
    assert reasons == ["poison", "undecodable"]
    undecodable = [r for r in dead if dict(r.headers)["dlq.reason"].startswith(b"undecodable")]
    assert [r.value for r in undecodable] == [b"{this is not an event"]  # the raw record, kept
    notices = await collect(
        bureau_settings.kafka_bootstrap,
        bureau_settings.topic("electrical"),
        lambda seen: len(seen) >= 2,
    )
    decoded = [events.decode_event(r.value) for r in notices]
    assert {e.type for e in decoded} == {"dead_letter.recorded"}


async def test_trace_continues_across_the_kafka_hop(
    bureau_settings: BureauSettings, unique: str
) -> None:
    from opentelemetry import trace

    from shared.telemetry import configure_tracing, current_trace_context

    configure_tracing("bus-test", None)
    with trace.get_tracer("test").start_as_current_span("issuer posts order"):
        event = prepared_event().model_copy(update={"trace": current_trace_context()})
    assert event.trace is not None
    async with running(harness_runtime(bureau_settings, f"bus_{unique}")):
        await publish(bureau_settings, "keymgmt", (str(event.card_id), events.encode_event(event)))
        out = await collect(
            bureau_settings.kafka_bootstrap,
            bureau_settings.topic("electrical"),
            lambda seen: len(seen) >= 1,
        )
    follow_up = events.decode_event(out[0].value)
    assert follow_up.trace is not None
    trace_id = event.trace.traceparent.split("-")[1]
    assert follow_up.trace.traceparent.split("-")[1] == trace_id
    assert follow_up.trace.traceparent != event.trace.traceparent  # a child span, same trace
