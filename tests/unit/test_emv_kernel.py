"""QA's terminal kernel against the virtual card in-process, both personalized by the test
issuer of tests/support/emv_issuer.py (cryptography + pyemv, from the specifications).

The contact flow (PSE, SELECT, GPO, READ RECORD, SDA, DDA, offline PIN, GENERATE AC 1 and 2
with CDA) and the contactless flow (PPSE, GPO with a TTQ, CDA) pass; each corrupted ODA object
fails its method with a named reason; the RSA recoveries agree with `cryptography`'s keys.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest
from pyemv import ac, kd

from services.qa.emv.apdu import KernelFailure
from services.qa.emv.kernel import CID_ARQC, CID_TC, Kernel, Outcome, TerminalConfig
from services.qa.emv.oda import PublicKey, recover
from tests.support import emv_issuer
from tests.support.emv_issuer import Corruption, build_card
from tests.support.vcard import card_transmit, new_card, personalize_dgis
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore


@pytest.fixture
def store(tmp_path: Path) -> CardStore:
    return CardStore(tmp_path / "cards")


def terminal() -> TerminalConfig:
    rid, modulus, index, exponent = emv_issuer.ca_public_key()
    return TerminalConfig({(rid, index): PublicKey(modulus, exponent)}, today=date(2026, 12, 7))


def issued_card(
    store: CardStore, corrupt: Corruption = None, *, atc_limit: int = 0xFFFF, pin_tries: int = 3
) -> tuple[VirtualCard, emv_issuer.CardData]:
    card = new_card(store)
    data = build_card(
        card.state.cplc, TEST_KMC, corrupt=corrupt, atc_limit=atc_limit, pin_tries=pin_tries
    )
    assert set(personalize_dgis(card, data.dgis)) == {0x9000}
    assert card.state.lifecycle == "personalized"
    card.power_on()
    return card, data


def contact(card: VirtualCard, pin: str | None = emv_issuer.PIN) -> Outcome:
    return asyncio.run(Kernel(card_transmit(card), terminal()).contact(pin))


def contactless(card: VirtualCard) -> Outcome:
    return asyncio.run(Kernel(card_transmit(card), terminal()).contactless())


def pyemv_ac(mk_ac: bytes, atc: bytes, data: bytes) -> bytes:
    session_key = kd.derive_common_sk(mk_ac, atc + bytes(6))
    return bytes(ac.generate_ac(session_key, data + emv_issuer.AIP + atc))


def test_contact_flow_with_sda_dda_cda_pin_and_both_cryptograms(store: CardStore) -> None:
    card, data = issued_card(store)
    out = contact(card)
    assert out.aid == emv_issuer.AID
    assert out.aip == emv_issuer.AIP
    assert out.oda == ["SDA", "DDA", "CDA"]
    assert out.pin_verified
    assert out.data.static_data == data.static_data
    assert out.first is not None
    assert out.second is not None
    assert out.first.cid == CID_ARQC
    assert out.second.cid == CID_TC
    assert out.first.atc == out.second.atc == b"\x00\x01"
    assert len(out.first.cdol_data) == 29  # keymgmt's ARQC verification input is unchanged
    assert out.first.ac == pyemv_ac(data.mk_ac, out.first.atc, out.first.cdol_data)
    assert out.second.ac == pyemv_ac(data.mk_ac, out.second.atc, out.second.cdol_data)
    assert out.first.iad[:4] == bytes.fromhex("06010A03")
    assert out.first.iad[5] & 0x80  # CVR: offline PIN performed
    again = contact(card)  # the ATC goes on; the last online ATC follows the approval
    assert again.first is not None
    assert again.first.atc == b"\x00\x02"
    assert card.process(bytes.fromhex("80CA9F1300"))[:-2] == bytes.fromhex("9F13020002")


def test_contactless_flow_with_cda(store: CardStore) -> None:
    card, data = issued_card(store)
    out = contactless(card)
    assert out.interface == "contactless"
    assert "CDA" in out.oda
    assert not out.pin_verified
    assert out.second is None
    assert out.first is not None
    assert out.first.cid == CID_ARQC
    assert out.first.ac == pyemv_ac(data.mk_ac, out.first.atc, out.first.cdol_data)
    fci = card.process(bytes.fromhex("00A404000E") + b"2PAY.SYS.DDF01" + b"\x00")
    assert b"BUREAU DEBIT CL" in fci
    assert fci[-2:] == b"\x90\x00"


def test_rsa_recoveries_agree_with_cryptography_keys(store: CardStore) -> None:
    """The keys the kernel recovers are the issuer's and the card's own `cryptography` keys."""
    card, data = issued_card(store)
    kernel = Kernel(card_transmit(card), terminal())
    asyncio.run(kernel.contact(emv_issuer.PIN))
    icc = emv_issuer.icc_key().public_key().public_numbers()
    assert kernel._icc_key is not None
    assert int.from_bytes(kernel._icc_key.modulus, "big") == icc.n
    issuer = emv_issuer.issuer_key().public_key().public_numbers()
    modulus, exponent = emv_issuer.ca_public_key()[1], emv_issuer.ca_public_key()[3]
    record = data.records[0x0301]
    cert = record[record.index(b"\x90\x81\xb0") + 3 :][:176]
    # The oracle: cryptography's CA key numbers do the public operation the kernel does.
    ca = emv_issuer.ca_key().public_key().public_numbers()
    plain = pow(int.from_bytes(cert, "big"), ca.e, ca.n).to_bytes(176, "big")
    recovered = recover(cert, PublicKey(modulus, exponent), "90")
    assert recovered == plain
    assert recovered[15 : 15 + 140] == issuer.n.to_bytes(144, "big")[:140]


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        ("issuer_cert", "issuer public key certificate (90)"),
        ("icc_cert", "ICC public key certificate (9F46)"),
        ("ssad", "signed static application data (93)"),
        ("icc_key", "DDA signed dynamic application data"),
        ("static_data", "signed static application data (93): hash result does not match"),
    ],
)
def test_each_corrupted_oda_object_fails_its_method(
    store: CardStore, corrupt: Corruption, reason: str
) -> None:
    card, _ = issued_card(store, corrupt)
    with pytest.raises(KernelFailure) as failure:
        contact(card)
    assert failure.value.step == "oda"
    assert reason in failure.value.reason


def test_cda_fails_on_a_wrong_dynamic_signature(store: CardStore) -> None:
    """Contactless has no DDA step: the ICC key that does not match its certificate is caught
    by CDA, on the GENERATE AC signature."""
    card, _ = issued_card(store, "icc_key")
    with pytest.raises(KernelFailure, match="CDA signed dynamic data"):
        contactless(card)


def test_unknown_ca_index_is_named(store: CardStore) -> None:
    card, _ = issued_card(store)
    config = TerminalConfig({}, today=date(2026, 12, 7))
    with pytest.raises(KernelFailure, match="no CA public key for RID A000000003 index 92"):
        asyncio.run(Kernel(card_transmit(card), config).contact(None))


def test_pin_try_counter_blocks(store: CardStore) -> None:
    card, _ = issued_card(store, pin_tries=3)
    with pytest.raises(KernelFailure, match="63C2"):
        contact(card, pin="9999")
    for left in (1, 0):
        card.power_on()
        with pytest.raises(KernelFailure, match=f"63C{left}"):
            contact(card, pin="9999")
    card.power_on()
    with pytest.raises(KernelFailure, match="6983"):
        contact(card)  # blocked: even the right PIN is not compared
    assert card.process(bytes.fromhex("80CA9F1700"))[:-2] == bytes.fromhex("9F170100")


def test_right_pin_resets_the_counter(store: CardStore) -> None:
    card, _ = issued_card(store, pin_tries=3)
    with pytest.raises(KernelFailure, match="63C2"):
        contact(card, pin="0000")
    card.power_on()
    contact(card)
    assert card.process(bytes.fromhex("80CA9F1700"))[:-2] == bytes.fromhex("9F170103")


def test_atc_limit_blocks_generate_ac(store: CardStore) -> None:
    card, _ = issued_card(store, atc_limit=2)
    contact(card)
    card.power_on()
    contact(card)
    card.power_on()
    with pytest.raises(KernelFailure, match="genac1: card answered 6985"):
        contact(card)


def test_an_expired_application_fails_processing_restrictions(store: CardStore) -> None:
    card, _ = issued_card(store)
    rid, modulus, index, exponent = emv_issuer.ca_public_key()
    later = TerminalConfig({(rid, index): PublicKey(modulus, exponent)}, today=date(2031, 1, 1))
    with pytest.raises(KernelFailure, match=r"processing restrictions: application expired"):
        asyncio.run(Kernel(card_transmit(card), later).contact(None))
