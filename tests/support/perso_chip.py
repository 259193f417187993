"""A virtual chip personalized through keymgmt's station door (POST /v1/perso/secure-scripts),
for tests that need a card in QA: SELECT ISD + INITIALIZE UPDATE on the chip, keymgmt's
protected script run on it, then its AFL records read as QA reads them."""

from __future__ import annotations

import os
from typing import Any

import httpx

from tests.support.keymgmt import auth
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore

SELECT_ISD = bytes.fromhex("00A4040008A00000015100000000")
SELECT_PAYMENT = bytes.fromhex("00A4040007A000000003101000")


def new_chip(store: CardStore) -> VirtualCard:
    chip = VirtualCard(store.manufacture(TEST_KMC, scp="03"), store.save)
    chip.power_on()
    return chip


async def ask_script(
    http: httpx.AsyncClient, station: str, card_id: str, chip: VirtualCard
) -> httpx.Response:
    """SELECT ISD + INITIALIZE UPDATE on the chip, then keymgmt's answer to station token
    `station` asking for the card's script (whatever its status)."""
    assert chip.process(SELECT_ISD)[-2:] == b"\x90\x00"
    challenge = os.urandom(8)
    answer = chip.process(bytes.fromhex("8050000008") + challenge + b"\x00")
    assert answer[-2:] == b"\x90\x00"
    body: dict[str, Any] = {
        "card_id": card_id,
        "chip_serial": chip.chip_serial,
        "host_challenge": challenge.hex(),
        "initialize_update_response": answer[:-2].hex(),
    }
    return await http.post("/v1/perso/secure-scripts", json=body, headers=auth(station))


async def personalize(
    http: httpx.AsyncClient, station: str, card_id: str, chip: VirtualCard
) -> None:
    """Ask keymgmt for the card's script as station token `station` and run it on the chip."""
    script = await ask_script(http, station, card_id, chip)
    assert script.status_code == 200, script.text
    for apdu in script.json()["apdus"]:
        assert chip.process(bytes.fromhex(apdu))[-2:] == b"\x90\x00", apdu[:8]


def read_records(chip: VirtualCard) -> dict[str, str]:
    """Every record the chip's AFL names, by DGI number ("0101", "0201", ...), as QA reads
    them: SELECT, GET PROCESSING OPTIONS (the default PDOL's 22 bytes), READ RECORD."""
    assert chip.process(SELECT_PAYMENT)[-2:] == b"\x90\x00"
    gpo = chip.process(bytes.fromhex("80A80000188316") + bytes(22) + b"\x00")
    assert gpo[-2:] == b"\x90\x00"
    afl = gpo[gpo.index(b"\x94") + 2 : -2]  # 77 L 82 02 AIP 94 L AFL
    records = {}
    for at in range(0, len(afl), 4):
        sfi, first, last = afl[at] >> 3, afl[at + 1], afl[at + 2]
        for number in range(first, last + 1):
            raw = chip.process(bytes((0x00, 0xB2, number, sfi << 3 | 4, 0x00)))
            assert raw[-2:] == b"\x90\x00"
            records[f"{sfi:02X}{number:02X}"] = raw[:-2].hex()
    return records
