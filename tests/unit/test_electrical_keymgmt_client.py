"""The station's keymgmt client against a fake transport: retries while keymgmt is away (the
card waits, assigned), a refusal is a verdict, and the answer must be the contract's."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from services.electrical.keymgmt_client import (
    KeymgmtBadResponse,
    KeymgmtClient,
    KeymgmtRefused,
)

CARD = uuid.uuid4()
DIV = bytes.fromhex("434256431A2B3C4D0001")
SCRIPT = {
    "card_id": str(CARD),
    "chip_serial": "1A2B3C4D0001",
    "apdus": ["00A4040007A0000000031010"],
}


class Replies:
    def __init__(self, *replies: httpx.Response | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def client(replies: Replies, sleeps: list[float]) -> KeymgmtClient:
    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    return KeymgmtClient(
        "http://keymgmt",
        "station-token",
        backoff_s=0.1,
        backoff_max_s=0.4,
        transport=httpx.MockTransport(replies),
        sleep=sleep,
    )


async def test_keymgmt_away_is_retried_with_capped_backoff_until_it_answers() -> None:
    replies = Replies(
        httpx.ConnectError("refused"),
        httpx.Response(503),
        httpx.Response(401),
        httpx.Response(500),
        httpx.Response(200, json=SCRIPT),
    )
    sleeps: list[float] = []
    keymgmt = client(replies, sleeps)
    script = await keymgmt.perso_script(CARD, DIV)
    assert script.chip_serial == "1A2B3C4D0001"
    assert script.apdus == (bytes.fromhex("00A4040007A0000000031010"),)
    assert sleeps == [0.1, 0.2, 0.4, 0.4]
    assert keymgmt.retries.failures == 4
    sent = json.loads(replies.requests[-1].content)
    assert sent == {"card_id": str(CARD), "diversification_data": "434256431a2b3c4d0001"}
    assert replies.requests[-1].headers["authorization"] == "Bearer station-token"


async def test_a_4xx_is_keymgmts_verdict_on_the_card_without_card_data() -> None:
    replies = Replies(httpx.Response(409, text="script already issued for 4761739001010010"))
    with pytest.raises(KeymgmtRefused, match="HTTP 409") as caught:
        await client(replies, []).perso_script(CARD, DIV)
    assert "4761739001010010" not in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        {**SCRIPT, "card_id": str(uuid.uuid4())},
        {**SCRIPT, "apdus": []},
        {**SCRIPT, "apdus": ["not hex"]},
        {**SCRIPT, "chip_serial": "XYZ"},
    ],
)
async def test_an_answer_outside_the_contract_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(KeymgmtBadResponse):
        await client(Replies(httpx.Response(200, json=body)), []).perso_script(CARD, DIV)
