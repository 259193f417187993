"""SIM products end to end in keymgmt on the real stack and a fresh SoftHSM token: card.ordered
of a SIM product -> Ki in the HSM, OPc, ICCID/IMSI -> card.prepared (MILENAGE); the SIM script
through the SCP03 channel personalises a virtual card's USIM; QA's challenge and check run
Milenage with the HSM-held Ki, against TS 35.208 test set 1 and the card's own answer."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from pkcs11 import Attribute, KeyType, ObjectClass
from sqlalchemy import text

from services.keymgmt.gp.channel import InitializeUpdateAnswer, ScriptCommand
from services.keymgmt.gp.secure_channel import secure_script
from services.keymgmt.hsm.p11 import as_key
from services.keymgmt.hsm.session import BureauKeyKind, Hsm, generate_bureau_key
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from services.keymgmt.sim.perso import build_sim_script, mnc_length_of
from services.keymgmt.sim.qa import milenage_challenge, milenage_vectors
from services.keymgmt.sim.secrets import WRAP
from services.keymgmt.vault.crypto import seal_bytes
from shared import events
from shared.service import ServiceRuntime
from tests.support.bus import collect, records_of
from tests.support.keymgmt import auth, publish, vault
from tests.support.keymgmt_sim import OP, sim_ordered, sim_product
from tests.support.vcard import authenticate, select_usim
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore
from vcard.usim import iccid_of, imsi_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

# 3GPP TS 35.208 test set 1
K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SQN, AMF = bytes.fromhex("ff9bb4d0b607"), bytes.fromhex("b9b9")
F1, F2, F5 = "4a9ffac354dfafb3", "a54211d5e3ba50bf", "aa689c648370"
F3, F4 = "b40ba9a3c58b2a05bbf0d987b21bf8cb", "f769bcd751044604127672711c6d3441"
SELECT_ISD = bytes.fromhex("00A4040008A00000015100000000")


def test_hsm_milenage_with_a_wrapped_ki_reproduces_test_set_1(
    settings: KeymgmtSettings,
    keymgmt_hsm: Hsm,
    unique: str,
) -> None:
    storage = f"t{unique}/SIMKEK/1"

    def wrapped_test_ki(h: Hsm) -> bytes:
        generate_bureau_key(h, storage, BureauKeyKind.SIM_KEK_AES256)
        generate_bureau_key(h, settings.vault_key_label, BureauKeyKind.VAULT_AES256)
        ki = as_key(
            h.session.create_object(  # the published test K, on the test token only
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.VALUE: K,
                    Attribute.TOKEN: False,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: True,
                }
            )
        )
        try:
            return h.key(storage).wrap_key(ki, mechanism=WRAP)
        finally:
            ki.destroy()

    context = b"sim-op|test|set1"
    session_objects = keymgmt_hsm.run(Hsm.count_objects, {Attribute.TOKEN: False})
    sim = {"storage_key_label": storage, "ki_stored": keymgmt_hsm.run(wrapped_test_ki)}
    op_sealed = keymgmt_hsm.run(seal_bytes, settings.vault_key_label, OP, context)
    sqn = int.from_bytes(SQN, "big")
    rand, autn = keymgmt_hsm.run(milenage_challenge, sim, op_sealed, context, sqn, RAND, AMF)
    concealed = bytes(a ^ b for a, b in zip(SQN, bytes.fromhex(F5), strict=True))
    assert (rand, autn.hex()) == (RAND, concealed.hex() + AMF.hex() + F1)
    xres, ck, ik = keymgmt_hsm.run(milenage_vectors, sim, op_sealed, context, RAND)
    assert (xres.hex(), ck.hex(), ik.hex()) == (F2, F3, F4)
    after = keymgmt_hsm.run(Hsm.count_objects, {Attribute.TOKEN: False})
    assert after == session_objects  # every unwrapped Ki destroyed


async def test_sim_card_ordered_prepared_personalised_and_checked_at_qa(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    tmp_path: Path,
) -> None:
    runtime, http = keymgmt
    issuer = f"ia{unique}"
    await load_demo_keys(settings, issuer)  # the bureau KMC (the virtual cards' factory key)
    product = await sim_product(runtime, http, keymgmt_hsm, issuer, unique)
    batch = uuid.uuid4()
    cards = [await vault(http, unique, issuer) for _ in range(2)]
    await publish(settings, *(sim_ordered(c, issuer, product, batch) for c in cards))
    out = await collect(
        settings.kafka_bootstrap, settings.topic("keymgmt"), records_of("card.prepared", 2)
    )
    prepared = [
        e for r in out if isinstance(e := events.decode_event(r.value), events.CardPrepared)
    ]
    assert {str(getattr(e, "card_id", "")) for e in prepared} == {c["card_id"] for c in cards}
    assert {
        (e.key_scheme, e.application) for e in prepared if isinstance(e, events.CardPrepared)
    } == {("MILENAGE", "usim")}
    card_id = uuid.UUID(cards[0]["card_id"])
    async with runtime.engine.connect() as conn:
        sim = dict(
            (await conn.execute(text("SELECT * FROM sim_cards WHERE card_id = :c"), {"c": card_id}))
            .mappings()
            .one()
        )
    assert sim["iccid"].startswith("8944990")
    assert sim["imsi"].startswith("00101")
    listing = await http.get(f"/v1/sim/batches/{batch}/output-file", headers=auth(f"ia-{unique}"))
    assert listing.status_code == 200
    assert sim["iccid"] in listing.text  # the operator's file of the intake batch

    # Personalisation: SCP03 session from the card's INITIALIZE UPDATE, SIM script inside.
    chip = VirtualCard(CardStore(tmp_path).manufacture(TEST_KMC), lambda _state: None)
    chip.power_on()
    assert chip.process(SELECT_ISD)[-2:] == b"\x90\x00"
    challenge = os.urandom(8)
    iu = chip.process(bytes.fromhex("8050000008") + challenge + b"\x00")[:-2]

    def build(h: Hsm, answer: InitializeUpdateAnswer) -> tuple[ScriptCommand, ...]:
        div = answer.diversification_data
        return build_sim_script(h, sim, div, settings.kmc_label, mnc_length_of("00101")).commands

    secured = await keymgmt_hsm.call(secure_script, settings.kmc_label, challenge, iu, build)
    assert secured.security_level == 0x03  # DGI 8101 is sensitive: C-DECRYPTION
    for apdu in secured.apdus:
        assert chip.process(apdu)[-2:] == b"\x90\x00", apdu[:4].hex()
    assert chip.process(bytes.fromhex("00A4080C022FE2"))[-2:] == b"\x90\x00"  # path from MF
    assert iccid_of(chip.process(bytes.fromhex("00B000000A"))[:-2]) == sim["iccid"]
    assert select_usim(chip)[1] == 0x9000
    assert chip.process(bytes.fromhex("00A4000C026F07"))[-2:] == b"\x90\x00"
    assert chip.process(bytes.fromhex("00B0000009"))[-2:] == b"\x69\x82"  # PIN1 first

    # QA: keymgmt's challenge (with PIN1 for the VERIFY), the card's AUTHENTICATE, keymgmt's
    # check in the HSM.
    qa = auth(f"qa-{unique}")
    first = await http.post("/v1/sim/qa/challenge", json={"card_id": str(card_id)}, headers=qa)
    pin1 = bytes.fromhex(first.json()["pin1"])
    assert len(pin1) == 8
    assert chip.process(bytes.fromhex("0020000108") + pin1)[-2:] == b"\x90\x00"
    assert imsi_of(chip.process(bytes.fromhex("00B0000009"))[:-2]) == sim["imsi"]
    for _ in range(2):  # each challenge a fresh SQN the card accepts
        asked = await http.post("/v1/sim/qa/challenge", json={"card_id": str(card_id)}, headers=qa)
        assert asked.status_code == 200, asked.text
        assert (asked.json()["iccid"], asked.json()["imsi"]) == (sim["iccid"], sim["imsi"])
        rand, autn = bytes.fromhex(asked.json()["rand"]), bytes.fromhex(asked.json()["autn"])
        answer, sw = authenticate(chip, rand, autn)
        assert sw == 0x9000
        assert answer[:1] == b"\xdb"
        body = {"card_id": str(card_id), "rand": rand.hex(), "response": answer.hex()}
        checked = await http.post("/v1/sim/qa/check", json=body, headers=qa)
        assert checked.json() == {"card_id": str(card_id), "ok": True, "problems": []}
    bad_ck = answer[:12] + bytes((answer[12] ^ 1,)) + answer[13:]  # RES is 10 bytes in, CK next
    body |= {"response": bad_ck.hex()}
    refused = await http.post("/v1/sim/qa/check", json=body, headers=qa)
    assert refused.json()["problems"] == ["CK differs from the one the HSM computed"]
    other = await http.post(
        "/v1/sim/qa/check", json=body | {"card_id": cards[1]["card_id"]}, headers=qa
    )
    assert other.json()["ok"] is False  # another SIM's Ki: nothing matches
    station = await http.post(
        "/v1/sim/qa/challenge", json={"card_id": str(card_id)}, headers=auth(f"in-{unique}")
    )
    not_sim = await http.post(
        "/v1/sim/qa/challenge", json={"card_id": str(uuid.uuid4())}, headers=qa
    )
    assert (station.status_code, not_sim.status_code) == (403, 404)
