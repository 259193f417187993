"""keymgmt's station and QA doors on the real stack: the perso script from POST
/v1/perso/scripts personalises a virtual card (vcard, in process), one chip per card, the
chip's records read back clean and its ARQC verifies through POST /v1/arqc/verify."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.keymgmt.app import KeymgmtRuntime
from services.keymgmt.cli import load_demo_keys
from services.keymgmt.perso import diversification_data
from services.keymgmt.settings import KeymgmtSettings
from tests.integration.bus_harness import collect
from tests.integration.hsm_fixtures import hsm_token  # noqa: F401  (fixture)
from tests.integration.test_keymgmt_service import (  # noqa: F401  (fixtures)
    PAN16,
    auth,
    keymgmt,
    keymgmt_hsm,
    keymgmt_module,
    ordered,
    publish,
    settings,
    vault,
)
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

CDOL1 = bytes.fromhex("00000000100000000000000008260000008000097825112400")
SELECT = bytes.fromhex("00A4040007A000000003101000")


def new_chip(store: CardStore) -> tuple[VirtualCard, str]:
    card = VirtualCard(store.manufacture(TEST_KMC), store.save)
    card.power_on()
    cplc = card.process(bytes.fromhex("80CA9F7F00"))
    return card, diversification_data(cplc[3:45]).hex().upper()


async def script_for(http: httpx.AsyncClient, token: str, card_id: str, div: str) -> Any:
    body = {"card_id": card_id, "diversification_data": div}
    return await http.post("/v1/perso/scripts", json=body, headers=auth(token))


async def test_script_personalises_one_chip_whose_records_and_arqc_check_out(
    settings: KeymgmtSettings,  # noqa: F811
    unique: str,
    keymgmt: tuple[KeymgmtRuntime, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    runtime, http = keymgmt
    issuer, station, qa = f"ia{unique}", f"st-{unique}", auth(f"qa-{unique}")
    await load_demo_keys(settings, issuer)
    card = await vault(http, unique, issuer)
    card_id = card["card_id"]
    store = CardStore(tmp_path)
    chip, div = new_chip(store)

    early = await script_for(http, station, card_id, div)
    assert early.status_code == 409  # vaulted, not prepared yet
    assert (await script_for(http, station, str(uuid.uuid4()), div)).status_code == 404
    await publish(settings, ordered(card, issuer))
    await collect(settings.kafka_bootstrap, settings.topic("keymgmt"), lambda seen: len(seen) >= 1)

    assert (await script_for(http, f"nobody-{unique}", card_id, div)).status_code == 401
    answer = await script_for(http, station, card_id, div)
    assert answer.status_code == 200, answer.text
    script = answer.json()
    assert script["chip_serial"] == chip.chip_serial
    assert script["dgis"] == ["0101", "0102", "9102", "8000"]
    for apdu in script["apdus"]:
        response = chip.process(bytes.fromhex(apdu))
        assert response[-2:] == b"\x90\x00", apdu[:8]
    assert chip.state.lifecycle == "personalized"
    again = await script_for(http, station, card_id, div)
    assert again.json() == script  # the same chip asking again gets its script again
    _, other_div = new_chip(store)
    second = await script_for(http, station, card_id, other_div)
    assert second.status_code == 409  # never two chips for one card

    chip.process(SELECT)
    records = {n: chip.process(bytes.fromhex(f"00B20{n}0C00"))[:-2].hex() for n in ("1", "2")}
    clean = await http.post(
        "/v1/qa/readback", json={"card_id": card_id, "records": records}, headers=qa
    )
    assert clean.json() == {"ok": True, "problems": []}
    tampered = records | {"2": records["2"].replace(PAN16, PAN16[:-4] + "9999")}
    dirty = await http.post(
        "/v1/qa/readback", json={"card_id": card_id, "records": tampered}, headers=qa
    )
    assert dirty.json() == {"ok": False, "problems": ["record 2: tag 5A (PAN) differs"]}

    cdol1 = CDOL1 + bytes.fromhex("3804823E")
    response = chip.process(bytes.fromhex("80AE80001D") + cdol1 + b"\x00")
    assert response[:3] == bytes.fromhex("800B80")
    atc, arqc = response[3:5].hex(), response[5:13].hex()
    body = {"card_id": card_id, "cdol1": cdol1.hex(), "atc": atc, "arqc": arqc}
    verified = await http.post("/v1/arqc/verify", json=body, headers=qa)
    forged = await http.post("/v1/arqc/verify", json=body | {"arqc": "00" * 8}, headers=qa)
    assert verified.json() == {"ok": True}
    assert forged.json() == {"ok": False}
    refused = await http.post("/v1/arqc/verify", json=body, headers=auth(f"gr-{unique}"))
    assert refused.status_code == 403

    async with runtime.engine.connect() as conn:
        sessions = await conn.execute(
            text("SELECT station, chip_serial FROM perso_sessions WHERE card_id = :c"),
            {"c": card_id},
        )
        bound = await conn.execute(
            text(
                "SELECT chip_serial, state FROM chip_bindings JOIN prepared_cards USING (card_id)"
                " WHERE card_id = :c"
            ),
            {"c": card_id},
        )
    assert sessions.all() == [("station-a", chip.chip_serial)] * 2
    assert bound.all() == [(chip.chip_serial, "bound")]
