"""PIN1 at QA (docs/sim.md, "PIN1 at QA"): QA's SIM check runs against a virtual UICC, with
keymgmt's answers through the real keymgmt client over a fake transport. The PIN reaches the
card in its VERIFY and nowhere else: not in a log record at any level, not in a failure reason
(which is what QA stores), and a wrong PIN fails by name, never by value."""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import cast

import httpx
import pytest

from services.qa.service import QaFailure
from services.qa.sim_check import CHECK_SIM_PIN, sim_chip_checks
from shared.keymgmt.client import KeymgmtClient
from shared.keymgmt.contract import SIM_QA_CHALLENGE, SIM_QA_CHECK
from shared.pcsc import CardConnection
from tests.support.milenage import milenage
from tests.support.sim_card import AID, ICCID, IMSI, PIN1, sim_dgis
from tests.support.uicc_client import UiccClient, pin_block
from tests.support.vcard import apdu, new_card, personalize_with
from vcard.card import VirtualCard
from vcard.store import CardStore

CARD = uuid.UUID(int=7)


class Reader:
    """The QA reader as sim_check uses it: transmit with 61xx/6Cxx handled; every APDU kept."""

    def __init__(self, card: VirtualCard) -> None:
        self.sent: list[bytes] = []

        async def raw(command: bytes) -> tuple[bytes, int]:
            self.sent.append(command)
            return apdu(card, command)

        self._client = UiccClient(raw)

    async def transmit(self, command: bytes) -> tuple[bytes, int]:
        return await self._client.send(command)


def keymgmt(ki: bytes, opc: bytes, pin1: str) -> KeymgmtClient:
    """keymgmt's two SIM QA answers: RAND/AUTN (SQN 1) and PIN1; the check of the answer."""
    rand, sqn, amf = os.urandom(16), (1).to_bytes(6, "big"), bytes.fromhex("8000")
    v = milenage(ki, opc, rand, sqn, amf)
    autn = bytes(a ^ b for a, b in zip(sqn, bytes.fromhex(v["f5"]), strict=True))
    autn += amf + bytes.fromhex(v["f1"])

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == SIM_QA_CHALLENGE:
            body = {"card_id": str(CARD), "iccid": ICCID, "imsi": IMSI, "rand": rand.hex()}
            body |= {"autn": autn.hex(), "pin1": pin_block(pin1).hex()}
            return httpx.Response(200, json=body)
        assert request.url.path == SIM_QA_CHECK
        response = bytes.fromhex(json.loads(request.content)["response"])
        ok = response[2:10].hex() == v["f2"]  # DB 08 RES ...
        return httpx.Response(200, json={"ok": ok})

    return KeymgmtClient("http://keymgmt", "qa-token", transport=httpx.MockTransport(answer))


@pytest.fixture
def card(tmp_path: Path) -> tuple[VirtualCard, bytes, bytes]:
    chip = new_card(CardStore(tmp_path / "cards"), protocol="T=0")
    ki, opc = os.urandom(16), os.urandom(16)
    assert personalize_with(chip, AID, sim_dgis(chip, ki, opc)) == [0x9000] * 7
    chip.power_off()
    chip.power_on()
    return chip, ki, opc


# A record's own bookkeeping (times, thread and process ids): digits that are no one's PIN
# ('created': 31234.97... once held "1234"), left out of what is searched.
_BOOKKEEPING = frozenset(
    ("created", "msecs", "relativeCreated", "thread", "process", "lineno", "taskName")
)


def _traces(caplog: pytest.LogCaptureFixture) -> str:
    """Each record's message and every attribute it carries (extras included), but its
    bookkeeping."""
    return "\n".join(
        f"{r.getMessage()} { {k: v for k, v in r.__dict__.items() if k not in _BOOKKEEPING} }"
        for r in caplog.records
    )


async def test_pin1_reaches_the_card_and_nothing_else(
    card: tuple[VirtualCard, bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    chip, ki, opc = card
    caplog.set_level(logging.DEBUG)
    reader = Reader(chip)
    oracle = keymgmt(ki, opc, PIN1)
    try:
        checks = await sim_chip_checks(cast(CardConnection, reader), CARD, oracle)
    finally:
        await oracle.aclose()
    assert CHECK_SIM_PIN in checks
    block = pin_block(PIN1)
    carrying = [c for c in reader.sent if block in c]
    assert carrying == [bytes.fromhex("0020000108") + block]  # one VERIFY, PIN1 in it
    logged = _traces(caplog)
    assert block.hex() not in logged.lower()
    assert PIN1 not in logged


async def test_a_wrong_pin1_fails_by_name_never_by_value(
    card: tuple[VirtualCard, bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    chip, ki, opc = card
    caplog.set_level(logging.DEBUG)
    oracle = keymgmt(ki, opc, "9876")
    try:
        with pytest.raises(QaFailure, match="sim-pin1: the chip refused the prepared PIN1") as info:
            await sim_chip_checks(cast(CardConnection, Reader(chip)), CARD, oracle)
    finally:
        await oracle.aclose()
    reason = str(info.value)  # what QA stores and announces for the card
    for text in (reason, _traces(caplog)):
        assert "9876" not in text
        assert pin_block("9876").hex() not in text.lower()
