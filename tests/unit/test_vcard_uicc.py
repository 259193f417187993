"""The virtual card's UICC as a handset sees it, driven by the client written from TS 102 221
and TS 31.102 (tests/support/uicc_client.py): MF, EF.DIR, the USIM by AID with the P2 values
terminals use, every file's FCP and contents, access conditions from EF.ARR, the PIN commands
with their counters, and AUTHENTICATE checked against an independent Milenage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.milenage import milenage
from tests.support.sim_card import (
    ADM1,
    AID,
    ICCID,
    IMSI,
    PIN1,
    PUK1,
    SPN,
    Sim,
    sim_dgis,
)
from tests.support.uicc_client import (
    EF_ARR,
    EF_DIR,
    EF_ICCID,
    KEY_ADM1,
    KEY_PIN1,
    KEY_PIN2,
    MF,
    USIM_APP,
    USIM_EFS,
    UiccClient,
    authenticate_answer,
    bcd_swapped,
    check_uicc_atr,
    imsi_of,
    plmn_of,
    tlvs,
)
from tests.support.vcard import apdu, new_card, personalize_with
from vcard.card import VirtualCard
from vcard.store import CardStore


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    card = new_card(CardStore(tmp_path / "cards"), protocol="T=0")
    ki, opc = os.urandom(16), os.urandom(16)
    assert personalize_with(card, AID, sim_dgis(card, ki, opc)) == [0x9000] * 7
    card.power_off()
    card.power_on()
    return card, ki, opc


def client_of(card: VirtualCard) -> UiccClient:
    async def transmit(raw: bytes) -> tuple[bytes, int]:
        return apdu(card, raw)

    return UiccClient(transmit)


async def test_a_personalised_usim_answers_the_atr_a_handset_accepts(
    sim: Sim, tmp_path: Path
) -> None:
    card, _ki, _opc = sim
    atr = check_uicc_atr(card.atr)
    assert atr.protocols[0] == 0  # T=0 first: the protocol a handset starts with
    assert atr.global_ta is not None
    classes = atr.global_ta & 0x3F
    # TS 102 221 §14.5.2: the MF's UICC characteristics ('A5' '80') name the same classes.
    mf = await client_of(card).select_fid(MF)
    characteristics = dict(tlvs(mf.proprietary))[0x80][0]
    assert (characteristics >> 4) & 0x07 == classes & 0x07
    payment = CardStore(tmp_path / "emv")  # payment cards are no UICC
    with pytest.raises(ValueError, match="offers T=0"):
        check_uicc_atr(new_card(payment, protocol="T=1").atr)
    with pytest.raises(ValueError, match="no class indicator"):
        check_uicc_atr(new_card(payment, protocol="T=0").atr)
    with pytest.raises(ValueError, match="TCK"):
        check_uicc_atr(card.atr[:-1] + bytes((card.atr[-1] ^ 0x01,)))


async def test_a_handset_finds_the_usim_and_reads_every_file(sim: Sim) -> None:
    card, _ki, _opc = sim
    uicc = client_of(card)
    mf = await uicc.select_fid(MF)
    assert mf.is_df
    assert mf.fid == MF
    assert mf.lifecycle == 0x05
    assert mf.proprietary
    assert mf.arr is not None
    assert mf.arr[0] == EF_ARR
    assert await uicc.applications() == [(AID, b"USIM")]
    dir_fcp = await uicc.select_fid(EF_DIR)
    assert (dir_fcp.structure, dir_fcp.sfi) == ("linear", 0x1E)
    iccid = await uicc.select_fid(EF_ICCID)
    assert (iccid.structure, iccid.size, iccid.sfi) == ("transparent", 10, 0x02)
    assert bcd_swapped(await uicc.read_binary(10)) == ICCID
    for p2 in (0x04, 0x00):
        adf = await uicc.select_aid(AID, p2)
        assert adf is not None
        assert adf.aid == AID
        assert adf.is_df
        assert adf.pin_status == {KEY_PIN1: True, KEY_PIN2: True, KEY_ADM1: True}
    assert await uicc.select_aid(USIM_APP, 0x0C) is None  # right-truncated AID, no data
    assert (await uicc.status()).aid == AID
    assert (await uicc.select(0x04, AID, 0x02))[1] == 0x6A82  # no next occurrence
    assert await uicc.verify(KEY_PIN1, PIN1) == 0x9000
    seen: dict[str, bytes] = {}
    records: dict[str, list[bytes]] = {}
    for fid, name in USIM_EFS.items():
        fcp = await uicc.select_fid(fid)
        assert (fcp.fid, fcp.lifecycle) == (fid, 0x05), name
        assert fcp.arr is not None, name
        assert fcp.arr[0] == EF_ARR, name
        content = await uicc.read_file(fcp)
        if isinstance(content, list):
            records[name] = content
        else:
            seen[name] = content
    assert imsi_of(seen["IMSI"]) == IMSI
    assert seen["AD"] == bytes.fromhex("00000002")
    assert seen["SPN"] == SPN
    assert plmn_of(seen["FPLMN"][:3]) == "00101"
    assert seen["ACC"] == (1 << int(IMSI[-1])).to_bytes(2, "big")
    assert seen["Keys"][0] == 0x07
    assert seen["LOCI"][-1] == 0x01
    assert bcd_swapped(records["ECC"][0][:3]) == "112"
    assert await uicc.read_binary_sfi(0x07, 9) == seen["IMSI"]  # by short file identifier


async def test_access_conditions_come_from_ef_arr(sim: Sim) -> None:
    card, _ki, _opc = sim
    uicc = client_of(card)
    await uicc.select_aid(AID)
    await uicc.select_fid(0x6FAD)
    assert len(await uicc.read_binary(4)) == 4  # EF.AD: always readable
    await uicc.select_fid(0x6F07)
    assert (await uicc.send(bytes.fromhex("00B0000009")))[1] == 0x6982  # IMSI: PIN1 first
    assert await uicc.verify(KEY_PIN1, PIN1) == 0x9000
    original = await uicc.read_binary(9)
    assert await uicc.update_binary(bytes(9)) == 0x6982  # IMSI: ADM1 only
    await uicc.select_path(0x7FFF, 0x6F7E)
    loci = bytes.fromhex("11223344") + bytes.fromhex("00F1100001") + bytes.fromhex("FF00")
    assert await uicc.update_binary(loci) == 0x9000  # LOCI: PIN1, what a handset writes
    await uicc.select_path(EF_ARR)
    assert await uicc.update_record(1, b"\x80\x01\x03\x90\x00".ljust(40, b"\xff")) == 0x6982
    assert await uicc.verify(KEY_ADM1, "00000000") == 0x63C2
    assert await uicc.verify(KEY_ADM1, ADM1) == 0x9000
    await uicc.select_path(0x7FFF, 0x6F07)
    assert await uicc.update_binary(bytes(9)) == 0x9000
    assert await uicc.update_binary(original) == 0x9000
    card.power_off()
    card.power_on()  # the security status is gone, the NVM stays
    uicc = client_of(card)
    await uicc.select_aid(AID)
    await uicc.select_fid(0x6F7E)
    assert (await uicc.send(bytes.fromhex("00B000000B")))[1] == 0x6982
    assert await uicc.verify(KEY_PIN1, PIN1) == 0x9000
    assert await uicc.read_binary(11) == loci
    assert (await uicc.send(bytes.fromhex("00A4000C022FE2")))[1] == 0x6A82  # not from the ADF


async def test_pin1_blocks_after_three_and_puk1_unblocks(sim: Sim) -> None:
    card, ki, opc = sim
    uicc = client_of(card)
    await uicc.select_aid(AID)
    rand, sqn, amf = os.urandom(16), (5).to_bytes(6, "big"), bytes.fromhex("8000")
    v = milenage(ki, opc, rand, sqn, amf)
    autn = bytes(a ^ b for a, b in zip(sqn, bytes.fromhex(v["f5"]), strict=True))
    autn += amf + bytes.fromhex(v["f1"])
    assert (await uicc.authenticate(rand, autn))[1] == 0x6982  # PIN1 not verified
    assert await uicc.verify(KEY_PIN1) == 0x63C3
    assert [await uicc.verify(KEY_PIN1, "0000") for _ in range(3)] == [0x63C2, 0x63C1, 0x6983]
    assert await uicc.verify(KEY_PIN1, PIN1) == 0x6983  # blocked: even the right one
    assert await uicc.unblock(KEY_PIN1) == 0x63CA
    assert await uicc.unblock(KEY_PIN1, "00000000", "4321") == 0x63C9
    assert await uicc.unblock(KEY_PIN1, PUK1, "4321") == 0x9000
    answer, sw = await uicc.authenticate(rand, autn)  # the new PIN counts as verified
    assert sw == 0x9000
    res, ck, ik = authenticate_answer(answer)
    assert (res.hex(), ck.hex(), ik.hex()) == (v["f2"], v["f3"], v["f4"])
    assert await uicc.change(KEY_PIN1, "4321", PIN1) == 0x9000
    assert await uicc.disable(KEY_PIN1, PIN1) == 0x9000
    card.power_off()
    card.power_on()
    uicc = client_of(card)
    adf = await uicc.select_aid(AID)
    assert adf is not None
    assert adf.pin_status[KEY_PIN1] is False
    assert await uicc.verify(KEY_PIN1) == 0x9000  # disabled: nothing to present
    await uicc.select_fid(0x6F07)
    assert imsi_of(await uicc.read_binary(9)) == IMSI
    assert await uicc.verify(KEY_PIN1, PIN1) == 0x6984  # a disabled PIN is not verified
    assert await uicc.enable(KEY_PIN1, PIN1) == 0x9000
    assert await uicc.verify(KEY_PIN2, "0000") == 0x63C2
    assert await uicc.unblock(KEY_ADM1, PUK1, "1") == 0x6A88  # ADM1 has no unblock key


async def test_pins_only_arrive_encrypted_and_unknown_files_are_refused(tmp_path: Path) -> None:
    store = CardStore(tmp_path / "cards")
    card = new_card(store)
    ki, opc = os.urandom(16), os.urandom(16)
    clear_session = personalize_with(card, AID, sim_dgis(card, ki, opc), level=0x01)
    assert clear_session[:5] == [0x9000] * 5
    assert clear_session[5] == 0x6982
    card = new_card(store)
    dgis = sim_dgis(card, ki, opc)
    dgis.append((0x02FF, b"\x00"))  # a file this card does not have
    answers = personalize_with(card, AID, dgis)
    assert answers[:7] == [0x9000] * 7
    assert answers[7] == 0x6A88
    assert apdu(card, "00A40004023F00")[1] == 0x6A81  # no UICC before personalisation ends
