"""How the keymgmt client, configured as graphical's vault reader, classifies answers: retry,
poison (an unknown card) or contract breach.

The transport here is httpx's in-process MockTransport; the real HTTP path runs against a
server in tests/integration/test_graphical_printing.py.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.keymgmt.errors import KeymgmtBadResponse, KeymgmtRefused, KeymgmtUnavailable

CARD = uuid.uuid4()
BODY = {
    "card_id": str(CARD),
    "issuer_id": "acme",
    "cardholder_name": "JANE PUBLIC",
    "masked_pan": "411111******1111",
    "expiry": "2812",
}


def client(handler: httpx.MockTransport, attempts: int = 3) -> KeymgmtClient:
    return KeymgmtClient(
        "http://keymgmt.test",
        "graphical-token",
        policy=RetryPolicy(max_attempts=attempts, backoff_s=0),
        transport=handler,
    )


async def test_5xx_is_retried_then_the_answer_is_used() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503) if len(seen) < 3 else httpx.Response(200, json=BODY)

    data = await client(httpx.MockTransport(answer)).print_data(CARD)
    assert data.masked_pan == "411111******1111"
    assert len(seen) == 3
    assert seen[0].url.path == f"/v1/vault/cards/{CARD}/print-data"
    assert seen[0].headers["authorization"] == "Bearer graphical-token"


async def test_lasting_outage_is_transient_for_the_consumer() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(KeymgmtUnavailable, match="failed 3 times") as caught:
        await client(httpx.MockTransport(refuse)).print_data(CARD)
    assert isinstance(caught.value, ConnectionError)  # the bus retries these without limit


async def test_404_means_the_card_is_unknown() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(404))
    with pytest.raises(KeymgmtRefused) as caught:
        await client(transport).print_data(CARD)
    assert caught.value.not_found
    assert not isinstance(caught.value, ConnectionError)  # not retried: a poison event


async def test_refused_credentials_are_a_fault_of_ours_not_of_the_card() -> None:
    seen: list[httpx.Request] = []

    def forbid(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(403)

    with pytest.raises(KeymgmtUnavailable, match="service token"):
        await client(httpx.MockTransport(forbid)).print_data(CARD)
    assert len(seen) == 1  # the vault reader leaves that retry to the consumer


async def test_an_answer_outside_the_contract_names_the_field_not_the_data() -> None:
    broken = {**BODY, "expiry": None}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=broken))
    with pytest.raises(KeymgmtBadResponse, match="expiry") as caught:
        await client(transport).print_data(CARD)
    assert "JANE" not in str(caught.value)
