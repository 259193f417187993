"""The virtual card's USIM: Milenage against 3GPP TS 35.207/35.208 test sets and an
independent Milenage written in the tests, personalization through SCP03, files and
AUTHENTICATE as a network would drive it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from shared.iso7816 import CommandAPDU, decode_tlv, store_data_script
from tests.support.milenage import milenage as independent_milenage
from tests.support.scp03_host import ISD_AID, Scp03Host, initialize_update, install_for_perso
from tests.support.vcard import apdu, authenticate, k_dek_of, new_card, secured, select_usim
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.milenage import Milenage, opc_of
from vcard.store import CardStore
from vcard.uicc.atr import UICC_ATR
from vcard.usim import (
    NVM_SQN,
    USIM_AID,
    ef_imsi,
    iccid_of,
    imsi_of,
    swapped_bcd,
)

# TS 35.207 §4.3 / TS 35.208 §4.3, test sets 1, 2 and 3:
# K, RAND, SQN, AMF, OP, OPc, f1, f1*, f2, f5, f3, f4, f5*
TEST_SETS = [
    (
        "465b5ce8b199b49faa5f0a2ee238a6bc",
        "23553cbe9637a89d218ae64dae47bf35",
        "ff9bb4d0b607",
        "b9b9",
        "cdc202d5123e20f62b6d676ac72cb318",
        "cd63cb71954a9f4e48a5994e37a02baf",
        "4a9ffac354dfafb3",
        "01cfaf9ec4e871e9",
        "a54211d5e3ba50bf",
        "aa689c648370",
        "b40ba9a3c58b2a05bbf0d987b21bf8cb",
        "f769bcd751044604127672711c6d3441",
        "451e8beca43b",
    ),
    (
        "0396eb317b6d1c36f19c1c84cd6ffd16",
        "c00d603103dcee52c4478119494202e8",
        "fd8eef40df7d",
        "af17",
        "ff53bade17df5d4e793073ce9d7579fa",
        "53c15671c60a4b731c55b4a441c0bde2",
        "5df5b31807e258b0",
        "a8c016e51ef4a343",
        "d3a628ed988620f0",
        "c47783995f72",
        "58c433ff7a7082acd424220f2b67c556",
        "21a8c1f929702adb3e738488b9f5c5da",
        "30f1197061c1",
    ),
    (
        "fec86ba6eb707ed08905757b1bb44b8f",
        "9f7c8d021accf4db213ccff0c7f71a6a",
        "9d0277595ffc",
        "725c",
        "dbc59adcb6f9a0ef735477b7fadf8374",
        "1006020f0a478bf6b699f15c062e42b3",
        "9cabc3e99baf7281",
        "95814ba2b3044324",
        "8011c48c0c214ed2",
        "33484dc2136b",
        "5dbdbb2954e8f3cde665b046179a5098",
        "59a92d3b476a0443487055cf88b2307b",
        "deacdd848cc6",
    ),
]
ICCID = "8944500102000000017"
IMSI = "234150000000042"
AD = bytes.fromhex("00000002")  # normal operation, MNC of 2 digits


@pytest.mark.parametrize("vector", TEST_SETS, ids=["set1", "set2", "set3"])
def test_card_milenage_reproduces_the_published_test_sets(vector: tuple[str, ...]) -> None:
    k, rand, sqn, amf, op, opc, f1, f1s, f2, f5, f3, f4, f5s = map(bytes.fromhex, vector)
    assert opc_of(k, op) == opc
    card = Milenage(k, opc)
    assert card.f1(rand, sqn, amf) == (f1, f1s)
    vectors = card.f2345(rand)
    assert (vectors.res, vectors.ak, vectors.ck, vectors.ik) == (f2, f5, f3, f4)
    assert card.f5_star(rand) == f5s


@pytest.mark.parametrize("vector", TEST_SETS, ids=["set1", "set2", "set3"])
def test_independent_milenage_reproduces_the_published_test_sets(vector: tuple[str, ...]) -> None:
    k, rand, sqn, amf, _op, opc, f1, f1s, f2, f5, f3, f4, f5s = vector
    got = independent_milenage(*map(bytes.fromhex, (k, opc, rand, sqn, amf)))
    assert got == {"f1": f1, "f1*": f1s, "f2": f2, "f5": f5, "f3": f3, "f4": f4, "f5*": f5s}


def test_card_milenage_agrees_with_an_independent_one_on_random_inputs() -> None:
    for _ in range(20):
        k, opc, rand = os.urandom(16), os.urandom(16), os.urandom(16)
        sqn, amf = os.urandom(6), os.urandom(2)
        other = independent_milenage(k, opc, rand, sqn, amf)
        card = Milenage(k, opc)
        vectors = card.f2345(rand)
        mac_a, mac_s = card.f1(rand, sqn, amf)
        assert (mac_a.hex(), mac_s.hex()) == (other["f1"], other["f1*"])
        assert (vectors.res.hex(), vectors.ck.hex(), vectors.ik.hex()) == (
            other["f2"],
            other["f3"],
            other["f4"],
        )
        assert (vectors.ak.hex(), card.f5_star(rand).hex()) == (other["f5"], other["f5*"])


def test_file_encodings() -> None:
    assert swapped_bcd("8944", 3).hex().upper() == "9844FF"
    assert ef_imsi(IMSI).hex().upper() == "082943510000000024"  # TS 31.102 §4.2.2 layout
    assert imsi_of(ef_imsi(IMSI)) == IMSI
    assert imsi_of(ef_imsi("00101123")) == "00101123"
    assert iccid_of(swapped_bcd(ICCID, 10)) == ICCID


def _aes_ecb(key: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def personalize_usim(card: VirtualCard, ki: bytes, opc: bytes, level: int = 0x03) -> list[int]:
    """What keymgmt's SIM script carries, built here with plain AES under the card's K_DEK."""
    dek = k_dek_of(TEST_KMC, card.state.cplc)
    dgis = [
        (0x0201, swapped_bcd(ICCID, 10)),
        (0x0202, ef_imsi(IMSI)),
        (0x0203, AD),
        (0x8101, _aes_ecb(dek, ki) + _aes_ecb(dek, opc)),
    ]
    assert apdu(card, bytes.fromhex("00A4040008") + ISD_AID + b"\x00")[1] == 0x9000
    challenge = os.urandom(8)
    answer, sw = apdu(card, initialize_update(challenge))
    host = Scp03Host.from_kmc(TEST_KMC, challenge, answer)
    assert apdu(card, host.external_authenticate(level))[1] == 0x9000
    assert apdu(card, host.wrap(0x80, 0xE6, 0x20, 0x00, install_for_perso(USIM_AID)))[1] == 0x9000
    return [apdu(card, secured(host, cmd))[1] for cmd in store_data_script(dgis)]


def network_autn(ki: bytes, opc: bytes, rand: bytes, sqn: int, amf: bytes = b"\x80\x00") -> bytes:
    """AUTN as the operator's network builds it (TS 33.102 §6.3.2), independently computed."""
    sqn_b = sqn.to_bytes(6, "big")
    v = independent_milenage(ki, opc, rand, sqn_b, amf)
    concealed = bytes(a ^ b for a, b in zip(sqn_b, bytes.fromhex(v["f5"]), strict=True))
    return concealed + amf + bytes.fromhex(v["f1"])


@pytest.fixture
def store(tmp_path: Path) -> CardStore:
    return CardStore(tmp_path / "cards")


def test_personalized_usim_reads_its_files_and_authenticates(store: CardStore) -> None:
    card = new_card(store)
    ki, opc = os.urandom(16), os.urandom(16)
    assert personalize_usim(card, ki, opc) == [0x9000] * 4
    fcp, sw = select_usim(card)
    assert sw == 0x9000
    assert decode_tlv(fcp)[0].tag == 0x62
    _, sw = apdu(card, "00A40804022FE2")  # EF_ICCID by path from the MF
    assert sw == 0x9000
    assert apdu(card, "00B000000A") == (swapped_bcd(ICCID, 10), 0x9000)
    assert apdu(card, "00A4000C026F07")[1] == 0x6A82  # the MF is current: not its child
    assert apdu(card, "00A4080C047FFF6F07")[1] == 0x9000  # by path through the ADF
    content, sw = apdu(card, "00B0000009")
    assert (imsi_of(content), sw) == (IMSI, 0x9000)
    assert apdu(card, "00B0000305") == (content[3:8], 0x9000)  # offset 3, 5 bytes
    assert apdu(card, "00B0000020")[1] == 0x6C09  # beyond the file: the exact length
    rand = os.urandom(16)
    answer, sw = authenticate(card, rand, network_autn(ki, opc, rand, 1))
    expected = independent_milenage(ki, opc, rand, bytes(6), bytes(2))
    assert sw == 0x9000
    assert answer.hex() == ("db08" + expected["f2"] + "10" + expected["f3"] + "10" + expected["f4"])
    # The card keeps its state by serial: re-inserted elsewhere it still knows SQN 1.
    again = VirtualCard(store.load(card.chip_serial), store.save)
    again.power_on()
    assert again.state.dgis[NVM_SQN] == (1).to_bytes(6, "big")
    # Powered up again it is a UICC: T=0, so the answers wait behind 61xx for GET RESPONSE.
    assert again.atr == UICC_ATR
    assert select_usim(again)[1] >> 8 == 0x61
    rand = os.urandom(16)
    assert authenticate(again, rand, network_autn(ki, opc, rand, 2))[1] >> 8 == 0x61


def test_authenticate_refuses_a_wrong_mac_and_answers_a_replay_with_auts(
    store: CardStore,
) -> None:
    card = new_card(store)
    ki, opc = os.urandom(16), os.urandom(16)
    personalize_usim(card, ki, opc)
    select_usim(card)
    rand = os.urandom(16)
    autn = network_autn(ki, opc, rand, 5)
    assert authenticate(card, rand, autn[:-1] + bytes((autn[-1] ^ 1,)))[1] == 0x9862
    assert authenticate(card, rand, network_autn(os.urandom(16), opc, rand, 5))[1] == 0x9862
    assert authenticate(card, rand, autn)[1] == 0x9000
    answer, sw = authenticate(card, rand, autn)  # the same SQN again: a replay
    assert sw == 0x9000
    assert answer[:2] == b"\xdc\x0e"
    auts = answer[2:]
    v = independent_milenage(ki, opc, rand, bytes(6), bytes(2))
    sqn_ms = bytes(a ^ b for a, b in zip(auts[:6], bytes.fromhex(v["f5*"]), strict=True))
    assert sqn_ms == (5).to_bytes(6, "big")
    mac_s = independent_milenage(ki, opc, rand, sqn_ms, bytes(2))["f1*"]
    assert auts[6:].hex() == mac_s


def test_usim_personalization_rules(store: CardStore) -> None:
    card = new_card(store)
    ki, opc = os.urandom(16), os.urandom(16)
    # Keys only at C-DECRYPTION: a C-MAC-only session cannot carry DGI 8101.
    assert personalize_usim(card, ki, opc, level=0x01)[3] == 0x6982
    blank = new_card(store)  # the USIM is selectable only once personalised (6A82 before)
    assert select_usim(blank)[1] == 0x6A82
    assert apdu(blank, "00A4000C026F07")[1] == 0x6A81  # no USIM selected: no file selection
    assert blank.usim.execute(CommandAPDU.parse(bytes.fromhex("0088008100"))).sw == 0x6985
    personalize_usim(blank, ki, opc)
    assert select_usim(blank)[1] == 0x9000
    assert apdu(blank, "80E2880003010100")[1] == 0x6982  # STORE DATA outside the ISD: refused
    other = new_card(store)
    personalize_usim(other, ki, opc)
    assert personalize_usim(other, ki, opc)[0] == 0x6985  # perso is closed for good
