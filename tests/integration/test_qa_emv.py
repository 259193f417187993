"""The QA service runs its EMV terminal kernel on printed cards through the real stack: Kafka
(card.printed in, the verdicts out), Postgres (QA's queue), the feeder process and pcscd/vpcd
(the QA reader). Chips are personalized in software with the test issuer's DGIs (tests/support/
emv_issuer.py); keymgmt's answers come from the issuer's own data (tests/support/emv_oracle.py)
until the data preparation of h/emvprep feeds the real keymgmt (tests/integration/
test_qa_checks.py then covers the HTTP side)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from services.qa.app import bootstrap as qa_bootstrap
from services.qa.settings import QaSettings
from shared import events
from shared.pcsc import PcscClient
from tests.conftest import running
from tests.support import emv_issuer
from tests.support.electrical import FeederProcess, print_face, publish, read_events
from tests.support.emv_oracle import IssuerOracle
from tests.support.vcard import personalize_dgis
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]


def personalized_chip(
    feeder: FeederProcess, corrupt: emv_issuer.Corruption
) -> tuple[str, emv_issuer.CardData]:
    """A chip of the feeder's card store personalized by the test issuer (in software, as a
    station would through its reader), saved for the feeder to insert."""
    store = CardStore(feeder.state_dir)
    card = VirtualCard(store.manufacture(TEST_KMC), store.save)
    card.power_on()
    data = emv_issuer.build_card(card.state.cplc, TEST_KMC, corrupt=corrupt)
    assert set(personalize_dgis(card, data.dgis)) == {0x9000}
    return card.chip_serial, data


async def test_qa_passes_a_good_card_and_names_each_emv_failure(
    unique: str, qa_feeder: FeederProcess, pcsc: PcscClient, tmp_path: Path
) -> None:
    spool, batch, oracle = tmp_path / "spool", uuid.uuid4(), IssuerOracle()
    cards: dict[str, uuid.UUID] = {}
    faces = []
    for case in ("good", "ssad", "icc_key", "issuer_cert"):
        card_id = uuid.uuid4()
        chip, data = personalized_chip(qa_feeder, None if case == "good" else case)  # type: ignore[arg-type]
        oracle.add(card_id, data)
        faces.append(print_face(spool, card_id, batch, chip))
        cards[case] = card_id
    settings = QaSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        feeder_url=qa_feeder.url,
        card_printer_spool=spool,
        queue_poll_s=0.2,
    )
    qa = qa_bootstrap(
        settings, schema=f"qa_{unique}", reader=qa_feeder.qa_reader, pcsc=pcsc, keymgmt=oracle
    )
    async with running(qa):
        await publish(qa.settings, "graphical", *faces)
        verdicts, _raw = await read_events(qa.settings, "qa", lambda s: len(s) >= len(faces))
    by_card = {getattr(v, "card_id", None): v for v in verdicts}
    good = by_card[cards["good"]]
    assert isinstance(good, events.CardQaPassed)
    assert good.checks == [
        "emv-contact",
        "oda",
        "chip-readback",
        "arqc",
        "emv-contactless",
        "print-image",
    ]
    assert [r.atc for r in oracle.verified] == ["0001", "0002"]  # contact, then contactless
    reasons = {}
    for case in ("ssad", "icc_key", "issuer_cert"):
        verdict = by_card[cards[case]]
        assert isinstance(verdict, events.CardQaFailed), case
        reasons[case] = verdict.reason
    assert reasons["ssad"].startswith("emv-contact: oda: signed static application data (93):")
    assert reasons["icc_key"].startswith("emv-contact: oda: DDA signed dynamic application data:")
    assert reasons["issuer_cert"].startswith(
        "emv-contact: oda: issuer public key certificate (90):"
    )
