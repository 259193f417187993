"""keymgmt's station and QA doors on the real stack: the SCP03-protected perso script from POST
/v1/perso/secure-scripts personalises a virtual card (vcard, in process), one chip per card, a
chip with other keys is refused and recorded, the chip's records read back clean and its ARQC
verifies through POST /v1/arqc/verify. The script is the full EMV profile of
docs/emv-profile.md: the virtual card takes it once branch h/emvcard is merged."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.bus import collect, records_of, wait_for
from tests.support.keymgmt import PAN16, auth, ordered, prepared_events, publish, vault
from tests.support.keymgmt_emv import emv_product
from tests.support.keymgmt_sim import sim_ordered, sim_product
from tests.support.vcard import select_usim
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore, Scp
from vcard.usim import iccid_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

CDOL1 = bytes.fromhex("00000000100000000000000008260000008000097825112400")
SELECT = bytes.fromhex("00A4040007A000000003101000")
SELECT_ISD = bytes.fromhex("00A4040008A00000015100000000")
OTHER_KMC = bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0")


def new_chip(store: CardStore, kmc: bytes = TEST_KMC, scp: Scp = "03") -> VirtualCard:
    card = VirtualCard(store.manufacture(kmc, scp=scp), store.save)
    card.power_on()
    return card


async def script_for(
    http: httpx.AsyncClient, token: str, card_id: str, chip: VirtualCard, serial: str = ""
) -> Any:
    """SELECT ISD + INITIALIZE UPDATE on the chip, then ask keymgmt as station `token`."""
    assert chip.process(SELECT_ISD)[-2:] == b"\x90\x00"
    challenge = os.urandom(8)
    answer = chip.process(bytes.fromhex("8050000008") + challenge + b"\x00")
    assert answer[-2:] == b"\x90\x00"
    body = {
        "card_id": card_id,
        "chip_serial": serial or chip.chip_serial,
        "host_challenge": challenge.hex(),
        "initialize_update_response": answer[:-2].hex(),
    }
    return await http.post("/v1/perso/secure-scripts", json=body, headers=auth(token))


@pytest.mark.parametrize("scp", ["03", "02"])
async def test_script_personalises_one_chip_whose_records_and_arqc_check_out(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    tmp_path: Path,
    scp: Scp,
) -> None:
    runtime, http = keymgmt
    issuer, station, qa = f"ia{unique}", f"st-{unique}", auth(f"qa-{unique}")
    await load_demo_keys(settings, issuer)
    await emv_product(http, runtime, keymgmt_hsm, unique, issuer)  # docs/emv-profile.md
    card = await vault(http, unique, issuer)
    card_id = card["card_id"]
    store = CardStore(tmp_path)
    chip = new_chip(store, scp=scp)

    early = await script_for(http, station, card_id, chip)
    assert early.status_code == 409  # vaulted, not prepared yet
    assert (await script_for(http, station, str(uuid.uuid4()), chip)).status_code == 404
    await publish(settings, ordered(card, issuer))
    await prepared_events(settings, 1)  # the stream also holds the pool's refill

    assert (await script_for(http, f"nobody-{unique}", card_id, chip)).status_code == 401
    wrong_serial = await script_for(http, station, card_id, chip, serial="000000000000")
    assert wrong_serial.status_code == 422
    assert f"from chip {chip.chip_serial}, not 000000000000" in wrong_serial.text

    impostor = new_chip(store, OTHER_KMC, scp)  # a chip whose keys come from another KMC
    refused = await script_for(http, station, card_id, impostor)
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("card cryptogram mismatch")
    assert refused.headers["x-bureau-refusal"] == "card-cryptogram-mismatch"

    answer = await script_for(http, station, card_id, chip)
    assert answer.status_code == 200, answer.text
    script = answer.json()
    assert script["chip_serial"] == chip.chip_serial
    assert script["dgis"] == [
        "0101", "0201", "0202", "0203", "0204", "9102", "9103", "9104", "9105",
        "0D01", "9010", "8000", "8010", "8201",
    ]  # fmt: skip
    assert script["security_level"] == "03"
    # EXTERNAL AUTHENTICATE, INSTALL, 13 DGIs in STORE DATA, DGI 8201 over 4 of them
    assert len(script["apdus"]) == 2 + 16
    assert PAN16 not in "".join(script["apdus"])  # C-DECRYPTION: no clear PAN on the wire
    for apdu in script["apdus"]:
        response = chip.process(bytes.fromhex(apdu))
        assert response[-2:] == b"\x90\x00", apdu[:8]
    assert chip.state.lifecycle == "personalized"
    again = await script_for(http, station, card_id, chip)
    assert again.status_code == 200  # the same chip may open another session
    assert again.json()["apdus"] != script["apdus"]  # fresh challenges, fresh session keys
    second = await script_for(http, station, card_id, new_chip(store))
    assert second.status_code == 409  # never two chips for one card

    assert chip.process(SELECT)[-2:] == b"\x90\x00"
    # GET PROCESSING OPTIONS with the default PDOL's data (TTQ 9F66 zero: contact), 22 bytes
    gpo = chip.process(bytes.fromhex("80A8000018" + "8316") + bytes(22) + b"\x00")
    assert gpo[-2:] == b"\x90\x00", gpo.hex()
    # every AFL record (08010100 10010401) by DGI number: "0101" SFI 1 record 1 (track 2,
    # name), "0201" SFI 2 record 1 (the static data for ODA), "0202".."0204" the ODA records
    afl = [(1, 1), (2, 1), (2, 2), (2, 3), (2, 4)]
    reads = {f"{s:02X}{r:02X}": bytes([0, 0xB2, r, s << 3 | 4, 0]) for s, r in afl}
    records = {n: chip.process(apdu)[:-2].hex() for n, apdu in reads.items()}
    readback = {"card_id": card_id, "chip_serial": chip.chip_serial, "qa_station": "qa-1"}
    clean = await http.post("/v1/qa/readback", json=readback | {"records": records}, headers=qa)
    assert clean.json() == {"ok": True, "problems": []}
    tampered = records | {"0201": records["0201"].replace(PAN16, PAN16[:-4] + "9999")}
    dirty = await http.post("/v1/qa/readback", json=readback | {"records": tampered}, headers=qa)
    assert dirty.json() == {"ok": False, "problems": ["records-differ"]}  # no field named

    cdol1 = CDOL1 + bytes.fromhex("3804823E")
    response = chip.process(bytes.fromhex("80AE80001D") + cdol1 + b"\x00")
    assert (response[0], response[2]) == (0x80, 0x80)  # format 1, CID: an ARQC
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
        refusals = await conn.execute(
            text(
                "SELECT accessor, purpose FROM vault_access WHERE card_id = :c AND purpose LIKE"
                " 'perso refused%'"
            ),
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
    assert refusals.all() == [
        (
            "station:station-a",
            f"perso refused: card cryptogram mismatch (chip {impostor.chip_serial})",
        )
    ]


async def test_a_sim_card_gets_its_usim_script_through_the_same_door(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    tmp_path: Path,
) -> None:
    """A SIM product's card: the same station call, the USIM script inside the SCP03 session;
    once bound at one station, no other station gets its script (refused and recorded)."""
    runtime, http = keymgmt
    issuer, station = f"ia{unique}", f"st-{unique}"
    await load_demo_keys(settings, issuer)
    product = await sim_product(runtime, http, keymgmt_hsm, issuer, unique)
    card = await vault(http, unique, issuer)
    await publish(settings, sim_ordered(card, issuer, product, uuid.uuid4()))
    await collect(
        settings.kafka_bootstrap, settings.topic("keymgmt"), records_of("card.prepared", 1)
    )
    chip = new_chip(CardStore(tmp_path))
    answer = await script_for(http, station, card["card_id"], chip)
    assert answer.status_code == 200, answer.text
    script = answer.json()
    files = ["0201", "0202", "0203", "0205", "0206", "0207", "0208"]  # + the profile's files
    assert script["dgis"] == [*files, "8101", "8102"]  # Ki || OPc, the PIN block
    assert script["security_level"] == "03"
    for apdu in script["apdus"]:
        assert chip.process(bytes.fromhex(apdu))[-2:] == b"\x90\x00", apdu[:8]
    assert select_usim(chip)[1] == 0x9000
    assert chip.process(bytes.fromhex("00A4080C022FE2"))[-2:] == b"\x90\x00"  # from the MF
    iccid = iccid_of(chip.process(bytes.fromhex("00B000000A"))[:-2])
    async with runtime.engine.connect() as conn:
        row = await conn.execute(
            text("SELECT iccid FROM sim_cards WHERE card_id = :c"), {"c": card["card_id"]}
        )
    assert iccid == row.scalar_one()

    # Station binding: the card is bound at station-a; station-b (its own token) gets no
    # script for it, neither replaying station-a's chip nor with a chip of its own.
    for other_chip in (chip, new_chip(CardStore(tmp_path))):
        stolen = await script_for(http, f"st2-{unique}", card["card_id"], other_chip)
        assert stolen.status_code == 403, stolen.text
        assert stolen.headers["x-bureau-refusal"] == "card-at-another-station"
        assert "bound to a chip at station station-a" in stolen.json()["detail"]
    assert (await script_for(http, station, card["card_id"], chip)).status_code == 200
    async with runtime.engine.connect() as conn:
        refusals = await conn.execute(
            text("SELECT accessor, purpose FROM vault_access WHERE card_id = :c ORDER BY id"),
            {"c": card["card_id"]},
        )
        sessions = await conn.execute(
            text("SELECT station FROM perso_sessions WHERE card_id = :c"), {"c": card["card_id"]}
        )
    refused = [row for row in refusals.all() if row[1].startswith("perso refused")]
    assert [accessor for accessor, _ in refused] == ["station:station-b"] * 2
    assert sessions.scalars().all() == ["station-a"] * 2


async def test_a_cancelled_card_is_never_prepared_nor_scripted(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    tmp_path: Path,
) -> None:
    runtime, http = keymgmt
    issuer, station = f"ic{unique}", f"st-{unique}"
    await load_demo_keys(settings, issuer)
    late, early = await vault(http, unique, issuer), await vault(http, unique, issuer)
    late_order, early_order = ordered(late, issuer), ordered(early, issuer)

    def cancelled(order: events.CardOrdered) -> events.CardCancelled:
        return events.CardCancelled(
            issuer_id=issuer,
            actor=f"issuer:{issuer}",
            card_id=order.card_id,
            batch_id=order.batch_id,
            order_id=order.order_id,
            reason="customer closed the account",
        )

    async def rows(sql: str, **params: Any) -> set[Any]:
        async with runtime.engine.connect() as conn:
            return {row[0] for row in await conn.execute(text(sql), params)}

    def prepared() -> Any:
        ids = [late_order.card_id, early_order.card_id]
        return rows("SELECT card_id FROM prepared_cards WHERE card_id = ANY(:ids)", ids=ids)

    async def consumed(event_id: uuid.UUID) -> bool:
        return bool(await rows("SELECT event_id FROM inbox WHERE event_id = :e", e=event_id))

    # `late` is prepared, then cancelled; `early`'s cancellation arrives before its order.
    await publish(settings, late_order)
    await wait_for(lambda: consumed(late_order.event_id), timeout=30)
    await publish(settings, cancelled(late_order), cancelled(early_order), early_order)
    await wait_for(lambda: consumed(early_order.event_id), timeout=30)
    assert await prepared() == {late_order.card_id}

    store = CardStore(tmp_path)
    for card in (late, early):
        refused = await script_for(http, station, card["card_id"], new_chip(store))
        assert refused.status_code == 409, refused.text
        assert refused.headers["x-bureau-refusal"] == "card-cancelled"
