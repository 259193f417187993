"""The keymgmt client as fulfillment uses it: the mailing contract, PIN mailers, and the
failure classes.

In-process MockTransport here; the real HTTP path runs in test_fulfillment_dispatch.py.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.keymgmt.contract import PinMailerRequest
from shared.keymgmt.errors import KeymgmtBadResponse, KeymgmtRefused, KeymgmtUnavailable

CARD = uuid.uuid4()
BATCH = uuid.uuid4()
MAILING = {
    "card_id": str(CARD),
    "cardholder_name": "JANE PUBLIC",
    "address": {
        "lines": ["1 Test Street"],
        "postcode": "T1 1ST",
        "city": "Testville",
        "country": "GB",
    },
}


def client(answer: httpx.MockTransport) -> KeymgmtClient:
    return KeymgmtClient(
        "http://keymgmt.test",
        "fulfillment-token",
        policy=RetryPolicy(max_attempts=2, backoff_s=0),
        transport=answer,
    )


async def test_mailing_address_is_read_with_the_service_token() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=MAILING)

    mailing = await client(httpx.MockTransport(answer)).mailing(CARD)
    assert mailing.address.city == "Testville"
    assert seen[0].url.path == f"/v1/vault/cards/{CARD}/mailing"
    assert seen[0].headers["authorization"] == "Bearer fulfillment-token"


async def test_unknown_card_outage_and_broken_answers_are_told_apart() -> None:
    with pytest.raises(KeymgmtRefused) as unknown:
        await client(httpx.MockTransport(lambda r: httpx.Response(404))).mailing(CARD)
    assert unknown.value.not_found
    with pytest.raises(KeymgmtUnavailable):
        await client(httpx.MockTransport(lambda r: httpx.Response(502))).mailing(CARD)
    broken = {**MAILING, "address": {"lines": "1 Test Street"}}
    with pytest.raises(KeymgmtBadResponse, match="address") as caught:
        await client(httpx.MockTransport(lambda r: httpx.Response(200, json=broken))).mailing(CARD)
    assert "Test Street" not in str(caught.value)


async def test_pin_mailer_state_none_without_a_pin_and_refusals() -> None:
    seen: list[httpx.Request] = []
    state = {"mailer_id": str(uuid.uuid4()), "card_id": str(CARD), "status": "printed"}

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=state)

    request = PinMailerRequest(card_id=CARD, batch_id=BATCH)
    mailer = await client(httpx.MockTransport(answer)).pin_mailer(request)
    assert mailer is not None
    assert mailer.status == "printed"
    assert seen[0].url.path == "/v1/pin-mailers"
    assert json.loads(seen[0].content) == {"card_id": str(CARD), "batch_id": str(BATCH)}
    no_pin = httpx.MockTransport(lambda r: httpx.Response(404))
    assert await client(no_pin).pin_mailer(request) is None
    with pytest.raises(KeymgmtRefused):
        await client(httpx.MockTransport(lambda r: httpx.Response(409))).pin_mailer(request)
    with pytest.raises(KeymgmtUnavailable):
        await client(httpx.MockTransport(lambda r: httpx.Response(503))).pin_mailer(request)
    odd = {**state, "status": "lost"}
    with pytest.raises(KeymgmtBadResponse, match="status"):
        await client(httpx.MockTransport(lambda r: httpx.Response(200, json=odd))).pin_mailer(
            request
        )
