"""The audit service on the real stack for tests: settings with a fresh topic
prefix and schema, the runtime and its API in process, publishing each event to the stream of
the service that emits it, and waiting for what audit logs and emits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any
from uuid import UUID

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text

from services.audit.app import bootstrap, build_app
from services.audit.settings import AuditSettings
from shared import events
from shared.db import make_engine
from shared.events.producers import producer_of
from shared.kafka_client import client_options
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.bus import collect, wait_for

AUDITOR = {"Authorization": "Bearer auditor-dev-token"}
OPERATOR = {"Authorization": "Bearer operator-dev-token"}
OTHER_ISSUERS_AUDITOR = {"Authorization": "Bearer bea-test-token"}


def stream_of(event: events.Event) -> str:
    """The stream of the service that produces the event (a notice: audit's own)."""
    return producer_of(event) or "audit"


@pytest.fixture
def audit_settings(
    stack_env: dict[str, str], unique: str, request: pytest.FixtureRequest
) -> AuditSettings:
    """Test settings; a test may override some through indirect parametrization."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return AuditSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        principals=AuditSettings().principals + ",auditor:bea:bank-b=bea-test-token",
        **overrides,
    )


@pytest.fixture
async def audit(audit_settings: AuditSettings, unique: str) -> AsyncIterator[ServiceRuntime]:
    schema = f"audit_{unique}"
    async with running(bootstrap(audit_settings, schema=schema)) as runtime:
        yield runtime
    # The log refuses DELETE and TRUNCATE, not the end of a test's private schema.
    engine = make_engine(audit_settings.database_url, schema)
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    await engine.dispose()


@pytest.fixture
async def api(audit: ServiceRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(audit))
    async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
        yield client


async def publish(settings: AuditSettings, batch: Iterable[events.Event]) -> None:
    """Each event to the stream of the service that emits it, keyed as the contract says."""
    producer = AIOKafkaProducer(
        **client_options(settings.kafka_bootstrap), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for event in batch:
            await producer.send_and_wait(
                settings.topic(stream_of(event)),
                value=events.encode_event(event),
                key=event.partition_key().encode(),
            )
    finally:
        await producer.stop()


async def audit_events(
    settings: AuditSettings, batch_id: UUID, wanted: str, count: int = 1, timeout: float = 60
) -> list[events.Event]:
    """Read the audit stream until `count` events of type `wanted` for the batch appeared."""

    def of_batch(records: list[Any]) -> list[events.Event]:
        decoded = (events.decode_event(r.value) for r in records)
        return [e for e in decoded if e.type == wanted and getattr(e, "batch_id", None) == batch_id]

    seen = await collect(
        settings.kafka_bootstrap,
        settings.topic("audit"),
        lambda records: len(of_batch(records)) >= count,
        timeout=timeout,
    )
    return of_batch(seen)


async def read_stream(settings: AuditSettings, stream: str, seconds: float) -> list[events.Event]:
    """Everything on a stream from the beginning, read for a while."""
    consumer = AIOKafkaConsumer(
        settings.topic(stream),
        **client_options(settings.kafka_bootstrap),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[events.Event] = []
    try:
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen.extend(events.decode_event(r.value) for r in records)
    finally:
        await consumer.stop()
    return seen


async def logged(api: httpx.AsyncClient, count: int, **filters: Any) -> list[dict[str, Any]]:
    """Wait until the log holds `count` entries matching the filters; return them."""
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal found
        response = await api.get("/v1/events", params={**filters, "limit": 1000}, headers=AUDITOR)
        response.raise_for_status()
        found = response.json()["events"]
        return len(found) >= count

    await wait_for(enough, timeout=60)
    return found


async def control_steps(api: httpx.AsyncClient, count: int, **filters: Any) -> list[dict[str, Any]]:
    """Wait until audit's auditor endpoint shows `count` dual-control steps matching the
    filters (GET /v1/control-events); return them, in log order."""
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal found
        params = {**filters, "limit": 1000}
        response = await api.get("/v1/control-events", params=params, headers=AUDITOR)
        response.raise_for_status()
        found = response.json()["control_events"]
        return len(found) >= count

    await wait_for(enough, timeout=60)
    return found
