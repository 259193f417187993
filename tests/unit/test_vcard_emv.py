"""The virtual card's payment application command by command (EMV 4.3 Book 3 §6.5), and its
ATRs against the basic ATR rules of EMV 4.3 Book 1 §8.3, parsed here from the book."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest

from services.qa.emv.kernel import CID_ARQC, Kernel, TerminalConfig
from services.qa.emv.oda import PublicKey
from shared.iso7816 import decode_tlv, find_tlv
from tests.support import emv_issuer
from tests.support.vcard import (
    apdu,
    card_transmit,
    new_card,
    open_perso_session,
    personalize_dgis,
    secured,
)
from vcard.card import ATR_T0, ATR_T1, VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore

SELECT_AID = "00A4040007A000000003101000"
GPO_CONTACT = "80A80000128310" + "00" * 16 + "00"
GPO_CONTACTLESS = "80A80000128310" + "36004000" + "00" * 12 + "00"


@pytest.fixture
def store(tmp_path: Path) -> CardStore:
    return CardStore(tmp_path / "cards")


def personalized(store: CardStore, *, upper_offline: int = 5) -> VirtualCard:
    card = new_card(store)
    data = emv_issuer.build_card(card.state.cplc, TEST_KMC, upper_offline=upper_offline)
    assert set(personalize_dgis(card, data.dgis)) == {0x9000}
    card.power_on()
    return card


def basic_atr_problems(atr: bytes) -> list[str]:
    """EMV 4.3 Book 1 §8.3.3 basic ATR: TS 3B/3F; T=0 (T0=6x, TB1=00, TC1) or T=1 (T0=Ex,
    TB1=00, TC1, TD1=81, TD2=31, TA3 IFSC 10..FE, TB3 BWI <= 4 and CWI <= 5, TCK)."""
    problems = []
    if atr[0] not in (0x3B, 0x3F):
        problems.append("TS")
    t0, hist = atr[1] >> 4, atr[1] & 0x0F
    if t0 == 0x6:
        tb1, tc1 = atr[2], atr[3]
        if tb1 != 0 or tc1 == 0xFF or len(atr) != 4 + hist:
            problems.append("T=0 interface bytes or length")
        return problems
    if t0 != 0xE:
        return [*problems, "T0 is neither 6x nor Ex"]
    tb1, _tc1, td1, td2, ta3, tb3 = atr[2:8]
    if tb1 != 0 or td1 != 0x81 or td2 != 0x31:
        problems.append("TB1/TD1/TD2")
    if not 0x10 <= ta3 <= 0xFE:
        problems.append("TA3 IFSC")
    if tb3 >> 4 > 4 or tb3 & 0x0F > 5:
        problems.append("TB3 BWI/CWI")
    check = 0
    for byte in atr[1:]:
        check ^= byte
    if check or len(atr) != 8 + hist + 1:
        problems.append("TCK")
    return problems


def test_atrs_pass_the_basic_atr_checks() -> None:
    assert basic_atr_problems(ATR_T0) == []
    assert basic_atr_problems(ATR_T1) == []
    old_t1 = bytes.fromhex("3B8A01") + b"CardBureau"
    old_t1 += bytes((_xor(old_t1[1:]),))
    assert basic_atr_problems(old_t1) != []  # the ATR of issue 13: no TD2


def _xor(data: bytes) -> int:
    out = 0
    for byte in data:
        out ^= byte
    return out


def test_pse_and_ppse_before_personalization_are_not_found(store: CardStore) -> None:
    card = new_card(store)
    assert apdu(card, "00A404000E" + b"1PAY.SYS.DDF01".hex() + "00")[1] == 0x6A82
    assert apdu(card, "00A404000E" + b"2PAY.SYS.DDF01".hex() + "00")[1] == 0x6A82


def test_pse_directory_and_fci(store: CardStore) -> None:
    card = personalized(store)
    fci, sw = apdu(card, "00A404000E" + b"1PAY.SYS.DDF01".hex() + "00")
    assert sw == 0x9000
    assert find_tlv(decode_tlv(fci), 0x88) is not None
    record, sw = apdu(card, "00B2010C00")
    entry = find_tlv(decode_tlv(record), 0x61)
    assert entry is not None
    assert entry.find(0x4F) is not None
    assert entry.find(0x4F).value == emv_issuer.AID  # type: ignore[union-attr]
    assert apdu(card, "00B2020C00")[1] == 0x6A83
    assert apdu(card, "00A4040207A000000003101000")[1] == 0x6A82  # no next occurrence


def test_gpo_rules_and_interfaces(store: CardStore) -> None:
    card = personalized(store)
    assert apdu(card, GPO_CONTACT)[1] == 0x6985  # nothing selected
    assert apdu(card, SELECT_AID)[1] == 0x9000
    assert apdu(card, "80A80000028300" + "00")[1] == 0x6700  # PDOL data missing
    answer, sw = apdu(card, GPO_CONTACT)
    assert sw == 0x9000
    items = decode_tlv(answer)[0]
    assert items.tag == 0x77
    assert items.find(0x82) is not None
    assert apdu(card, GPO_CONTACT)[1] == 0x6985  # once per selection
    # After the PPSE the FCI is the contactless one, with its longer PDOL.
    assert apdu(card, "00A404000E" + b"2PAY.SYS.DDF01".hex() + "00")[1] == 0x9000
    fci, _ = apdu(card, SELECT_AID)
    pdol = find_tlv(decode_tlv(fci), 0x9F38)
    assert pdol is not None
    assert pdol.value == emv_issuer.PDOL_CONTACTLESS
    assert apdu(card, "80A80000148312" + "36004000" + "00" * 14 + "00")[1] == 0x9000


def test_sensitive_dgis_need_an_encrypting_session(store: CardStore) -> None:
    card = new_card(store)
    data = emv_issuer.build_card(card.state.cplc, TEST_KMC)
    host = open_perso_session(card)
    pin = dict(data.dgis)[0x8010]
    clear = bytes.fromhex("80E20800") + bytes((3 + len(pin),)) + b"\x80\x10" + bytes((16,)) + pin
    assert apdu(card, secured(host, clear))[1] == 0x9000  # C-DEC: taken (block 00)
    host = open_perso_session(card, level=0x01)  # C-MAC only: nothing travels encrypted
    assert apdu(card, host.wrap(0x80, 0xE2, 0x08, 0x00, clear[5:]))[1] == 0x6982
    assert card.state.pin_block is None


def test_tc_requests_go_online_at_the_upper_offline_limit(store: CardStore) -> None:
    card = personalized(store, upper_offline=2)
    cids = []
    for _ in range(3):
        apdu(card, SELECT_AID)
        apdu(card, GPO_CONTACT)
        data, sw = apdu(card, "80AE40001D" + "00" * 29 + "00")
        assert sw == 0x9000
        cids.append(data[2])
    assert cids == [0x40, 0x40, 0x80]  # TC, TC, then online


def test_second_generate_ac_declines_without_approval(store: CardStore) -> None:
    card = personalized(store)
    apdu(card, SELECT_AID)
    apdu(card, GPO_CONTACT)
    assert apdu(card, "80AE40001F" + "00" * 31 + "00")[1] == 0x6700  # CDOL1 is 29 bytes
    assert apdu(card, "80AE80001D" + "00" * 29 + "00")[1] == 0x9000
    declined, sw = apdu(card, "80AE40001F" + b"05".hex() + "00" * 29 + "00")
    assert sw == 0x9000
    assert declined[2] == 0x00  # AAC: ARC 05 is not an approval
    assert apdu(card, "80AE40001F" + "00" * 31 + "00")[1] == 0x6985  # no third


def test_t0_card_runs_the_whole_kernel_through_get_response(store: CardStore) -> None:
    card = personalized(store)
    card.state.protocol = "T=0"  # personalized over T=1 here; the terminal side speaks T=0
    card.power_on()  # a card takes its protocol at reset
    rid, modulus, index, exponent = emv_issuer.ca_public_key()
    config = TerminalConfig({(rid, index): PublicKey(modulus, exponent)}, today=date(2026, 12, 7))
    out = asyncio.run(Kernel(card_transmit(card), config).contact(emv_issuer.PIN))
    assert out.oda == ["SDA", "DDA", "CDA"]
    assert out.first is not None
    assert out.first.cid == CID_ARQC


def test_verify_writes_the_decremented_counter_before_comparing(store: CardStore) -> None:
    """A card pulled during VERIFY must not give a free try: the NVM sees the decrement first,
    even for the right PIN (which then writes the counter back to the limit)."""
    card = personalized(store)
    written: list[int] = []
    app = card.app
    app._persist = lambda state: written.append(state.pin_tries)  # watch the NVM writes
    assert apdu(card, SELECT_AID)[1] == 0x9000
    right = "0020008008" + f"2{len(emv_issuer.PIN)}{emv_issuer.PIN}".ljust(16, "F")
    assert apdu(card, right)[1] == 0x9000
    assert written == [2, 3]
    written.clear()
    assert apdu(card, "0020008008" + "241111FFFFFFFFFF")[1] == 0x63C2
    assert written == [2]
