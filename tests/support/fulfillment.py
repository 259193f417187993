"""The fulfillment service for tests: its settings, keymgmt's double, its runtime and HTTP
client (fixtures registered in tests/conftest.py), and events in and out of Kafka."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.fulfillment.app import bootstrap, build_app
from services.fulfillment.settings import FulfillmentSettings
from shared import events
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.bus import collect, publish_events
from tests.support.graphical import KeymgmtDouble

SERVICE_TOKEN = "fulfillment-test-token"


ISSUER = "acme"


def passed(card_id: uuid.UUID, batch_id: uuid.UUID) -> events.CardQaPassed:
    return events.CardQaPassed(
        issuer_id=ISSUER,
        actor="qa",
        card_id=card_id,
        batch_id=batch_id,
        chip_serial="CS" + card_id.hex[:8],
        checks=["readback", "arqc"],
    )


async def publish(settings: FulfillmentSettings, *items: tuple[str, events.Event]) -> None:
    await publish_events(settings, *items)


async def emitted(settings: FulfillmentSettings, until: Any) -> list[events.Event]:
    def enough(seen: list[Any]) -> bool:
        return bool(until([events.decode_event(r.value) for r in seen]))

    records = await collect(settings.kafka_bootstrap, settings.topic("fulfillment"), enough)
    return [events.decode_event(r.value) for r in records]


def count_of(kind: str, n: int) -> Any:
    return lambda seen: sum(e.type == kind for e in seen) >= n


@pytest.fixture
async def runtime(
    fulfillment_settings: FulfillmentSettings, unique: str
) -> AsyncIterator[ServiceRuntime]:
    schema = f"fulfillment_{unique}"
    async with running(bootstrap(fulfillment_settings, schema=schema)) as started:
        yield started


@pytest.fixture
async def http(runtime: ServiceRuntime, unique: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(runtime))
    headers = {"Authorization": f"Bearer op-{unique}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://fulfillment", headers=headers
    ) as client:
        yield client


@pytest.fixture
async def fulfillment_keymgmt() -> AsyncIterator[KeymgmtDouble]:
    """keymgmt as fulfillment calls it: graphical's double, taking fulfillment's token."""
    async with KeymgmtDouble(SERVICE_TOKEN) as double:
        yield double


@pytest.fixture
def fulfillment_settings(
    stack_env: dict[str, str], unique: str, fulfillment_keymgmt: KeymgmtDouble, tmp_path: Path
) -> FulfillmentSettings:
    """The service's settings for a test: its own topic prefix, two operators and an auditor,
    the keymgmt double, and manifest and inserter folders under the test's own."""
    keymgmt = fulfillment_keymgmt
    return FulfillmentSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        service_tokens=f"fulfillment={SERVICE_TOKEN}",
        principals=f"operator:olga=op-{unique},operator:oscar=op2-{unique},auditor:ann=aud-{unique}",
        keymgmt_url=keymgmt.url,
        fulfillment_manifest_dir=tmp_path / "manifests",
        fulfillment_inserter_dir=tmp_path / "inserter",
        fulfillment_courier="swift-post",
    )


async def destroy_under_dual_control(
    http: httpx.AsyncClient, cards: list[uuid.UUID], unique: str
) -> httpx.Response:
    """Olga (the client's token) requests the destruction, Oscar confirms it with his own."""
    body = {"card_ids": [str(c) for c in cards]}
    asked = await http.post("/v1/destructions", json=body)
    assert asked.status_code == 201, asked.text
    oscar = {"Authorization": f"Bearer op2-{unique}"}
    return await http.post(
        f"/v1/destructions/{asked.json()['destruction_id']}/confirm", headers=oscar
    )
