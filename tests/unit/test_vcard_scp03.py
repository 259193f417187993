"""The virtual card's card manager and SCP03 secure channel, against the independent host of
tests/support/scp03_host.py (cryptography's KBKDF-CMAC, not vcard/scp03.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.scp03_host import (
    ISD_AID,
    Scp03Host,
    initialize_update,
    install_for_perso,
    scp03_kdf,
)
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.scp03 import kdf
from vcard.store import CardStore

AID = bytes.fromhex("A0000000031010")
SELECT_ISD = bytes.fromhex("00A4040008") + ISD_AID + b"\x00"
SELECT_APP = bytes.fromhex("00A4040007") + AID + b"\x00"
# DGI 0101: a `70` template (the content is not checked beyond its structure)
DGI_0101 = bytes.fromhex("0101057003570100")
DGI_8000 = bytes.fromhex("800030") + bytes(48)


@pytest.fixture
def card(tmp_path: Path) -> VirtualCard:
    store = CardStore(tmp_path)
    card = VirtualCard(store.manufacture(TEST_KMC), store.save)
    card.power_on()
    return card


def sw_of(card: VirtualCard, raw: bytes) -> int:
    return int.from_bytes(card.process(raw)[-2:], "big")


def begin(card: VirtualCard, key_version: int = 0x00) -> tuple[Scp03Host, bytes]:
    assert sw_of(card, SELECT_ISD) == 0x9000
    challenge = os.urandom(8)
    answer = card.process(initialize_update(challenge, key_version))
    assert answer[-2:] == b"\x90\x00"
    return Scp03Host.from_kmc(TEST_KMC, challenge, answer[:-2]), answer[:-2]


def authenticated(card: VirtualCard, level: int = 0x03) -> Scp03Host:
    host, _ = begin(card)
    assert sw_of(card, host.external_authenticate(level)) == 0x9000
    assert sw_of(card, host.wrap(0x80, 0xE6, 0x20, 0x00, install_for_perso(AID))) == 0x9000
    return host


def test_kdf_matches_an_independent_sp800_108_implementation() -> None:
    key, context = os.urandom(16), os.urandom(16)
    for constant, bits in ((0x04, 128), (0x06, 128), (0x00, 64), (0x01, 64), (0x07, 256)):
        assert kdf(key, constant, context, bits) == scp03_kdf(key, constant, context, bits)


def test_initialize_update_answer(card: VirtualCard) -> None:
    host, answer = begin(card)
    cplc = card.state.cplc
    assert answer[:10] == cplc[0:4] + cplc[12:18]  # key diversification data
    assert answer[10:13] == bytes.fromhex("300300")  # KVN 30, SCP03, i = 00
    assert host.card_authentic  # card cryptogram checked by the independent host
    _, again = begin(card)
    assert again[13:21] != answer[13:21]  # a random card challenge per session


def test_initialize_update_checks(card: VirtualCard) -> None:
    assert sw_of(card, SELECT_ISD) == 0x9000
    assert sw_of(card, initialize_update(bytes(8), key_version=0x31)) == 0x6A88
    assert sw_of(card, bytes.fromhex("8050000004") + bytes(4) + b"\x00") == 0x6700
    assert sw_of(card, SELECT_APP) == 0x9000
    assert sw_of(card, initialize_update(bytes(8))) == 0x6D00  # only the card manager


def test_t0_card_answers_initialize_update_through_get_response(tmp_path: Path) -> None:
    store = CardStore(tmp_path)
    card = VirtualCard(store.manufacture(TEST_KMC, protocol="T=0"), store.save)
    card.power_on()
    assert sw_of(card, SELECT_ISD) == 0x9000
    assert sw_of(card, initialize_update(bytes(8))) == 0x611D
    answer = card.process(bytes.fromhex("00C000001D"))
    assert answer[-2:] == b"\x90\x00"
    assert Scp03Host.from_kmc(TEST_KMC, bytes(8), answer[:-2]).card_authentic


def test_wrong_host_cryptogram_is_refused(card: VirtualCard) -> None:
    host, _ = begin(card)
    host.host_cryptogram = bytes(8)  # a host that does not hold the keys, MAC-ing correctly
    assert sw_of(card, host.external_authenticate(0x03)) == 0x6300
    assert sw_of(card, host.wrap(0x80, 0xE6, 0x20, 0x00, install_for_perso(AID))) == 0x6982


def test_external_authenticate_needs_initialize_update_and_a_level(card: VirtualCard) -> None:
    host, _ = begin(card)
    assert sw_of(card, host.external_authenticate(0x02)) == 0x6A86  # C-DEC without C-MAC
    assert sw_of(card, host.external_authenticate(0x03)) == 0x6985  # the IU was consumed


def test_store_data_only_inside_an_authenticated_channel(card: VirtualCard) -> None:
    store = bytes((0x80, 0xE2, 0x08, 0x00, len(DGI_0101))) + DGI_0101
    assert sw_of(card, SELECT_APP) == 0x9000
    assert sw_of(card, store) == 0x6982  # straight to the application
    assert sw_of(card, SELECT_ISD) == 0x9000
    assert sw_of(card, store) == 0x6982  # to the card manager without a session
    host, _ = begin(card)
    assert sw_of(card, store) == 0x6982  # initialized, not authenticated
    host = authenticated(card)
    assert sw_of(card, host.wrap(0x80, 0xE2, 0x08, 0x00, DGI_0101)) == 0x9000
    assert card.state.dgis[0x0101] == DGI_0101[3:]


def test_store_data_needs_install_for_personalization(card: VirtualCard) -> None:
    host, _ = begin(card)
    assert sw_of(card, host.external_authenticate(0x01)) == 0x9000
    assert sw_of(card, host.wrap(0x80, 0xE2, 0x08, 0x00, DGI_0101)) == 0x6985
    other = install_for_perso(bytes.fromhex("A0000000041010"))
    assert sw_of(card, host.wrap(0x80, 0xE6, 0x20, 0x00, other)) == 0x6A88


def test_level_01_takes_clear_data_but_not_keys(card: VirtualCard) -> None:
    host = authenticated(card, level=0x01)
    assert sw_of(card, host.wrap(0x80, 0xE2, 0x08, 0x00, DGI_0101)) == 0x9000
    assert sw_of(card, host.wrap(0x80, 0xE2, 0x08, 0x01, DGI_8000)) == 0x6982
    assert 0x8000 not in card.state.dgis


def test_level_03_decrypts_every_command(card: VirtualCard) -> None:
    host = authenticated(card, level=0x03)
    protected = host.wrap(0x80, 0xE2, 0x08, 0x00, DGI_0101)
    assert DGI_0101 not in protected
    assert len(protected) == 5 + 16 + 8
    assert sw_of(card, protected) == 0x9000
    assert sw_of(card, host.wrap(0x80, 0xE2, 0x08, 0x01, DGI_8000)) == 0x9000
    assert card.state.dgis[0x8000] == bytes(48)


@pytest.mark.parametrize("where", [2, 3, 6, -1])  # P1, P2, data, C-MAC
def test_tampered_command_closes_the_session(card: VirtualCard, where: int) -> None:
    host = authenticated(card)
    good = host.wrap(0x80, 0xE2, 0x08, 0x00, DGI_0101)
    bad = bytearray(good)
    bad[where] ^= 0x01
    assert sw_of(card, bytes(bad)) == 0x6982
    assert sw_of(card, good) == 0x6982  # the session is gone: even the genuine one fails
    assert 0x0101 not in card.state.dgis


def test_replayed_or_reordered_commands_fail_the_mac_chain(card: VirtualCard) -> None:
    host = authenticated(card, level=0x01)
    first = host.wrap(0x80, 0xE2, 0x08, 0x00, DGI_0101)
    assert sw_of(card, first) == 0x9000
    assert sw_of(card, first) == 0x6982  # replay


def test_unprotected_command_in_a_session_closes_it(card: VirtualCard) -> None:
    host = authenticated(card)
    assert sw_of(card, bytes.fromhex("80CA9F7F00")) == 0x6982
    assert sw_of(card, host.wrap(0x80, 0xE2, 0x08, 0x00, DGI_0101)) == 0x6982


@pytest.mark.parametrize("how", ["reset", "select"])
def test_reset_or_selection_ends_the_session(card: VirtualCard, how: str) -> None:
    host = authenticated(card)
    if how == "reset":
        card.reset()
        assert sw_of(card, SELECT_ISD) == 0x9000
    else:
        assert sw_of(card, SELECT_APP) == 0x9000
    assert sw_of(card, host.wrap(0x80, 0xE2, 0x08, 0x00, DGI_0101)) in (0x6982, 0x6882)


def test_other_kmc_card_fails_the_card_cryptogram(tmp_path: Path) -> None:
    store = CardStore(tmp_path)
    card = VirtualCard(
        store.manufacture(bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0")), store.save
    )
    card.power_on()
    host, _ = begin(card)
    assert not host.card_authentic
    assert sw_of(card, host.external_authenticate(0x03)) == 0x6982


def test_initialize_update_starts_a_new_session(card: VirtualCard) -> None:
    old = authenticated(card)
    challenge = os.urandom(8)
    answer = card.process(initialize_update(challenge))
    assert answer[-2:] == b"\x90\x00"
    assert sw_of(card, old.wrap(0x80, 0xE2, 0x08, 0x00, DGI_0101)) == 0x6982  # old one gone
    host = Scp03Host.from_kmc(TEST_KMC, challenge, answer[:-2])
    assert sw_of(card, host.external_authenticate(0x01)) == 0x9000
