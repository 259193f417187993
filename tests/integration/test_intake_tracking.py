"""Following an order on the real stack: intake consumes the lifecycle events other services
put on Kafka (played here by the test), keeps each card's status and the order's events,
cancels cards not yet personalized (card.cancelled + stock.returned on its topic), and calls
the issuer back: a real HTTP receiver on 127.0.0.1 that fails at first gets retries, then
every milestone, each signed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from services.intake.webhooks import SIGNATURE_HEADER, verify
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from tests.support.bus import collect
from tests.support.intake import Intake, card, expect, produce, started_intake

pytestmark = pytest.mark.integration

SECRET = "whsec_test-secret-that-is-long-enough-0123456789"
FAILURES = 3


class Receiver:
    """An issuer's webhook endpoint: answers 503 to the first `failures` calls, then 204."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[int, dict[str, str], bytes]] = []  # (status, headers, body)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 503 if len(receiver.calls) < receiver.failures else 204
                receiver.calls.append((status, dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/bureau-events"

    def delivered(self) -> list[dict[str, Any]]:
        return [json.loads(body) for status, _, body in self.calls if status == 204]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(FAILURES)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    thread.join()


@pytest.fixture
async def intake(
    settings: KeymgmtSettings,
    keymgmt: tuple[Any, httpx.AsyncClient],
    unique: str,
) -> AsyncIterator[Intake]:
    async with started_intake(
        settings,
        keymgmt[1],
        unique,
        webhook_backoff_base=0.05,
        webhook_poll_interval=0.05,
        webhook_allowed_networks="127.0.0.1/32",  # the test receiver, allowed by the operator
    ) as started:
        consumer = started.runtime.consumer
        assert consumer is not None
        await wait_until(consumer.ready.is_set)
        yield started


async def wait_until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def lifecycle(order: dict[str, Any], cards: list[UUID]) -> dict[str, list[events.Event]]:
    """By topic: card 0 goes to dispatch, card 1 is spoiled, card 2 prepared, 3 untouched."""
    common = {"issuer_id": "bank-a", "batch_id": UUID(order["batch_id"])}
    prepared: list[events.Event] = [
        events.CardPrepared(
            **common,
            actor="keymgmt",
            card_id=c,
            product_id="debit",
            masked_pan="476173******0000",
            application="emv",
            key_scheme="EMV-OPTION-A",
        )
        for c in cards[:3]
    ]
    return {
        "keymgmt": prepared,
        "electrical": [
            events.CardEncoded(
                **common,
                actor="station-a",
                card_id=cards[0],
                chip_serial="CS1",
                station_id="station-a",
                reader="r0",
                apdu_count=9,
            ),
            events.CardSpoiled(
                **common, actor="station-a", card_id=cards[1], stage="electrical", reason="6A82"
            ),
        ],
        "fulfillment": [
            events.CardPacked(**common, actor="fulfillment", card_id=cards[0], carrier_id="C1"),
            events.ShipmentDispatched(
                **common,
                actor="fulfillment",
                shipment_id=uuid4(),
                kind="cards",
                card_ids=[cards[0]],
                courier="post",
                manifest_sha256="0" * 64,
            ),
        ],
    }


async def test_statuses_events_cancellation_and_signed_callbacks_with_retries(
    intake: Intake, receiver: Receiver
) -> None:
    a = intake.issuer("bank-a")
    hook = await intake.http.put(
        "/v1/webhook", json={"url": receiver.url, "secret": SECRET}, headers=a
    )
    assert hook.status_code == 200
    assert hook.json()["secret"] is None, "a secret the issuer chose is not echoed"
    answer = await intake.order("bank-a", "track-key-1", [card(n) for n in range(4)])
    assert answer.status_code == 201, answer.text
    order = answer.json()
    cards = [UUID(c["card_id"]) for c in order["cards"]]

    for stream, items in lifecycle(order, cards).items():
        await produce(intake.settings.kafka_bootstrap, intake.settings.topic(stream), items)

    async def counts() -> dict[str, int]:
        got = await intake.http.get(f"/v1/orders/{order['order_id']}", headers=a)
        result: dict[str, int] = got.json()["cards_by_status"]
        return result

    want = {"dispatched": 1, "spoiled": 1, "prepared": 1, "ordered": 1}
    await wait_until(lambda: _equal(counts(), want))
    one = await intake.http.get(f"/v1/cards/{cards[1]}", headers=a)
    assert one.json()["status"] == "spoiled"

    late = await intake.http.post(
        f"/v1/orders/{order['order_id']}/cancellations",
        json={"card_ids": [str(cards[0]), str(cards[2])], "reason": "account closed"},
        headers=a,
    )
    assert late.status_code == 409, "all or nothing: card 0 is already dispatched"
    assert str(cards[0]) in late.text
    cancelled = await expect(
        intake.http.post(
            f"/v1/orders/{order['order_id']}/cancellations",
            json={"reason": "account closed"},
            headers=a,
        ),
        200,
    )
    assert set(cancelled.json()["cancelled"]) == {str(cards[2]), str(cards[3])}
    assert await counts() == {"dispatched": 1, "spoiled": 1, "cancelled": 2}

    emitted = await collect(
        intake.settings.kafka_bootstrap,
        intake.settings.topic("intake"),
        lambda seen: (
            sum(b'"card.cancelled"' in r.value for r in seen) >= 2
            and any(b'"stock.returned"' in r.value for r in seen)
        ),
    )
    returned = [
        e
        for e in map(events.decode_event, (r.value for r in emitted))
        if isinstance(e, events.StockReturned)
    ]
    assert [r.quantity for r in returned] == [2]

    history = await intake.http.get(f"/v1/orders/{order['order_id']}/events", headers=a)
    types = [e["type"] for e in history.json()["events"]]
    assert types[0] == "order.accepted"
    assert sorted(set(types)) == sorted(
        {
            "order.accepted",
            "card.prepared",
            "card.encoded",
            "card.spoiled",
            "card.packed",
            "shipment.dispatched",
            "card.cancelled",
        }
    )
    spoiled = next(e for e in history.json()["events"] if e["type"] == "card.spoiled")
    assert spoiled["detail"] == {"stage": "electrical", "reason": "6A82"}

    expected = {"order.accepted", "card.spoiled", "cards.dispatched", "card.cancelled"}
    await wait_until(lambda: len(receiver.delivered()) >= 5, timeout=60)
    kinds = sorted(d["type"] for d in receiver.delivered())
    assert kinds == sorted([*expected, "card.cancelled"])
    assert [status for status, _, _ in receiver.calls[:FAILURES]] == [503] * FAILURES
    for _, headers, body in receiver.calls:
        assert verify(SECRET, headers[SIGNATURE_HEADER], body, time.time())
        assert not verify("another secret", headers[SIGNATURE_HEADER], body, time.time())
    deliveries = (await intake.http.get("/v1/webhook/deliveries", headers=a)).json()
    assert all(d["delivered_at"] for d in deliveries)
    assert max(d["attempts"] for d in deliveries) > 1, "the failed calls were retried"


async def _equal(got: Any, want: dict[str, int]) -> bool:
    return bool(await got == want)
