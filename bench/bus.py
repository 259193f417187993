"""bench/bus: events/s through the shared bus (outbox -> relay -> Kafka -> consumer -> inbox +
effect, all durable) against raw aiokafka produce + consume of the same records on the same
broker, in the same run and with the same security settings (the stack's: SASL_SSL with
SCRAM-SHA-512, from .run/env.sh or BUREAU_KAFKA_* in the environment). Prints both figures,
the ratio and the security the run used.

    .venv/bin/python -m bench.bus [--events 20000]      (the local stack must be up)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

from aiokafka import AIOKafkaConsumer
from sqlalchemy import text

from shared import events
from shared.bus import ensure_topics, make_producer
from shared.kafka_client import KafkaSecurity, client_options
from shared.settings import BureauSettings
from tests.conftest import load_stack_env
from tests.support.bus import harness_runtime, prepared_event


async def raw_baseline(settings: BureauSettings, payloads: list[bytes]) -> float:
    topic = settings.topic("raw")
    security = KafkaSecurity.of(settings)  # what the bus path's runtimes use too
    await ensure_topics(settings.kafka_bootstrap, [topic], security=security)
    producer = make_producer(settings.kafka_bootstrap, "bench-raw", security)
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(settings.kafka_bootstrap, security),
        group_id=f"{topic}.g",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    start = time.perf_counter()
    futures = [
        await producer.send(topic, value=p, key=str(i).encode()) for i, p in enumerate(payloads)
    ]
    await asyncio.gather(*futures)
    received = 0
    while received < len(payloads):
        batch = await consumer.getmany(timeout_ms=500, max_records=1000)
        received += sum(len(records) for records in batch.values())
        await consumer.commit()
    elapsed = time.perf_counter() - start
    await consumer.stop()
    await producer.stop()
    return len(payloads) / elapsed


async def bus_path(settings: BureauSettings, sample: list[events.CardPrepared]) -> float:
    suffix = uuid.uuid4().hex[:8]
    source = harness_runtime(settings, f"bench_src_{suffix}")
    source.name = "keymgmt"  # the source emits to <prefix>.keymgmt, which the sink reads
    source.subscribe = []
    sink = harness_runtime(settings, f"bench_sink_{suffix}")
    await source.start()
    await sink.start()
    assert sink.consumer is not None
    await sink.consumer.ready.wait()
    start = time.perf_counter()
    for offset in range(0, len(sample), 500):
        async with source.unit_of_work() as uow:
            for event in sample[offset : offset + 500]:
                await uow.emit(event)
    while sink.consumer.processed < len(sample):
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    async with sink.engine.connect() as conn:
        effects = (await conn.execute(text("SELECT count(*) FROM effects"))).scalar_one()
    await source.stop()
    await sink.stop()
    if effects != len(sample):
        raise SystemExit(f"bench/bus: {effects} effects for {len(sample)} events")
    return len(sample) / elapsed


def security_label(settings: BureauSettings) -> str:
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_"):
        return f"{protocol} {settings.kafka_sasl_mechanism} as {settings.kafka_username}"
    return protocol


async def main(count: int) -> None:
    for key, value in load_stack_env().items():
        import os

        os.environ.setdefault(key, value)
    settings = BureauSettings(environment="test", topic_prefix=f"bench{uuid.uuid4().hex[:8]}")
    sample = [prepared_event() for _ in range(count)]
    payloads = [events.encode_event(e) for e in sample]
    raw = await raw_baseline(settings, payloads)
    bus = await bus_path(settings, sample)
    print(  # noqa: T201 - a benchmark prints its figures
        json.dumps(
            {
                "bench": "bus",
                "events": count,
                "kafka_security": security_label(settings),
                "raw_aiokafka_events_per_s": round(raw),
                "bus_events_per_s": round(bus),
                "ratio_bus_to_raw": round(bus / raw, 3),
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().events))
