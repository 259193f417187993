"""The virtual card manager's SCP02 (i=15) against the independent host of
tests/support/scp02_host.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.scp02_host import Scp02Host
from tests.support.scp03_host import ISD_AID, initialize_update, install_for_perso
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore

AID = bytes.fromhex("A0000000031010")
SELECT_ISD = bytes.fromhex("00A4040008") + ISD_AID + b"\x00"
DGI_0101 = bytes.fromhex("0101057003570100")
DGI_8000 = bytes.fromhex("800030") + bytes(48)


@pytest.fixture
def store(tmp_path: Path) -> CardStore:
    return CardStore(tmp_path)


def scp02_card(store: CardStore, kmc: bytes = TEST_KMC) -> VirtualCard:
    card = VirtualCard(store.manufacture(kmc, scp="02"), store.save)
    card.power_on()
    return card


def sw_of(card: VirtualCard, raw: bytes) -> int:
    return int.from_bytes(card.process(raw)[-2:], "big")


def begin(card: VirtualCard) -> tuple[Scp02Host, bytes]:
    assert sw_of(card, SELECT_ISD) == 0x9000
    challenge = os.urandom(8)
    answer = card.process(initialize_update(challenge))
    assert answer[-2:] == b"\x90\x00"
    return Scp02Host.from_kmc(TEST_KMC, challenge, answer[:-2]), answer[:-2]


def test_initialize_update_answer_and_sequence_counter(store: CardStore) -> None:
    card = scp02_card(store)
    host, answer = begin(card)
    cplc = card.state.cplc
    assert answer[:10] == cplc[0:4] + cplc[12:18]
    assert answer[10:14] == bytes.fromhex("20020000")  # KVN 20, SCP02, sequence counter 0000
    assert host.card_authentic
    assert sw_of(card, host.external_authenticate(0x01)) == 0x9000
    assert store.load(card.chip_serial).scp02_sequence == 1  # kept in NVM
    _, again = begin(card)
    assert again[12:14] == b"\x00\x01"


@pytest.mark.parametrize("level", [0x01, 0x03])
def test_personalization_data_through_scp02(store: CardStore, level: int) -> None:
    card = scp02_card(store)
    host, _ = begin(card)
    assert sw_of(card, host.external_authenticate(level)) == 0x9000
    assert sw_of(card, host.wrap(0x80, 0xE6, 0x20, 0x00, install_for_perso(AID))) == 0x9000
    protected = host.wrap(0x80, 0xE2, 0x08, 0x00, DGI_0101)
    assert (DGI_0101 in protected) is (level == 0x01)
    assert sw_of(card, protected) == 0x9000
    keys = sw_of(card, host.wrap(0x80, 0xE2, 0x08, 0x01, DGI_8000))
    assert keys == (0x9000 if level == 0x03 else 0x6982)  # keys only under C-DECRYPTION
    assert card.state.dgis[0x0101] == DGI_0101[3:]


@pytest.mark.parametrize("where", [2, 6, -1])
def test_tampering_closes_the_scp02_session(store: CardStore, where: int) -> None:
    card = scp02_card(store)
    host, _ = begin(card)
    assert sw_of(card, host.external_authenticate(0x03)) == 0x9000
    good = host.wrap(0x80, 0xE6, 0x20, 0x00, install_for_perso(AID))
    bad = bytearray(good)
    bad[where] ^= 0x01
    assert sw_of(card, bytes(bad)) == 0x6982
    assert sw_of(card, good) == 0x6982


def test_wrong_host_cryptogram_and_other_keys(store: CardStore) -> None:
    card = scp02_card(store)
    host, _ = begin(card)
    host.host_cryptogram = bytes(8)
    assert sw_of(card, host.external_authenticate(0x01)) == 0x6300
    other = scp02_card(store, bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0"))
    host, _ = begin(other)
    assert not host.card_authentic
    assert sw_of(other, host.external_authenticate(0x01)) == 0x6982
