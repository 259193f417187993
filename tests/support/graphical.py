"""The graphical service for tests: keymgmt's HTTP double, the fixtures (registered in
tests/conftest.py) of the IPP printer, the double and the service's settings, and events in and
out of Kafka."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Header, HTTPException

from services.graphical.app import bootstrap
from services.graphical.settings import GraphicalSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.bus import collect, publish_events
from tests.support.loopback import served
from tests.support.printer import TestPrinter

CLEAR_PAN = "4111111111111111"


MASKED_PAN = "411111******1111"


SERVICE_TOKEN = "graphical-test-token"


class KeymgmtDouble:
    """Test double of the keymgmt process: print-data and mailing over real HTTP."""

    def __init__(self, token: str) -> None:
        self.cards: dict[uuid.UUID, dict[str, Any]] = {}
        self.with_pin: set[uuid.UUID] = set()  # cards whose PIN mailer keymgmt prints
        self.calls: Counter[str] = Counter()
        self.outage_left = 0  # answer 503 to this many calls first
        app = FastAPI()

        def card(card_id: uuid.UUID, authorization: str, endpoint: str) -> dict[str, Any]:
            self.calls[endpoint] += 1
            if authorization != f"Bearer {token}":
                raise HTTPException(401)
            if self.outage_left > 0:
                self.outage_left -= 1
                raise HTTPException(503, "HSM busy")
            if card_id not in self.cards:
                raise HTTPException(404, "no such card")
            return self.cards[card_id]

        @app.get("/v1/vault/cards/{card_id}/print-data")
        async def print_data(card_id: uuid.UUID, authorization: str = Header("")) -> Any:
            record = card(card_id, authorization, "print-data")
            keys = ("card_id", "issuer_id", "cardholder_name", "masked_pan", "expiry")
            return {k: record[k] for k in keys}

        @app.get("/v1/vault/cards/{card_id}/mailing")
        async def mailing(card_id: uuid.UUID, authorization: str = Header("")) -> Any:
            record = card(card_id, authorization, "mailing")
            return {k: record[k] for k in ("card_id", "cardholder_name", "address")}

        @app.post("/v1/pin-mailers")
        async def pin_mailer(body: dict[str, str], authorization: str = Header("")) -> Any:
            card_id = uuid.UUID(body["card_id"])
            card(card_id, authorization, "pin-mailer")
            if card_id not in self.with_pin:
                raise HTTPException(404, "no PIN for this card")
            mailer_id = uuid.uuid5(card_id, "pin-mailer")
            return {"mailer_id": str(mailer_id), "card_id": str(card_id), "status": "printed"}

        self._app = app
        self._serving = AsyncExitStack()
        self.url = ""  # once entered

    def add_card(self, issuer_id: str, masked_pan: str = MASKED_PAN) -> uuid.UUID:
        card_id = uuid.uuid4()
        self.cards[card_id] = {
            "card_id": str(card_id),
            "pan": CLEAR_PAN,  # the vault holds it; neither endpoint hands it out
            "issuer_id": issuer_id,
            "cardholder_name": "Jane Q Public",
            "masked_pan": masked_pan,
            "expiry": "2812",
            "address": {
                "lines": ["1 Test Street"],
                "postcode": "T1 1ST",
                "city": "Testville",
                "country": "GB",
            },
        }
        return card_id

    async def __aenter__(self) -> KeymgmtDouble:
        self.url = await self._serving.enter_async_context(served(self._app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._serving.aclose()


@pytest.fixture
async def printer(stack_env: dict[str, str], tmp_path: Path) -> AsyncIterator[TestPrinter]:
    device = TestPrinter.tls(tmp_path / "printer")  # the card printer serves IPPS only
    device.start()
    try:
        await device.wait_up()
        yield device
    finally:
        device.stop()


def encoded(card_id: uuid.UUID, issuer_id: str = "acme") -> events.CardEncoded:
    return events.CardEncoded(
        issuer_id=issuer_id,
        actor="station-a",
        card_id=card_id,
        batch_id=uuid.uuid4(),
        chip_serial=f"CS{card_id.hex[:10].upper()}",
        station_id="station-a",
        reader="reader-0",
        apdu_count=12,
    )


async def publish(settings: GraphicalSettings, stream: str, *items: events.Event) -> None:
    await publish_events(settings, *((stream, item) for item in items))


async def emitted(settings: GraphicalSettings, count: int) -> list[events.Event]:
    records = await collect(
        settings.kafka_bootstrap, settings.topic("graphical"), lambda seen: len(seen) >= count
    )
    return [events.decode_event(r.value) for r in records]


def graphical(settings: GraphicalSettings, unique: str) -> ServiceRuntime:
    return bootstrap(settings, schema=f"graphical_{unique}")


@pytest.fixture
async def graphical_keymgmt() -> AsyncIterator[KeymgmtDouble]:
    """keymgmt as graphical calls it: the double over real HTTP, taking graphical's token."""
    async with KeymgmtDouble(SERVICE_TOKEN) as double:
        yield double


@pytest.fixture
def graphical_settings(
    stack_env: dict[str, str], unique: str, graphical_keymgmt: KeymgmtDouble, printer: TestPrinter
) -> GraphicalSettings:
    """The service's settings for a test: its own topic prefix and tokens, the keymgmt double,
    and the test's TLS card printer."""
    keymgmt = graphical_keymgmt
    return GraphicalSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        service_tokens=f"graphical={SERVICE_TOKEN},qa=qa-{unique}",
        principals=f"operator:olga=op-{unique},issuer:acme-ops:acme=iss-{unique},"
        f"issuer:other-ops:other=oth-{unique}",
        keymgmt_url=keymgmt.url,
        keymgmt_attempts=2,
        card_printer_uri=printer.uri,
        card_printer_ca=printer.ca,
        graphical_printer="test-card",
        print_backoff_s=0.1,
        print_backoff_max_s=0.5,
    )
