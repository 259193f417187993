"""QA's EMV check (services/qa/emv_check.py) on an in-process virtual card personalized by the
test issuer, with a keymgmt stand-in that compares the records with the issuer's and verifies
the ARQC with pyemv (the real keymgmt does it in the HSM: tests/integration/test_qa_checks.py)."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from uuid import UUID

import pytest

from services.qa.emv.kernel import TerminalConfig
from services.qa.emv_check import QaPlace, ca_key_source, emv_chip_checks
from services.qa.service import QaFailure
from shared.keymgmt.contract import ArqcRequest, ReadbackRequest, Verdict
from tests.support import emv_issuer
from tests.support.emv_oracle import IssuerOracle
from tests.support.vcard import card_transmit, new_card, personalize_dgis
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore

CARD_ID = "6f1c2a9e-0000-4000-8000-000000000001"


def terminal(oracle: IssuerOracle) -> TerminalConfig:
    """No CA key held: the kernel asks keymgmt's stand-in, as QA asks keymgmt."""
    return TerminalConfig({}, today=date(2026, 12, 7), ca_key_source=ca_key_source(oracle))


def issued(
    tmp_path: Path, corrupt: emv_issuer.Corruption = None
) -> tuple[VirtualCard, emv_issuer.CardData]:
    card = new_card(CardStore(tmp_path / "cards"))
    data = emv_issuer.build_card(card.state.cplc, TEST_KMC, corrupt=corrupt)
    assert set(personalize_dgis(card, data.dgis)) == {0x9000}
    card.power_on()
    return card, data


def check(card: VirtualCard, oracle: IssuerOracle, data: emv_issuer.CardData) -> list[str]:
    oracle.add(UUID(CARD_ID), data)
    at = QaPlace(UUID(CARD_ID), card.chip_serial, "qa-1")
    return asyncio.run(emv_chip_checks(card_transmit(card), at, oracle, terminal(oracle)))


def test_a_good_card_passes_both_interfaces(tmp_path: Path) -> None:
    card, data = issued(tmp_path)
    oracle = IssuerOracle()
    checks = check(card, oracle, data)
    assert checks == ["emv-contact", "oda", "chip-readback", "arqc", "emv-contactless"]
    assert [r.atc for r in oracle.verified] == ["0001", "0002"]
    (readback,) = oracle.readbacks  # every AFL record by DGI number, on this chip and station
    assert sorted(readback.records) == ["0101", "0201", "0301", "0302", "0303"]
    assert (readback.chip_serial, readback.qa_station) == (card.chip_serial, "qa-1")


def test_a_wrong_static_signature_fails_with_the_reason(tmp_path: Path) -> None:
    card, data = issued(tmp_path, "ssad")
    with pytest.raises(QaFailure) as failure:
        check(card, IssuerOracle(), data)
    assert str(failure.value) == (
        "emv-contact: oda: signed static application data (93):"
        " recovered data header/trailer is not 6A..BC"
    )


def test_an_arqc_keymgmt_refuses_fails_qa(tmp_path: Path) -> None:
    card, data = issued(tmp_path)
    with pytest.raises(QaFailure, match=r"arqc: the chip's contact ARQC \(ATC 0001\)"):
        check(card, IssuerOracle(arqc_ok=False), data)


def test_records_of_another_card_fail_the_readback(tmp_path: Path) -> None:
    card, _ = issued(tmp_path)
    other, _ = issued(tmp_path)
    other_data = emv_issuer.build_card(other.state.cplc, TEST_KMC, pan="5413330089010020")
    with pytest.raises(QaFailure, match="chip-readback: records-differ"):
        check(card, IssuerOracle(), other_data)


def test_a_ca_keymgmt_does_not_trust_fails_oda_naming_it(tmp_path: Path) -> None:
    card, data = issued(tmp_path)
    with pytest.raises(QaFailure) as failure:
        check(card, IssuerOracle(trusts_ca=False), data)
    assert str(failure.value) == "emv-contact: oda: no CA public key for RID A000000003 index 92"


class OverlapOracle(IssuerOracle):
    """keymgmt's stand-in whose read-back answers only once the ARQC is being verified: QA
    must have both questions in flight at once (one round trip less a card)."""

    def __init__(self, **kw: bool) -> None:
        super().__init__(**kw)
        self.arqc_asked = asyncio.Event()

    async def readback(self, request: ReadbackRequest) -> Verdict:
        await asyncio.wait_for(self.arqc_asked.wait(), timeout=2)
        return await super().readback(request)

    async def verify_arqc(self, request: ArqcRequest) -> Verdict:
        self.arqc_asked.set()
        return await super().verify_arqc(request)


def test_the_readback_and_the_contact_arqc_are_asked_at_once(tmp_path: Path) -> None:
    card, data = issued(tmp_path)
    checks = check(card, OverlapOracle(), data)
    assert checks == ["emv-contact", "oda", "chip-readback", "arqc", "emv-contactless"]


def test_a_failed_readback_is_named_before_a_failed_arqc(tmp_path: Path) -> None:
    card, _ = issued(tmp_path)
    other, _ = issued(tmp_path)
    other_data = emv_issuer.build_card(other.state.cplc, TEST_KMC, pan="5413330089010020")
    with pytest.raises(QaFailure, match="chip-readback: records-differ"):
        check(card, OverlapOracle(arqc_ok=False), other_data)
