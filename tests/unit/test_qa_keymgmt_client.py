"""QA's use of the keymgmt client against a fake transport: read-back problems come back without
card data, the ARQC answer must be a boolean, and keymgmt being away is retried."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from services.qa.checker import readback_problems
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.keymgmt.contract import ArqcRequest, ReadbackRequest
from shared.keymgmt.errors import KeymgmtBadResponse, KeymgmtRefused

CARD = uuid.uuid4()
CHIP = "A1B2C3D4E5F6"


def readback_of(records: dict[str, str]) -> ReadbackRequest:
    return ReadbackRequest(card_id=CARD, chip_serial=CHIP, qa_station="qa-1", records=records)


ARQC = ArqcRequest(card_id=CARD, cdol1="00" * 29, atc="0001", arqc="00" * 8)


def client(*replies: httpx.Response) -> tuple[KeymgmtClient, list[httpx.Request]]:
    queue, seen = list(replies), []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    keymgmt = KeymgmtClient(
        "http://keymgmt",
        "qa-token",
        policy=RetryPolicy.until_answered(backoff_s=0.001),
        transport=httpx.MockTransport(handle),
    )
    return keymgmt, seen


async def test_readback_sends_chip_station_and_records_and_returns_problems_without_pans() -> None:
    problem = "record 2: PAN 4761739001010010 differs"  # an older keymgmt's wording: redacted
    keymgmt, seen = client(httpx.Response(200, json={"ok": False, "problems": [problem]}))
    records = {"0101": b"\x70\x01\x00".hex().upper(), "0201": b"\x70\x00".hex().upper()}
    verdict = await keymgmt.readback(readback_of(records))
    assert readback_problems(verdict) == ["record 2: PAN 476173******0010 differs"]
    assert json.loads(seen[0].content) == {
        "card_id": str(CARD),
        "chip_serial": CHIP,
        "qa_station": "qa-1",
        "records": {"0101": "700100", "0201": "7000"},
    }
    assert seen[0].url.path == "/v1/qa/readback"
    assert seen[0].headers["authorization"] == "Bearer qa-token"


async def test_a_matching_readback_has_no_problems_after_keymgmt_came_back() -> None:
    keymgmt, seen = client(httpx.Response(503), httpx.Response(200, json={"ok": True}))
    verdict = await keymgmt.readback(readback_of({"0101": "7000"}))
    assert readback_problems(verdict) == []
    assert len(seen) == 2
    assert keymgmt.retries.failures == 1


async def test_a_mismatch_without_named_problems_still_fails() -> None:
    keymgmt, _ = client(httpx.Response(200, json={"ok": False}))
    verdict = await keymgmt.readback(readback_of({"0101": "7000"}))
    assert readback_problems(verdict) == ["keymgmt says the records do not match"]


async def test_arqc_verdicts() -> None:
    keymgmt, seen = client(
        httpx.Response(200, json={"ok": True}),
        httpx.Response(200, json={"ok": "yes"}),
        httpx.Response(404, text="no such card"),
    )
    assert (await keymgmt.verify_arqc(ARQC)).ok
    assert json.loads(seen[0].content) == {
        "card_id": str(CARD),
        "cdol1": "00" * 29,
        "atc": "0001",
        "arqc": "00" * 8,
    }
    assert seen[0].url.path == "/v1/arqc/verify"
    with pytest.raises(KeymgmtBadResponse, match="boolean"):
        await keymgmt.verify_arqc(ARQC)
    with pytest.raises(KeymgmtRefused, match="404"):
        await keymgmt.verify_arqc(ARQC)


@pytest.mark.parametrize(
    "records",
    [
        {},
        {"0101": "70" * 1025},
        {"1": "7000"},
        {"0100": "7000"},
        {"0101": "7"},
        {f"01{n:02X}": "7000" for n in range(1, 18)},
    ],
)
def test_a_readback_request_is_bounded(records: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="records"):
        readback_of(records)
