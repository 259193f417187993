"""The virtual card OS in-process: a full personalization built here, checked against pyemv.

Card keys (CPG202-AES K_DEK) and the ARQC are computed independently of vcard.crypto: AES from
`cryptography` for K_DEK, pyemv for EMV Option A master keys, session keys and the MAC. The
personalization runs through an SCP03 session opened by the independent host of
tests/support/scp03_host.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.iso7816 import decode_tlv, tlv
from tests.support.scp03_host import ISD_AID, Scp03Host, initialize_update, install_for_perso
from tests.support.vcard import (
    AID,
    CDOL1,
    Perso,
    _aes_ecb,
    apdu,
    build_perso,
    expected_arqc,
    new_card,
    perso_commands,
    secured,
)
from vcard.card import ATR_T0, ATR_T1, Faults, VirtualCard
from vcard.crypto import TEST_KMC, cpg202_aes_diversify
from vcard.store import CardStore


def select(card: VirtualCard) -> tuple[bytes, int]:
    return apdu(card, bytes.fromhex("00A40400") + bytes((len(AID),)) + AID + b"\x00")


def generate_ac(card: VirtualCard, p1: int = 0x80) -> tuple[bytes, int]:
    """A new transaction: SELECT, GPO (contact: zeros for the PDOL's 16 bytes), GENERATE AC."""
    assert select(card)[1] == 0x9000
    assert apdu(card, "80A80000128310" + "00" * 16 + "00")[1] == 0x9000
    return apdu(card, bytes((0x80, 0xAE, p1, 0x00, len(CDOL1))) + CDOL1 + b"\x00")


@pytest.fixture
def store(tmp_path: Path) -> CardStore:
    return CardStore(tmp_path / "cards")


def open_channel(card: VirtualCard, level: int = 0x03, kmc: bytes = TEST_KMC) -> Scp03Host:
    """SELECT ISD, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, INSTALL [for personalization]."""
    assert apdu(card, bytes.fromhex("00A4040008") + ISD_AID + b"\x00")[1] == 0x9000
    challenge = os.urandom(8)
    answer, sw = apdu(card, initialize_update(challenge))
    assert sw == 0x9000
    host = Scp03Host.from_kmc(kmc, challenge, answer)
    assert host.card_authentic
    assert apdu(card, host.external_authenticate(level))[1] == 0x9000
    assert apdu(card, host.wrap(0x80, 0xE6, 0x20, 0x00, install_for_perso(AID)))[1] == 0x9000
    return host


def personalize(card: VirtualCard, perso: Perso) -> list[int]:
    """The script through SCP03, then the payment application selected as at a terminal."""
    host = open_channel(card)
    sws = [apdu(card, secured(host, cmd))[1] for cmd in perso_commands(perso.dgis)]
    assert select(card)[1] == 0x9000
    return sws


def personalize_blocks(card: VirtualCard, perso: Perso) -> list[int]:
    host = open_channel(card)
    return [apdu(card, secured(host, cmd))[1] for cmd in perso_commands(perso.dgis)]


def test_cpg202_aes_test_vector() -> None:
    """Pinned vector for keymgmt: KMC 40..4F, d = 4342 5643 A1B2C3D4 0001."""
    div = bytes.fromhex("43425643A1B2C3D40001")
    block = bytes.fromhex("A1B2C3D40001F003A1B2C3D400010F03")
    assert cpg202_aes_diversify(TEST_KMC, div, 3) == _aes_ecb(TEST_KMC, block)
    assert cpg202_aes_diversify(TEST_KMC, div, 3).hex().upper() == (
        "0C9FFCC79E269B0B5DF3CCDABC3C0300"
    )


def test_cplc_and_unique_serials(store: CardStore) -> None:
    cards = [new_card(store) for _ in range(20)]
    assert len({c.chip_serial for c in cards}) == 20
    data, sw = apdu(cards[0], "80CA9F7F00")
    assert sw == 0x9000
    assert data[:3] == bytes.fromhex("9F7F2A")
    assert len(data) == 45
    cplc = data[3:]
    assert cplc[12:18].hex().upper() == cards[0].chip_serial
    assert cards[0].atr == ATR_T1


def test_full_personalization_then_terminal_arqc_matches_pyemv(store: CardStore) -> None:
    card = new_card(store)
    cplc = apdu(card, "80CA9F7F00")[0][3:]
    perso = build_perso(cplc)
    fci, sw = select(card)
    assert sw == 0x9000
    assert decode_tlv(fci)[0].tag == 0x6F
    assert personalize(card, perso) == [0x9000] * len(perso_commands(perso.dgis))
    assert card.state.lifecycle == "personalized"

    card.power_on()  # a new session, as QA would start it
    fci, sw = select(card)
    assert sw == 0x9000
    assert fci == tlv(0x6F, tlv(0x84, AID) + tlv(0xA5, perso.select_data))
    assert apdu(card, "00B2010C00") == (perso.record1, 0x9000)
    assert apdu(card, "00B2011400") == (perso.record2, 0x9000)
    for atc in (1, 2, 3):
        data, sw = generate_ac(card)
        assert sw == 0x9000
        assert data[:3] == bytes.fromhex("801380")  # CID, ATC, AC, IAD (8)
        assert int.from_bytes(data[3:5], "big") == atc
        assert data[5:13] == expected_arqc(perso.mk_ac, atc)


def test_state_persists_by_serial_and_atc_continues(store: CardStore) -> None:
    card = new_card(store)
    perso = build_perso(card.state.cplc)
    personalize(card, perso)
    generate_ac(card)
    again = VirtualCard(store.load(card.chip_serial), store.save)  # the same card, another reader
    again.power_on()
    select(again)
    assert apdu(again, "00B2011400") == (perso.record2, 0x9000)
    data, _ = generate_ac(again)
    assert int.from_bytes(data[3:5], "big") == 2
    assert data[5:13] == expected_arqc(perso.mk_ac, 2)
    assert apdu(again, "80CA9F3600") == (bytes.fromhex("9F36020002"), 0x9000)


def test_aac_request_and_p1_checks(store: CardStore) -> None:
    card = new_card(store)
    perso = build_perso(card.state.cplc)
    personalize(card, perso)
    data, sw = generate_ac(card, p1=0x00)
    assert sw == 0x9000
    assert data[2] == 0x00
    assert data[5:13] == expected_arqc(perso.mk_ac, 1)
    assert generate_ac(card, p1=0xC0)[1] == 0x6A86
    assert generate_ac(card, p1=0x88)[1] == 0x6A86  # P1 b4 is RFU
    assert select(card)[1] == 0x9000
    assert apdu(card, "80AE80001D" + "00" * 29 + "00")[1] == 0x6985  # no GPO yet
    assert apdu(card, "80A80000128310" + "00" * 16 + "00")[1] == 0x9000
    assert apdu(card, "80AE80000300000000")[1] == 0x6700


@pytest.mark.parametrize(
    ("command", "sw"),
    [
        ("00EE000000", 0x6D00),  # unknown INS
        ("80A4040007A000000003101000", 0x6E00),  # SELECT is an ISO command
        ("00E2080003010100", 0x6E00),  # STORE DATA is GlobalPlatform (CLA 80)
        ("FFCA9F7F00", 0x6E00),
        ("00A4040007A000000003101100", 0x6A82),  # unknown AID
        ("00A4000002 3F00".replace(" ", ""), 0x6A81),  # select by file id: unsupported
        ("00A4040403A00000", 0x6A86),  # P2 04 (last occurrence) is not supported
        ("00A4040002A000", 0x6700),
        ("80E20800050101027000", 0x6985),  # STORE DATA with nothing selected
        ("00B2010C00", 0x6985),
        ("80CA9F5000", 0x6A88),
        ("81CA9F7F00", 0x6881),  # logical channel 1
        ("84E20800050101027000", 0x6882),  # secure messaging outside the card manager
        ("90CA9F7F00", 0x6884),  # command chaining
        ("00A4", 0x6700),  # shorter than a header
        ("80E2080005010102", 0x6700),  # Lc larger than the data
        ("00C0000010", 0x6985),  # GET RESPONSE with nothing pending
    ],
)
def test_wrong_commands_get_iso_status_words(store: CardStore, command: str, sw: int) -> None:
    card = new_card(store)
    assert apdu(card, command)[1] == sw


def test_store_data_rules(store: CardStore) -> None:
    card = new_card(store)
    perso = build_perso(card.state.cplc)
    host = open_channel(card)
    script = [c.to_bytes() for c in perso_commands(perso.dgis)]
    assert apdu(card, secured(host, script[1]))[1] == 0x6A86  # block 01 before block 00
    for command, sw in (
        ("80E2080005ABCD027000", 0x6A88),  # DGI ABCD unknown
        ("80E2100005010102700000", 0x6A86),  # BER-TLV format not taken
        ("80E28800040101025A00", 0x6A80),  # the last block ends inside a DGI
        ("80E20800050101025A00", 0x6A80),  # a record must be a 70 template
    ):
        assert apdu(card, secured(host, bytes.fromhex(command)))[1] == sw
    assert apdu(card, secured(host, script[0]))[1] == 0x9000
    last = bytes.fromhex("80E28801") + bytes((len(script[1]) - 5,)) + script[1][5:]
    assert apdu(card, secured(host, last))[1] == 0x6985  # last block, 9102 and 8000 missing
    assert card.state.lifecycle == "blank"
    host = open_channel(card)
    assert [apdu(card, secured(host, c))[1] for c in script] == [0x9000] * len(script)
    host = open_channel(card)
    assert apdu(card, secured(host, script[0]))[1] == 0x6985  # personalized: perso closed


def test_memory_failure_fault(store: CardStore) -> None:
    card = new_card(store, memory_failure_at_block=2)
    perso = build_perso(card.state.cplc)
    sws = personalize_blocks(card, perso)
    assert sws[:2] == [0x9000, 0x9000]
    assert set(sws[2:]) == {0x6581}
    assert store.load(card.chip_serial).lifecycle == "blank"
    assert store.load(card.chip_serial).memory_failure_at_block == 2


def test_wrong_factory_kmc_fails_both_cryptograms(store: CardStore) -> None:
    state = store.manufacture(bytes(16))  # a chip maker that used another KMC
    card = VirtualCard(state, store.save)
    card.power_on()
    assert apdu(card, bytes.fromhex("00A4040008") + ISD_AID + b"\x00")[1] == 0x9000
    challenge = os.urandom(8)
    answer, sw = apdu(card, initialize_update(challenge))
    assert sw == 0x9000
    host = Scp03Host.from_kmc(TEST_KMC, challenge, answer)  # the bureau's KMC
    assert not host.card_authentic  # the host sees the card cryptogram mismatch...
    assert apdu(card, host.external_authenticate(0x03))[1] == 0x6982  # ...the card our C-MAC
    data = install_for_perso(AID)
    assert apdu(card, host.wrap(0x80, 0xE6, 0x20, 0x00, data))[1] == 0x6982
    assert state.lifecycle == "blank"


def test_removal_fault_counts_apdus(store: CardStore) -> None:
    state = store.manufacture(TEST_KMC)
    card = VirtualCard(state, store.save, Faults(remove_after_apdus=3))
    for _ in range(2):
        apdu(card, "80CA9F7F00")
        assert not card.removal_due
    apdu(card, "80CA9F7F00")
    assert card.removal_due


def test_t0_card_uses_61xx_and_6cxx(store: CardStore) -> None:
    card = new_card(store, protocol="T=0")
    assert card.atr == ATR_T0
    data, sw = apdu(card, "80CA9F7F00")
    assert (data, sw) == (b"", 0x6C2D)  # P3=00 means 256 under T=0: wrong Le, 2D is right
    data, sw = apdu(card, "80CA9F7F2D")
    assert sw == 0x9000
    assert len(data) == 0x2D
    fci, sw = select(card)
    assert fci == b""
    assert sw >> 8 == 0x61
    part, sw2 = apdu(card, "00C0000004")
    assert len(part) == 4
    assert sw2 == 0x6100 | ((sw & 0xFF) - 4)
    rest, sw3 = apdu(card, bytes.fromhex("00C00000") + bytes((sw2 & 0xFF,)))
    assert sw3 == 0x9000
    assert decode_tlv(part + rest)[0].tag == 0x6F
    assert apdu(card, "00C0000004")[1] == 0x6985  # nothing pending any more
