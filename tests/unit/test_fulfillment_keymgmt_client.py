"""The fulfillment keymgmt client: the mailing contract and its failure classes.

In-process MockTransport here; the real HTTP path runs in test_fulfillment_dispatch.py.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from services.fulfillment.keymgmt_client import (
    CardNotInVault,
    KeymgmtBadResponse,
    KeymgmtClient,
    KeymgmtUnavailable,
)

CARD = uuid.uuid4()
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
        "http://keymgmt.test", "fulfillment-token", attempts=2, backoff_s=0, transport=answer
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
    with pytest.raises(CardNotInVault):
        await client(httpx.MockTransport(lambda r: httpx.Response(404))).mailing(CARD)
    with pytest.raises(KeymgmtUnavailable):
        await client(httpx.MockTransport(lambda r: httpx.Response(502))).mailing(CARD)
    broken = {**MAILING, "address": {"lines": "1 Test Street"}}
    with pytest.raises(KeymgmtBadResponse, match="address") as caught:
        await client(httpx.MockTransport(lambda r: httpx.Response(200, json=broken))).mailing(CARD)
    assert "Test Street" not in str(caught.value)
