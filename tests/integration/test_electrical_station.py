"""The station agent on the real stack: pcscd + vpcd readers with virtual cards from the real
feeder, Kafka, Postgres, and keymgmt's real HSM core behind a test double (see
tests/support/electrical.py). Four readers personalise concurrently through SCP03; every chip
then passes QA; removed and failing chips, a chip with other keys (card cryptogram mismatch) and
a script tampered with by the station are spoiled while the next card goes on."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from services.electrical.ports import ScriptSource
from shared import events
from shared.keymgmt.contract import SecureScript, SecureScriptRequest
from shared.pcsc import PcscClient
from tests.conftest import running
from tests.support.bus import wait_for
from tests.support.electrical import (
    FeederProcess,
    assert_no_clear_pan,
    feeder_process,
    next_card_with,
    prepared,
    print_face,
    publish,
    qa_machine,
    read_events,
    station,
)
from tests.support.electrical_keymgmt import KeymgmtTestDouble
from vcard.store import CardStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]
log = logging.getLogger(__name__)


PER_READER = 50  # the bar: 4 readers x 50 cards, every chip then through QA


@pytest.fixture(scope="module")
async def feeder(
    pcsc: PcscClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FeederProcess]:
    async with feeder_process(
        tmp_path_factory.mktemp("feeder"), pcsc, stations=4, with_qa=True
    ) as process:
        yield process


def encoded_count(n: int) -> Callable[[list[events.Event]], bool]:
    return lambda seen: sum(isinstance(e, events.CardEncoded) for e in seen) >= n


@pytest.mark.timeout(900)
async def test_four_readers_personalise_concurrently_and_every_chip_passes_qa(
    unique: str,
    station_keymgmt: KeymgmtTestDouble,
    feeder: FeederProcess,
    pcsc: PcscClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    record_property: Callable[[str, Any], None],
) -> None:
    caplog.set_level(logging.DEBUG)
    total = 4 * PER_READER
    batches = [uuid.uuid4(), uuid.uuid4()]
    cards = {station_keymgmt.add_card(): batches[i * 2 // total] for i in range(total)}
    electrical = station(unique, station_keymgmt, feeder, pcsc, readers=4)
    qa = qa_machine(unique, station_keymgmt, feeder, pcsc, tmp_path / "spool")
    async with running(electrical), running(qa):
        started = time.monotonic()
        await publish(electrical.settings, "keymgmt", *(prepared(c, b) for c, b in cards.items()))
        out, raw_electrical = await read_events(
            electrical.settings, "electrical", encoded_count(total), timeout=300
        )
        elapsed = time.monotonic() - started
        encoded = [e for e in out if isinstance(e, events.CardEncoded)]
        faces = [
            print_face(tmp_path / "spool", e.card_id, e.batch_id, e.chip_serial) for e in encoded
        ]
        await publish(qa.settings, "graphical", *faces)
        verdicts, raw_qa = await read_events(
            qa.settings, "qa", lambda seen: len(seen) >= total, timeout=600
        )
        activity = dict(electrical.deps.agent.activity)

    assert [e.type for e in out] == ["card.encoded"] * total
    assert {e.card_id for e in encoded} == set(cards)
    assert len({e.chip_serial for e in encoded}) == total
    assert {e.station_id for e in encoded} == {"station-a"}
    # SELECT ISD, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, INSTALL, 16 x STORE DATA (the 13
    # DGIs of the full profile, DGI 8201 over 4 commands: docs/emv-profile.md)
    assert all(e.apdu_count == 20 for e in encoded)
    per_reader = Counter(e.reader for e in encoded)
    assert set(per_reader) == set(feeder.station_readers)  # every reader took cards
    # Readers claim the next card when free, so shares are near, not exactly, 50 each.
    assert min(per_reader.values()) >= PER_READER * 0.8, dict(per_reader)
    assert all(station_keymgmt.scripts[c] == 1 for c in cards)
    for event in encoded:
        assert (await feeder.card(event.chip_serial))["lifecycle"] == "personalized"

    passed = [v for v in verdicts if isinstance(v, events.CardQaPassed)]
    assert len(passed) == len(verdicts)
    assert {v.card_id for v in passed} == set(cards)
    emv = ("emv-contact", "oda", "chip-readback", "arqc", "emv-contactless")  # docs/terminal.md
    assert {tuple(v.checks) for v in passed} == {(*emv, "print-image")}
    pans = [station_keymgmt.records[c].pan for c in cards]
    assert_no_clear_pan(pans, raw_electrical + raw_qa, caplog.records)

    rate = total / elapsed
    busy = {r: round(a.busy_s / max(a.encoded, 1), 3) for r, a in activity.items()}
    record_property("cards_per_s_station", round(rate, 2))
    record_property("cards_per_s_per_reader", round(rate / 4, 2))
    log.warning(
        "station: %d cards in %.1f s on 4 readers: %.2f cards/s, %.2f per reader;"
        " claim-to-commit seconds per card %s; per reader %s",
        total,
        elapsed,
        rate,
        rate / 4,
        busy,
        dict(per_reader),
    )


async def test_removed_and_failing_chips_are_spoiled_and_the_next_card_goes_on(
    unique: str, station_keymgmt: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient
) -> None:
    reader = feeder.station_readers[0]
    # The next card leaves the reader after its 6th APDU (GET DATA, SELECT ISD, INITIALIZE
    # UPDATE, EXTERNAL AUTHENTICATE, INSTALL, STORE DATA 00) ...
    await next_card_with(feeder, pcsc, reader, remove_after_apdus=6)
    # ... and the one after it has a defective NVM from STORE DATA block 02 on.
    await feeder.arm(reader, store_data_memory_failure_at_block=2)
    cards = [station_keymgmt.add_card() for _ in range(3)]
    batch = uuid.uuid4()
    electrical = station(unique, station_keymgmt, feeder, pcsc, readers=1)
    async with running(electrical):
        await publish(electrical.settings, "keymgmt", *(prepared(c, batch) for c in cards))
        out, _raw = await read_events(electrical.settings, "electrical", lambda s: len(s) >= 3)

    # Cards are claimed in arrival order, and card.prepared records of one batch spread over
    # partitions, so which card meets which chip is not fixed: the chips' order is.
    assert all(isinstance(e, events.CardEncoded | events.CardSpoiled) for e in out)
    spoiled = sorted((e for e in out if isinstance(e, events.CardSpoiled)), key=lambda e: e.reason)
    encoded = [e for e in out if isinstance(e, events.CardEncoded)]
    assert len(spoiled) == 2
    assert len(encoded) == 1
    failing, removed = spoiled  # "card answered ..." sorts before "card removed ..."
    good = encoded[0]
    assert {failing.card_id, removed.card_id, good.card_id} == set(cards)
    assert removed.stage == "electrical"
    assert removed.reason.startswith("card removed from the reader during STORE DATA block")
    assert removed.apdu_trace[-1].endswith(" no-answer")
    # Headers (8 hex digits) and status words only: no APDU data ever reaches the event.
    assert all(len(entry.split()[0]) == 8 for entry in removed.apdu_trace)
    assert "84E20800 9000" in removed.apdu_trace
    assert removed.station_id == "station-a"
    assert isinstance(failing, events.CardSpoiled)
    assert failing.reason == "card answered 6581 to STORE DATA block 02 (84E20802)"
    assert failing.apdu_trace[-1] == "84E20802 6581"
    assert failing.chip_serial not in (None, removed.chip_serial)
    assert isinstance(good, events.CardEncoded)
    assert good.reader == reader
    assert (await feeder.card(good.chip_serial))["lifecycle"] == "personalized"
    assert (await feeder.card(failing.chip_serial))["lifecycle"] == "blank"


async def test_a_chip_with_another_kmc_is_refused_recorded_and_the_next_card_goes_on(
    unique: str, station_keymgmt: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient
) -> None:
    """A chip made with another KMC fails keymgmt's card cryptogram check: its card is spoiled
    with the reason (card.spoiled, which audit records), the chip is ejected unwritten and the
    next chip takes the next card."""
    reader = feeder.station_readers[0]
    await next_card_with(feeder, pcsc, reader, wrong_kmc=True)
    cards = [station_keymgmt.add_card() for _ in range(2)]
    batch = uuid.uuid4()
    electrical = station(unique, station_keymgmt, feeder, pcsc, readers=1)
    async with running(electrical):
        await publish(electrical.settings, "keymgmt", *(prepared(c, batch) for c in cards))
        out, _raw = await read_events(electrical.settings, "electrical", lambda s: len(s) >= 2)
    spoiled = [e for e in out if isinstance(e, events.CardSpoiled)]
    encoded = [e for e in out if isinstance(e, events.CardEncoded)]
    assert len(spoiled) == 1
    assert len(encoded) == 1
    refused = spoiled[0]
    assert refused.reason.startswith("card cryptogram mismatch")
    assert refused.chip_serial in station_keymgmt.refused_chips
    assert refused.apdu_trace[-2:] == ["00A40400 9000", "80500000 9000"]
    assert (await feeder.card(refused.chip_serial))["lifecycle"] == "blank"
    assert (await feeder.card(encoded[0].chip_serial))["lifecycle"] == "personalized"
    assert {refused.card_id, encoded[0].card_id} == set(cards)


async def test_an_scp02_chip_is_personalised_through_the_same_flow(
    unique: str, station_keymgmt: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient
) -> None:
    reader = feeder.station_readers[0]
    await next_card_with(feeder, pcsc, reader, scp="02")
    card = station_keymgmt.add_card()
    electrical = station(unique, station_keymgmt, feeder, pcsc, readers=1)
    async with running(electrical):
        await publish(electrical.settings, "keymgmt", prepared(card, uuid.uuid4()))
        out, _raw = await read_events(electrical.settings, "electrical", lambda s: len(s) >= 1)
    encoded = out[0]
    assert isinstance(encoded, events.CardEncoded)
    assert (await feeder.card(encoded.chip_serial))["lifecycle"] == "personalized"
    chip = CardStore(feeder.state_dir).load(encoded.chip_serial)
    assert (chip.scp, chip.scp02_sequence) == ("02", 1)  # one SCP02 session opened


class TamperingStation:
    """A compromised station: it flips one data byte of STORE DATA block 01 in keymgmt's script."""

    def __init__(self, honest: ScriptSource) -> None:
        self.honest = honest

    async def secure_script(self, request: SecureScriptRequest) -> SecureScript:
        script = await self.honest.secure_script(request)
        apdus = list(script.apdus)
        target = bytearray(apdus[3])  # EXTERNAL AUTHENTICATE, INSTALL, STORE DATA 00, 01
        target[8] ^= 0x01
        apdus[3] = bytes(target)
        return script.model_copy(update={"apdus": tuple(apdus)})


async def test_a_station_tampering_with_a_command_is_stopped_by_the_card(
    unique: str, station_keymgmt: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient
) -> None:
    reader = feeder.station_readers[0]
    await feeder.eject(reader)  # a fresh blank
    card = station_keymgmt.add_card()
    electrical = station(unique, station_keymgmt, feeder, pcsc, readers=1)
    electrical.deps.agent.keymgmt = TamperingStation(electrical.deps.agent.keymgmt)
    async with running(electrical):
        await publish(electrical.settings, "keymgmt", prepared(card, uuid.uuid4()))
        out, _raw = await read_events(electrical.settings, "electrical", lambda s: len(s) >= 1)
    spoiled = out[0]
    assert isinstance(spoiled, events.CardSpoiled)
    assert spoiled.reason == "card answered 6982 to STORE DATA block 01 (84E20801)"
    assert spoiled.apdu_trace[-3:] == ["84E62000 9000", "84E20800 9000", "84E20801 6982"]
    assert spoiled.chip_serial is not None
    info = await feeder.card(spoiled.chip_serial)
    assert info["lifecycle"] == "blank"
    assert info["dgis"] == ["0101"]  # block 00 landed, the tampered block 01 did not


async def test_a_card_cancelled_at_the_reader_frees_its_untouched_chip_for_the_next(
    unique: str, station_keymgmt: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient
) -> None:
    """keymgmt refuses a card its issuer cancelled after the station queued it: the card ends
    `cancelled` with no event of the station's (intake's card.cancelled is its outcome), and the
    chip, never written, takes the next card."""
    cancelled, good = station_keymgmt.add_card(), station_keymgmt.add_card()
    station_keymgmt.cancelled.add(cancelled)
    batch = uuid.uuid4()
    electrical = station(unique, station_keymgmt, feeder, pcsc, readers=1)
    states: dict[uuid.UUID, tuple[str, str | None]] = {}

    async def both_done() -> bool:
        async with electrical.engine.connect() as db:
            rows = await db.execute(
                text(
                    f"SELECT card_id, state, chip_serial FROM {electrical.schema}.station_cards"
                    " WHERE card_id = ANY(:ids)"
                ),
                {"ids": [cancelled, good]},
            )
            states.update({row[0]: (row[1], row[2]) for row in rows})
        return {s for s, _chip in states.values()} == {"cancelled", "encoded"}

    async with running(electrical):
        await publish(electrical.settings, "keymgmt", prepared(cancelled, batch))
        await publish(electrical.settings, "keymgmt", prepared(good, batch))
        await wait_for(both_done, timeout=60)
        await asyncio.sleep(1.0)  # an event the refusal wrongly emitted would be out by now
        out, _raw = await read_events(electrical.settings, "electrical", lambda s: len(s) >= 1)
    assert [type(e) for e in out] == [events.CardEncoded]
    (encoded,) = out
    assert isinstance(encoded, events.CardEncoded)
    assert encoded.card_id == good
    assert states[cancelled] == ("cancelled", None)
    assert states[good] == ("encoded", encoded.chip_serial)
