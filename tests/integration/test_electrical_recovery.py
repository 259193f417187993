"""The station agent when things go wrong around it, on the real stack: keymgmt away (retries,
the card stays assigned, nothing is encoded meanwhile), the agent stopped mid-work and started
again (an unwritten card is queued again, a half-written one spoiled, never encoded twice), and
/ready naming the readers it sees."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from services.electrical.app import build_app
from services.electrical.outcomes import RECOVERY_REASON
from services.electrical.repository import StationRepository
from shared import events
from shared.db import migrate
from shared.pcsc import PcscClient
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.bus import wait_for
from tests.support.electrical import (
    FeederProcess,
    feeder_process,
    prepared,
    publish,
    read_events,
    station,
)
from tests.support.electrical_keymgmt import KeymgmtTestDouble

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]


@pytest.fixture(scope="module")
async def feeder(
    pcsc: PcscClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FeederProcess]:
    async with feeder_process(
        tmp_path_factory.mktemp("feeder"), pcsc, stations=2, with_qa=False
    ) as process:
        yield process


@pytest.fixture
def keymgmt_restored(station_keymgmt: KeymgmtTestDouble) -> Iterator[KeymgmtTestDouble]:
    yield station_keymgmt
    station_keymgmt.available = True


async def states(runtime: ServiceRuntime) -> dict[str, int]:
    async with runtime.engine.connect() as db:
        return await StationRepository(db, runtime.schema).counts()


async def test_keymgmt_outage_keeps_cards_assigned_and_encodes_nothing_until_it_returns(
    unique: str, keymgmt_restored: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient
) -> None:
    keymgmt = keymgmt_restored
    keymgmt.available = False
    cards = [keymgmt.add_card() for _ in range(2)]
    batch = uuid.uuid4()
    electrical = station(unique, keymgmt, feeder, pcsc, readers=2)
    async with running(electrical):
        await publish(electrical.settings, "keymgmt", *(prepared(c, batch) for c in cards))

        async def retried() -> bool:
            return keymgmt.refused_while_down >= 8

        await wait_for(retried)
        assert await states(electrical) == {"assigned": 2}
        assert electrical.relay.published == 0  # not one event left the station
        transport = httpx.ASGITransport(app=build_app(electrical))
        async with httpx.AsyncClient(transport=transport, base_url="http://electrical") as http:
            ready = (await http.get("/ready")).json()
    # Stopped during the outage: the unwritten cards go back to the queue.
    assert await states(electrical) == {"queued": 2}  # the engine reconnects after dispose
    assert ready["ready"] is True, ready
    assert [r["reader"] for r in ready["readers"]] == feeder.station_readers[:2]
    assert all(r["known_to_pcscd"] for r in ready["readers"])
    assert all(r["activity"].startswith("personalising card") for r in ready["readers"])

    keymgmt.available = True
    restarted = station(unique, keymgmt, feeder, pcsc, readers=2)
    async with running(restarted):
        out, _raw = await read_events(restarted.settings, "electrical", lambda s: len(s) >= 2)
    assert sorted(e.type for e in out) == ["card.encoded", "card.encoded"]
    encoded = [e for e in out if isinstance(e, events.CardEncoded)]
    assert {e.card_id for e in encoded} == set(cards)
    assert all(keymgmt.scripts[c] == 1 for c in cards)  # a script only once keymgmt answered
    for event in encoded:
        assert (await feeder.card(event.chip_serial))["lifecycle"] == "personalized"


async def test_a_restart_spoils_a_half_written_card_and_queues_an_unwritten_one_again(
    unique: str, station_keymgmt: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient
) -> None:
    half_written, unwritten = station_keymgmt.add_card(), station_keymgmt.add_card()
    batch = uuid.uuid4()
    electrical = station(unique, station_keymgmt, feeder, pcsc, readers=1)
    # What a crashed agent leaves behind, through the repository's own state moves.
    await migrate(electrical.engine, electrical.schema, electrical.migrations)
    async with electrical.engine.begin() as db:
        repo = StationRepository(db, electrical.schema)
        for card in (half_written, unwritten):
            assert await repo.enqueue(card, batch, "testbank", "testbank-visa", uuid.uuid4())
        assert await repo.assign(batch, ["station-a"], 1)  # keymgmt's batch.assigned
        reader = feeder.station_readers[0]
        first = await repo.claim_next("C0FFEE000001", "station-a", reader)
        second = await repo.claim_next("C0FFEE000002", "station-a", reader)
        assert first is not None
        assert first.card_id == half_written
        assert second is not None
        assert second.card_id == unwritten
        assert await repo.start_encoding(half_written)
    async with running(electrical):
        out, _raw = await read_events(electrical.settings, "electrical", lambda s: len(s) >= 2)
    by_card = {getattr(e, "card_id", None): e for e in out}
    spoiled, encoded = by_card[half_written], by_card[unwritten]
    assert isinstance(spoiled, events.CardSpoiled)
    assert spoiled.reason == RECOVERY_REASON
    assert spoiled.chip_serial == "C0FFEE000001"
    assert spoiled.stage == "electrical"
    assert isinstance(encoded, events.CardEncoded)
    assert encoded.chip_serial != "C0FFEE000002"  # a real chip from the reader, not the stale one
    assert station_keymgmt.scripts[half_written] == 0
