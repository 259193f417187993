"""A SIM personalised through keymgmt (HSM, SCP03) in a pcscd station reader, then read in the
QA reader by the client written from TS 102 221 and TS 31.102 (tests/support/uicc_client.py,
which imports none of our card code): MF and EF.DIR, the USIM found by its AID, every
mandatory EF with its FCP, PIN1 blocked after three wrong tries and unblocked with PUK1, and
AUTHENTICATE checked against an independent Milenage (TS 35.208-checked) fed with the Ki and
OPc unwrapped from the operator's output file with the operator's transport key."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from sqlalchemy import text

from services.keymgmt.gp.channel import InitializeUpdateAnswer, ScriptCommand
from services.keymgmt.gp.secure_channel import secure_script
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from services.keymgmt.sim.perso import build_sim_script
from services.keymgmt.sim.profile import SimProfile
from shared.pcsc import PcscClient, ReaderConfig
from shared.service import ServiceRuntime
from tests.support.bus import collect, records_of
from tests.support.keymgmt import auth, publish, vault
from tests.support.keymgmt_sim import TRANSPORT, sim_ordered, sim_product
from tests.support.milenage import milenage
from tests.support.pcscd import GET_CPLC, SELECT_ISD, connect
from tests.support.uicc_client import (
    EF_ICCID,
    KEY_PIN1,
    MF,
    USIM_APP,
    USIM_EFS,
    UiccClient,
    authenticate_answer,
    bcd_swapped,
    check_uicc_atr,
    imsi_of,
    plmn_of,
)
from vcard.feeder import Feeder

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]
PROFILE: dict[str, Any] = {"spn": "Bureau Mobile", "fplmn": ["00103", "310150"], "ota": True}


def _operator_line(output: str, iccid: str) -> dict[str, Any]:
    """The operator's clear values of one SIM: its file line opened with its transport key."""
    line = next(x for x in output.splitlines() if x.startswith(iccid + " "))
    _iccid, imsi, ki, opc, pins, _ota = line.split()
    block = aes_key_unwrap(TRANSPORT, bytes.fromhex(pins))
    names = ("pin1", "puk1", "pin2", "puk2", "adm1")
    values = {n: block[8 * i : 8 * i + 8].rstrip(b"\xff").decode() for i, n in enumerate(names)}
    return {
        "imsi": imsi,
        "ki": aes_key_unwrap(TRANSPORT, bytes.fromhex(ki)),
        "opc": aes_key_unwrap(TRANSPORT, bytes.fromhex(opc)),
    } | values


async def _personalise(
    settings: KeymgmtSettings, hsm: Hsm, client: PcscClient, station: str, sim: dict[str, Any]
) -> str:
    async with await connect(client, station) as chip:
        cplc, sw = await chip.transmit(GET_CPLC)
        assert sw == 0x9000
        assert (await chip.transmit(SELECT_ISD))[1] == 0x9000
        challenge = os.urandom(8)
        iu, sw = await chip.transmit(bytes.fromhex("8050000008") + challenge + b"\x00")
        assert sw == 0x9000

        def build(h: Hsm, answer: InitializeUpdateAnswer) -> tuple[ScriptCommand, ...]:
            div = answer.diversification_data
            profile = SimProfile.model_validate(PROFILE)
            return build_sim_script(h, sim, div, settings.kmc_label, 2, profile).commands

        secured = await hsm.call(secure_script, settings.kmc_label, challenge, iu, build)
        answers = await chip.transmit_script(list(secured.apdus))
        assert {sw for _, sw in answers} == {0x9000}
    return cplc[3 + 12 : 3 + 18].hex().upper()


async def test_a_sim_from_the_bureau_reads_as_the_specs_say(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    feeder: Feeder,
    client: PcscClient,
    readers: list[ReaderConfig],
) -> None:
    runtime, http = keymgmt
    issuer = f"ia{unique}"
    await load_demo_keys(settings, issuer)
    product = await sim_product(runtime, http, keymgmt_hsm, issuer, unique, profile=PROFILE)
    card = await vault(http, unique, issuer)
    batch = uuid.uuid4()
    await publish(settings, sim_ordered(card, issuer, product, batch))
    await collect(
        settings.kafka_bootstrap, settings.topic("keymgmt"), records_of("card.prepared", 1)
    )
    async with runtime.engine.connect() as db:
        found = await db.execute(
            text("SELECT * FROM sim_cards WHERE card_id = :c"), {"c": uuid.UUID(card["card_id"])}
        )
        sim = dict(found.mappings().one())
    station, qa = readers[1].name, readers[-1].name
    serial = await _personalise(settings, keymgmt_hsm, client, station, sim)
    assert (await feeder.eject(station))["ejected"] == serial
    await feeder.insert(qa, serial)
    check_uicc_atr(await client.wait_for_card(qa, timeout=5))  # a UICC to the handset
    output = await http.get(f"/v1/sim/batches/{batch}/output-file", headers=auth(f"ia-{unique}"))
    assert output.status_code == 200
    operator = _operator_line(output.text, sim["iccid"])
    try:
        async with await client.connect(qa) as reader:
            assert reader.protocol == "T=0"  # what pcscd chose from the UICC's ATR
            uicc = UiccClient(reader.transmit)
            mf = await uicc.select_fid(MF)
            assert mf.is_df
            apps = await uicc.applications()
            aid = next(a for a, _label in apps if a.startswith(USIM_APP))
            iccid = await uicc.read_transparent(await uicc.select_path(EF_ICCID))
            assert bcd_swapped(iccid) == sim["iccid"]
            adf = await uicc.select_aid(aid)
            assert adf is not None
            assert adf.pin_status[KEY_PIN1] is True
            assert [await uicc.verify(KEY_PIN1, "0000") for _ in range(3)] == [
                0x63C2,
                0x63C1,
                0x6983,
            ]
            assert await uicc.verify(KEY_PIN1, operator["pin1"]) == 0x6983  # blocked
            assert await uicc.unblock(KEY_PIN1, operator["puk1"], operator["pin1"]) == 0x9000
            contents: dict[str, Any] = {}
            for fid, name in USIM_EFS.items():
                fcp = await uicc.select_fid(fid)
                assert fcp.fid == fid
                assert fcp.lifecycle == 0x05
                contents[name] = await uicc.read_file(fcp)
            assert imsi_of(contents["IMSI"]) == sim["imsi"] == operator["imsi"]
            assert contents["SPN"][1:14] == b"Bureau Mobile"
            assert [plmn_of(contents["FPLMN"][i : i + 3]) for i in (0, 3, 6)] == [
                "00103",
                "310150",
                None,
            ]
            assert contents["AD"][3] == 2
            rand, sqn, amf = os.urandom(16), (1).to_bytes(6, "big"), bytes.fromhex("8000")
            v = milenage(operator["ki"], operator["opc"], rand, sqn, amf)
            concealed = bytes(a ^ b for a, b in zip(sqn, bytes.fromhex(v["f5"]), strict=True))
            answer, sw = await uicc.authenticate(rand, concealed + amf + bytes.fromhex(v["f1"]))
            assert sw == 0x9000
            res, ck, ik = authenticate_answer(answer)
            assert (res.hex(), ck.hex(), ik.hex()) == (v["f2"], v["f3"], v["f4"])
    finally:
        await feeder.eject(qa)
