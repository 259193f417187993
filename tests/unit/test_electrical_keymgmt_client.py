"""The station's keymgmt client against a fake transport: retries while keymgmt is away (the
card waits, assigned), a refusal is a verdict, and the answer must be the contract's."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from services.electrical.keymgmt_client import (
    CardCancelled,
    ChipRejected,
    KeymgmtBadResponse,
    KeymgmtClient,
    KeymgmtRefused,
)

CARD = uuid.uuid4()
CHIP = "1A2B3C4D0001"
CHALLENGE = bytes.fromhex("0102030405060708")
IU_ANSWER = bytes.fromhex("434256431A2B3C4D0001300300") + bytes(16)
ARGS = (CARD, CHIP, CHALLENGE, IU_ANSWER)
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
    script = await keymgmt.secure_script(*ARGS)
    assert script.chip_serial == CHIP
    assert script.security_level == 0x03
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
    assert replies.requests[-1].headers["authorization"] == "Bearer station-token"


async def test_a_4xx_is_keymgmts_verdict_on_the_card_without_card_data() -> None:
    replies = Replies(httpx.Response(409, text="script already issued for 4761739001010010"))
    with pytest.raises(KeymgmtRefused, match="HTTP 409") as caught:
        await client(replies, []).secure_script(*ARGS)
    assert "4761739001010010" not in str(caught.value)


async def test_a_card_cryptogram_mismatch_rejects_the_chip() -> None:
    headers = {"X-Bureau-Refusal": "card-cryptogram-mismatch"}
    replies = Replies(httpx.Response(409, text="card cryptogram mismatch", headers=headers))
    with pytest.raises(ChipRejected, match="card cryptogram mismatch"):
        await client(replies, []).secure_script(*ARGS)


async def test_a_cancelled_card_is_refused_as_such_not_as_the_chips_fault() -> None:
    headers = {"X-Bureau-Refusal": "card-cancelled"}
    replies = Replies(httpx.Response(409, text="the card was cancelled", headers=headers))
    with pytest.raises(CardCancelled, match="cancelled by its issuer") as refused:
        await client(replies, []).secure_script(*ARGS)
    assert not isinstance(refused.value, ChipRejected)


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
        await client(Replies(httpx.Response(200, json=body)), []).secure_script(*ARGS)
