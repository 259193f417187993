"""Station planning at the station (issue 15), on the real stack: electrical claims only cards of
batches keymgmt assigned to its own station id (batch.assigned, the newest revision kept); a
card of a batch assigned elsewhere, parked or not assigned yet stays queued and counted, never
spoiled; a card keymgmt refuses as not for this station goes back to the queue, unspoiled, and
the station stops claiming its batch; batches queued before migration 0004 keep the any-station
rule. Real Postgres for the queue; for the agent, pcscd + vpcd readers, the real feeder, Kafka,
and keymgmt's HSM core behind the test double (tests/support/electrical_keymgmt.py)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from services.electrical.app import MIGRATIONS, build_app
from services.electrical.repository import StationQueue, StationRepository
from shared import events
from shared.db import migrate
from shared.pcsc import PcscClient
from shared.service import ServiceRuntime
from shared.settings import BureauSettings
from tests.conftest import running
from tests.support.bus import wait_for
from tests.support.electrical import (
    FeederProcess,
    assigned,
    feeder_process,
    prepared,
    publish,
    read_events,
    station,
)
from tests.support.electrical_keymgmt import KeymgmtTestDouble
from tests.support.schemas import fresh_schema

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]


async def test_a_station_claims_only_cards_of_batches_assigned_to_it(
    bureau_settings: BureauSettings, unique: str, tmp_path: Path
) -> None:
    url, schema = bureau_settings.database_url, f"electrical_p_{unique}"
    # A batch queued before station planning (migrations up to 0003), then the migration.
    before = tmp_path / "migrations"
    before.mkdir()
    for sql in sorted(MIGRATIONS.glob("000[123]_*.sql")):
        shutil.copy(sql, before / sql.name)
    here, there, unplanned, legacy = (uuid.uuid4() for _ in range(4))
    cards = {batch: uuid.uuid4() for batch in (here, there, unplanned, legacy)}
    async with fresh_schema(url, schema, before, pool_size=2) as fresh:
        engine = fresh.engine
        async with engine.begin() as db:
            repo = StationRepository(db, schema)
            assert await repo.enqueue(cards[legacy], legacy, "acme", "acme-visa", uuid.uuid4())
        assert await migrate(engine, schema, MIGRATIONS) == ["service/0004_batch_stations.sql"]
        async with engine.begin() as db:
            repo = StationRepository(db, schema)
            for batch in (here, there, unplanned):
                assert await repo.enqueue(cards[batch], batch, "acme", "acme-visa", uuid.uuid4())
            assert await repo.assign(here, ["station-a", "station-c"], 1)
            assert await repo.assign(there, ["station-b"], 2)
            assert not await repo.assign(there, ["station-a"], 1)  # older: arrived late
            claimed = [
                await repo.claim_next(f"C0FFEE00000{n}", "station-a", "r0") for n in range(3)
            ]
            assert [c.card_id if c else None for c in claimed] == [cards[legacy], cards[here], None]
            assert not await repo.has_queued("station-a")
            assert await repo.waiting_elsewhere("station-a") == 2  # queued, counted, unspoiled
            # What station-a's /ready shows: one card for station-b, one for the planner.
            assert await repo.queue_for("station-a") == StationQueue(0, 1, 0, 1)
            assert await repo.queue_for("station-b") == StationQueue(1, 0, 0, 1)
            assert await repo.counts() == {"assigned": 2, "queued": 2}
            got = await repo.claim_next("C0FFEE000010", "station-b", "r0")
            assert got is not None
            assert got.card_id == cards[there]
            # The planner gives the unplanned batch to station-a: now it claims it.
            assert await repo.assign(unplanned, ["station-a"], 1)
            assert await repo.has_queued("station-a")
            # keymgmt refused station-a the card (reassigned meanwhile): back to the queue, and
            # station-a claims the batch no more until a newer assignment names it.
            got = await repo.claim_next("C0FFEE000011", "station-a", "r0")
            assert got is not None
            assert got.card_id == cards[unplanned]
            await repo.not_assigned_here(unplanned, "station-a")
            assert await repo.release(cards[unplanned])
            assert await repo.claim_next("C0FFEE000012", "station-a", "r0") is None
            assert await repo.queue_for("station-a") == StationQueue(0, 0, 1, 0)  # parked
            assert await repo.assign(unplanned, ["station-a"], 2)
            got = await repo.claim_next("C0FFEE000012", "station-a", "r0")
            assert got is not None
            assert got.card_id == cards[unplanned]


@pytest.fixture(scope="module")
async def feeder(
    pcsc: PcscClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FeederProcess]:
    async with feeder_process(
        tmp_path_factory.mktemp("feeder"), pcsc, stations=1, with_qa=False
    ) as process:
        yield process


async def states(electrical: ServiceRuntime, *cards: uuid.UUID) -> dict[uuid.UUID, str]:
    async with electrical.engine.connect() as db:
        rows = await db.execute(
            text(
                f"SELECT card_id, state FROM {electrical.schema}.station_cards"
                " WHERE card_id = ANY(:ids)"
            ),
            {"ids": list(cards)},
        )
    return {row[0]: row[1] for row in rows}


async def test_the_agent_leaves_other_stations_cards_queued_and_releases_a_refused_one(
    unique: str, station_keymgmt: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient
) -> None:
    """station-a's agent: station-b's card stays queued while station-a's is encoded; a card
    keymgmt refuses as not for this station goes back to the queue, never spoiled, and its chip
    takes the next card; a reassignment to station-a brings both in."""
    others, mine, refused = (
        station_keymgmt.add_card(),
        station_keymgmt.add_card(),
        station_keymgmt.add_card(),
    )
    station_keymgmt.elsewhere.add(refused)
    other_batch, my_batch, refused_batch = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    electrical = station(unique, station_keymgmt, feeder, pcsc, readers=1)
    settings = electrical.settings
    async with running(electrical):
        await publish(settings, "keymgmt", prepared(others, other_batch), assign_to=("station-b",))
        await publish(settings, "keymgmt", prepared(refused, refused_batch))
        await publish(settings, "keymgmt", prepared(mine, my_batch))
        out, _raw = await read_events(settings, "electrical", lambda s: len(s) >= 1)

        async def refused_released() -> bool:
            async with electrical.engine.connect() as db:
                row = await db.execute(
                    text(f"SELECT stations FROM {electrical.schema}.batches WHERE batch_id = :b"),
                    {"b": refused_batch},
                )
                stations = row.scalar_one_or_none()
            return stations == [] and await states(electrical, refused) == {refused: "queued"}

        await wait_for(refused_released, timeout=30)
        await asyncio.sleep(1.5)  # a wrong claim or spoil would show by now
        assert await states(electrical, others, mine, refused) == {
            others: "queued",
            mine: "encoded",
            refused: "queued",
        }
        # The floor operator's view: nothing left for station-a, one card waiting for station-b
        # and one in the batch parked by the refusal.
        transport = httpx.ASGITransport(app=build_app(electrical))
        async with httpx.AsyncClient(transport=transport, base_url="http://electrical") as http:
            ready = (await http.get("/ready")).json()
        assert ready["ready"] is True, ready
        assert ready["queue"] == {
            "for_this_station": 0,
            "other_stations": 1,
            "parked": 1,
            "unplanned": 0,
            "waiting_elsewhere": 2,
        }
        assert [(type(e), getattr(e, "card_id", None)) for e in out] == [(events.CardEncoded, mine)]
        # The planner moves both batches to station-a; keymgmt now serves the refused card.
        station_keymgmt.elsewhere.discard(refused)
        await publish(
            settings,
            "keymgmt",
            assigned(other_batch, "testbank", "station-a", revision=2),
            assigned(refused_batch, "testbank", "station-a", revision=2),
        )
        out, _raw = await read_events(settings, "electrical", lambda s: len(s) >= 3)
    assert {getattr(e, "card_id", None) for e in out} == {others, mine, refused}
    assert all(isinstance(e, events.CardEncoded) for e in out)
