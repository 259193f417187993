"""shared.pcsc logic that needs no pcscd: 61xx/6Cxx handling against an in-process virtual card,
error classification, the swap rule of the wait loop, and readers.json loading."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from smartcard import scard as sc

import shared.pcsc.config as pcsc_config
from shared import pcsc
from shared.pcsc import (
    CardConnection,
    CardRemoved,
    PcscError,
    PcscTimeout,
    PcscUnavailable,
    ReaderGone,
    ReaderStatus,
    error_for,
)
from shared.pcsc.wait import Wait
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore

SELECT = bytes.fromhex("00A4040007A000000003101000")


class CardBackedConnection(CardConnection):
    """A CardConnection whose wire is a VirtualCard in this process."""

    def __init__(self, card: VirtualCard) -> None:
        super().__init__("in-process")
        self._thread.stop()  # no PC/SC thread needed: the sync methods are called directly
        self.card = card
        self.sent: list[bytes] = []

    def transmit_raw_sync(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return self.card.process(apdu)


@pytest.fixture
def t0_connection(tmp_path: Path) -> CardBackedConnection:
    store = CardStore(tmp_path)
    card = VirtualCard(store.manufacture(TEST_KMC, protocol="T=0"), store.save)
    card.power_on()
    return CardBackedConnection(card)


def test_wrong_le_is_resent_with_the_exact_length(t0_connection: CardBackedConnection) -> None:
    data, sw = t0_connection.transmit_sync(bytes.fromhex("80CA9F7F00"))
    assert sw == 0x9000
    assert len(data) == 45
    assert t0_connection.sent == [bytes.fromhex("80CA9F7F00"), bytes.fromhex("80CA9F7F2D")]


def test_bytes_remaining_are_fetched_with_get_response(t0_connection: CardBackedConnection) -> None:
    data, sw = t0_connection.transmit_sync(SELECT)
    assert sw == 0x9000
    assert data[:2] == b"\x6f\x09"  # blank card FCI: 6F (84 AID)
    assert t0_connection.sent[1][:4] == bytes.fromhex("00C00000")
    script = t0_connection._script_sync([SELECT, bytes.fromhex("00EE0000"), SELECT], True)
    assert [sw for _, sw in script] == [0x9000, 0x6D00]  # stops at the first failure


def test_error_classes() -> None:
    assert isinstance(error_for(sc.SCARD_E_NO_SERVICE, "x"), PcscUnavailable)
    assert isinstance(error_for(sc.SCARD_E_UNKNOWN_READER, "x"), ReaderGone)
    assert isinstance(error_for(sc.SCARD_W_REMOVED_CARD, "x"), CardRemoved)
    assert isinstance(error_for(sc.SCARD_E_NO_SMARTCARD, "x"), CardRemoved)
    assert isinstance(error_for(sc.SCARD_E_TIMEOUT, "x"), PcscTimeout)
    other = error_for(sc.SCARD_E_SHARING_VIOLATION, "connect")
    assert type(other) is PcscError
    assert "0x8010000B" in str(other)


def _status(present: bool, events: int) -> ReaderStatus:
    state = (events << 16) | (sc.SCARD_STATE_PRESENT if present else sc.SCARD_STATE_EMPTY)
    return ReaderStatus("r", present, b"", state)


def test_wait_accepts_a_swap_seen_only_through_the_event_count() -> None:
    before = _status(True, 7)
    wait_card = Wait("r", True, 1, 0.1, 0.0, since=before)
    assert not wait_card._satisfied(_status(True, 7))  # still the old card
    assert not wait_card._satisfied(_status(False, 8))
    assert wait_card._satisfied(_status(True, 9))
    wait_gone = Wait("r", False, 1, 0.1, 0.0, since=before)
    assert not wait_gone._satisfied(_status(True, 7))
    assert wait_gone._satisfied(_status(True, 9))  # the empty moment was missed: still a swap
    assert Wait("r", False, 1, 0.1, 0.0)._satisfied(_status(False, 8))


def test_load_readers_sets_the_private_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PCSCLITE_CSOCK_NAME", raising=False)
    path = tmp_path / "readers.json"
    entry = {"name": "Bureau VPCD 8C7B 00 00", "port": 35963, "pcsc_socket": "/x/pcscd.comm"}
    path.write_text(json.dumps([entry]))
    monkeypatch.setattr(pcsc_config, "_socket_used", None)
    readers = pcsc.load_readers(path)
    assert readers == [pcsc.ReaderConfig("Bureau VPCD 8C7B 00 00", 35963, "/x/pcscd.comm")]
    assert os.environ["PCSCLITE_CSOCK_NAME"] == "/x/pcscd.comm"
