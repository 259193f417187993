"""The station's use of the keymgmt client against a fake transport: retries while keymgmt is
away (the card waits, assigned), a refusal is a verdict, and the answer must be the contract's."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from services.electrical.ports import refusal_reason
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.keymgmt.contract import REFUSAL_HEADER, Refusal, SecureScriptRequest
from shared.keymgmt.errors import KeymgmtBadResponse, KeymgmtRefused

CARD = uuid.uuid4()
CHIP = "1A2B3C4D0001"
CHALLENGE = bytes.fromhex("0102030405060708")
IU_ANSWER = bytes.fromhex("434256431A2B3C4D0001300300") + bytes(16)
REQUEST = SecureScriptRequest(
    card_id=CARD,
    chip_serial=CHIP,
    host_challenge=CHALLENGE.hex(),
    initialize_update_response=IU_ANSWER.hex(),
)
SCRIPT = {
    "card_id": str(CARD),
    "chip_serial": CHIP,
    "security_level": "03",
    "apdus": ["8482030010" + "00" * 16, "84E6200015" + "00" * 21],
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
    """Configured as electrical's bootstrap does; no jitter drawn, so the waits are exact."""

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    return KeymgmtClient(
        "http://keymgmt",
        "station-token",
        policy=RetryPolicy.until_answered(backoff_s=0.1, backoff_max_s=0.4),
        transport=httpx.MockTransport(replies),
        sleep=sleep,
        draw=lambda: 0.0,
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
    script = await keymgmt.secure_script(REQUEST)
    assert script.chip_serial == CHIP
    assert script.security_level == "03"
    assert script.apdus == tuple(bytes.fromhex(a) for a in SCRIPT["apdus"])
    assert sleeps == [0.1, 0.2, 0.4, 0.4]
    assert keymgmt.retries.failures == 4
    sent = json.loads(replies.requests[-1].content)
    assert sent == {
        "card_id": str(CARD),
        "chip_serial": CHIP,
        "host_challenge": CHALLENGE.hex(),
        "initialize_update_response": IU_ANSWER.hex(),
    }
    assert replies.requests[-1].url.path == "/v1/perso/secure-scripts"
    assert replies.requests[-1].headers["authorization"] == "Bearer station-token"


async def test_a_4xx_is_keymgmts_verdict_on_the_card_without_card_data() -> None:
    replies = Replies(httpx.Response(409, text="script already issued for 4761739001010010"))
    with pytest.raises(KeymgmtRefused) as caught:
        await client(replies, []).secure_script(REQUEST)
    assert caught.value.status == 409
    assert caught.value.refusal is None
    reason = refusal_reason(caught.value)
    assert "HTTP 409" in reason
    assert "4761739001010010" not in reason
    assert "4761739001010010" not in str(caught.value)


async def test_a_card_cryptogram_mismatch_rejects_the_chip() -> None:
    headers = {REFUSAL_HEADER: Refusal.CARD_CRYPTOGRAM_MISMATCH}
    replies = Replies(httpx.Response(409, text="card cryptogram mismatch", headers=headers))
    with pytest.raises(KeymgmtRefused) as caught:
        await client(replies, []).secure_script(REQUEST)
    assert caught.value.refusal is Refusal.CARD_CRYPTOGRAM_MISMATCH
    assert refusal_reason(caught.value).startswith("card cryptogram mismatch")


async def test_a_cancelled_card_is_refused_as_such_not_as_the_chips_fault() -> None:
    headers = {REFUSAL_HEADER: Refusal.CARD_CANCELLED}
    replies = Replies(httpx.Response(409, text="the card was cancelled", headers=headers))
    with pytest.raises(KeymgmtRefused, match="cancelled") as refused:
        await client(replies, []).secure_script(REQUEST)
    assert refused.value.refusal is Refusal.CARD_CANCELLED  # not the chip's fault
    assert not refusal_reason(refused.value).startswith("card cryptogram mismatch")


@pytest.mark.parametrize(
    "body",
    [
        {**SCRIPT, "card_id": str(uuid.uuid4())},
        {**SCRIPT, "apdus": []},
        {**SCRIPT, "apdus": ["not hex"]},
        {**SCRIPT, "chip_serial": "XYZ"},
        {**SCRIPT, "chip_serial": "1A2B3C4D0002"},  # another chip's script
        {**SCRIPT, "security_level": "02"},
    ],
)
async def test_an_answer_outside_the_contract_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(KeymgmtBadResponse):
        await client(Replies(httpx.Response(200, json=body)), []).secure_script(REQUEST)
