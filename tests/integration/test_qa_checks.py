"""The QA service on the real stack: printed cards are put into the QA reader (real pcscd, vpcd
and feeder) by chip serial; keymgmt's test double compares the records and verifies the ARQC
with the real HSM core. Chips are personalised here in software through the same HSM-built
script a station relays (the spine test runs them through the station agent instead).
Once a card is decided (or spoiled by graphical) nothing of its face stays in the printer's
spool."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import httpx
import pytest

from services.keymgmt.emv.perso import CardProfileData, CardRecord, build_perso_script
from services.keymgmt.gp.channel import InitializeUpdateAnswer, ScriptCommand
from services.keymgmt.gp.secure_channel import secure_script
from services.keymgmt.hsm.session import Hsm
from services.qa.app import build_app
from shared import events
from shared.pcsc import PcscClient
from tests.conftest import running
from tests.support.bus import wait_for
from tests.support.electrical import (
    ISSUER,
    FeederProcess,
    assert_no_clear_pan,
    print_face,
    publish,
    qa_machine,
    read_events,
)
from tests.support.electrical_keymgmt import KeymgmtTestDouble, new_record
from tests.support.emv_cards import card_profile_on, issuer_oda_on
from tests.support.hsm import TEST_KMC, IssuerKeys
from tests.support.purge_scan import spool_hits
from tests.support.scp03_host import Scp03Host, initialize_update
from vcard.api import WRONG_KMC_HEX
from vcard.card import VirtualCard
from vcard.store import CardStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]
GET_CPLC = bytes.fromhex("80CA9F7F00")
WRONG_KMC = bytes.fromhex(WRONG_KMC_HEX)
# A full-profile card's whole terminal transaction, contact and contactless (docs/terminal.md)
EMV_CHECKS = ["emv-contact", "oda", "chip-readback", "arqc", "emv-contactless"]


async def personalised_chip(
    hsm: Hsm,
    keys: IssuerKeys,
    feeder: FeederProcess,
    record: CardRecord,
    kmc: bytes = TEST_KMC,
    data: CardProfileData | None = None,
) -> str | None:
    """A chip from the virtual card factory (in the feeder's card store), personalised with the
    script keymgmt's HSM core builds for `record` through its SCP03 channel, exactly as a station
    would relay it. A chip made with another KMC cannot pass keymgmt's card cryptogram check: it
    gets the same clear script through a channel opened with its own keys (a perso machine that
    knows them), so its DGI 8000 decrypts under the wrong K_DEK."""
    store = CardStore(feeder.state_dir)
    card = VirtualCard(store.manufacture(kmc), store.save)
    card.power_on()
    assert card.process(bytes.fromhex("00A4040008A00000015100000000"))[-2:] == b"\x90\x00"
    challenge = os.urandom(8)
    iu = card.process(initialize_update(challenge))[:-2]

    def build(h: Hsm, answer: InitializeUpdateAnswer) -> tuple[ScriptCommand, ...]:
        div = answer.diversification_data
        card = data or card_profile_on(h, record, issuer_oda_on(h, keys.issuer)).data
        return build_perso_script(h, record, div, keys.imks, keys.kmc_label, card).commands

    if kmc == TEST_KMC:
        apdus = list((await hsm.call(secure_script, keys.kmc_label, challenge, iu, build)).apdus)
    else:
        host = Scp03Host.from_kmc(kmc, challenge, iu)
        commands = await hsm.call(build, InitializeUpdateAnswer.parse(iu))
        apdus = [host.external_authenticate(0x03)]
        for c in commands:
            cla, ins, p1, p2 = c.apdu[:4]
            apdus.append(host.wrap(cla, ins, p1, p2, c.apdu[5 : 5 + c.apdu[4]]))
    answers = [card.process(apdu)[-2:] for apdu in apdus]
    if kmc != TEST_KMC:  # DGI 8201 does not unwrap under its K_DEK: the card refuses it
        assert answers[-1] == b"\x6a\x80"  # the last block of DGI 8201
        assert card.state.lifecycle != "personalized"
        return None
    assert set(answers) == {b"\x90\x00"}
    return card.chip_serial


def spool_left_nothing(spool: Path, card_ids: Iterable[uuid.UUID]) -> Callable[[], Awaitable[bool]]:
    ids = list(card_ids)

    async def empty() -> bool:
        return spool_hits([spool], ids) == []

    return empty


async def test_qa_passes_good_cards_and_fails_wrong_arqc_readback_and_print(
    unique: str,
    hsm: Hsm,
    test_keys: IssuerKeys,
    station_keymgmt: KeymgmtTestDouble,
    qa_feeder: FeederProcess,
    pcsc: PcscClient,
    tmp_path: Path,
) -> None:
    spool, batch = tmp_path / "spool", uuid.uuid4()
    cards: dict[str, uuid.UUID] = {}
    faces: list[events.CardPrinted] = []
    # A chip of a perso machine with other keys.
    wrong_kmc = station_keymgmt.records[station_keymgmt.add_card()]
    assert await personalised_chip(hsm, test_keys, qa_feeder, wrong_kmc, WRONG_KMC) is None
    for case in ("good", "readback", "image-mismatch", "image-missing", "no-chip"):
        card_id = station_keymgmt.add_card()
        record = station_keymgmt.records[card_id]
        if case == "readback":  # the chip holds another cardholder's records
            record = new_record("OTHER/CARDHOLDER")
        data = station_keymgmt.cards[card_id].data  # the ICC pair and certificate keymgmt prepared
        chip = await personalised_chip(hsm, test_keys, qa_feeder, record, data=data) or ""
        if case == "no-chip":
            chip = "0000DEAD0001"
        face = print_face(spool, card_id, batch, chip)
        if case == "image-mismatch":
            (spool / f"1-card-{card_id}.png").write_bytes(b"a face printed for someone else")
        if case == "image-missing":
            (spool / f"1-card-{card_id}.png").unlink()
        cards[case] = card_id
        faces.append(face)
    qa = qa_machine(unique, station_keymgmt, qa_feeder, pcsc, spool)
    async with running(qa):
        await publish(qa.settings, "graphical", *faces)
        verdicts, raw = await read_events(qa.settings, "qa", lambda s: len(s) >= len(faces))
        await wait_for(spool_left_nothing(spool, cards.values()))  # each face, once decided

    by_card = {getattr(v, "card_id", None): v for v in verdicts}
    good = by_card[cards["good"]]
    assert isinstance(good, events.CardQaPassed), good
    assert good.checks == [*EMV_CHECKS, "print-image"]
    reasons = {}
    for case in cards:
        if case != "good":
            verdict = by_card[cards[case]]
            assert isinstance(verdict, events.CardQaFailed), case
            reasons[case] = verdict.reason
    # Another cardholder's records: the signed static data no longer matches them (ODA fails
    # before the read-back; keymgmt's read-back codes: test_qa_readback_oracle.py)
    assert reasons["readback"] == (
        "emv-contact: oda: signed static application data (93): hash result does not match"
    )
    assert reasons["image-mismatch"] == (
        "print-image: the printed document is not the render card.printed announced"
    )
    assert reasons["image-missing"] == "print-image: the printer holds no job for this card"
    assert reasons["no-chip"] == "chip: the feeder has no chip 0000DEAD0001"
    pans = [record.pan for record in station_keymgmt.records.values()]
    assert_no_clear_pan(pans, raw, [])
    qa_reader = (await qa_feeder.http.get(f"/readers/{qa_feeder.qa_reader}")).json()
    assert qa_reader["card"] is None  # every checked card was ejected
    assert qa_reader["cards_inserted"] == 2  # the misprinted cards never went in


async def test_keymgmt_away_delays_qa_without_failing_the_card(
    unique: str,
    hsm: Hsm,
    test_keys: IssuerKeys,
    station_keymgmt: KeymgmtTestDouble,
    qa_feeder: FeederProcess,
    pcsc: PcscClient,
    tmp_path: Path,
) -> None:
    card_id = station_keymgmt.add_card()
    record, data = station_keymgmt.records[card_id], station_keymgmt.cards[card_id].data
    chip = await personalised_chip(hsm, test_keys, qa_feeder, record, data=data) or ""
    face = print_face(tmp_path / "spool", card_id, uuid.uuid4(), chip)
    qa = qa_machine(unique, station_keymgmt, qa_feeder, pcsc, tmp_path / "spool")
    station_keymgmt.available = False
    try:
        async with running(qa):
            await publish(qa.settings, "graphical", face, face)  # and once redelivered

            async def retried() -> bool:
                return station_keymgmt.refused_while_down >= 3

            await wait_for(retried)
            station_keymgmt.available = True
            verdicts, _raw = await read_events(qa.settings, "qa", lambda s: len(s) >= 1)
            assert qa.consumer is not None
            assert qa.consumer.duplicates == 1
            transport = httpx.ASGITransport(app=build_app(qa))
            async with httpx.AsyncClient(transport=transport, base_url="http://qa") as http:
                ready = (await http.get("/ready")).json()
    finally:
        station_keymgmt.available = True
    assert [type(v) for v in verdicts] == [events.CardQaPassed], verdicts
    assert ready["ready"] is True, ready
    assert ready["reader"] == qa_feeder.qa_reader
    assert ready["machine"]["passed"] == 1


async def test_the_spool_keeps_no_face_qa_decided_or_graphical_spoiled(
    unique: str,
    station_keymgmt: KeymgmtTestDouble,
    qa_feeder: FeederProcess,
    pcsc: PcscClient,
    tmp_path: Path,
) -> None:
    spool, batch = tmp_path / "spool", uuid.uuid4()
    decided, spoiled, stranger = station_keymgmt.add_card(), uuid.uuid4(), uuid.uuid4()
    face = print_face(spool, decided, batch, "0000DEAD0002")  # no such chip: failed at once
    async with running(qa_machine(unique, station_keymgmt, qa_feeder, pcsc, spool)) as qa:
        await publish(qa.settings, "graphical", face)
        [verdict], _raw = await read_events(qa.settings, "qa", lambda s: len(s) >= 1)
        assert isinstance(verdict, events.CardQaFailed)
        await wait_for(spool_left_nothing(spool, [decided]))

    # QA stopped between a verdict and its deletion: the decided card's face is back; a face
    # graphical spoiled (the printer aborted the job) and one QA has not seen are there too.
    for card_id in (decided, spoiled, stranger):
        print_face(spool, card_id, batch, "0000DEAD0003")
    aborted = events.CardSpoiled(
        issuer_id=ISSUER,
        actor="graphical",
        card_id=spoiled,
        batch_id=batch,
        stage="graphical",
        reason="printer aborted the job",
    )
    async with running(qa_machine(unique, station_keymgmt, qa_feeder, pcsc, spool)) as qa:
        await publish(qa.settings, "graphical", aborted)
        await wait_for(spool_left_nothing(spool, [decided, spoiled]))
    assert len(spool_hits([spool], [stranger])) == 2, "a card still to check keeps its face"
