"""Station planning rules of keymgmt (services/keymgmt/perso/stations.py, planning.py): which
station may have the script of a card no station has bound, the BUREAU_PERSO_STATIONS setting,
and what an assignment writes and announces (a fake unit of work; the real one is in
tests/integration/test_keymgmt_station_planning.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from pydantic import ValidationError

from services.keymgmt.perso.planning import (
    BatchNotPrepared,
    assign_prepared_batches,
    reassign_batch,
)
from services.keymgmt.perso.planning_api import BatchStations
from services.keymgmt.perso.stations import assignment_problem, station_names
from services.keymgmt.settings import KeymgmtSettings
from shared.events import BatchAssigned, Event

BATCH = uuid.uuid4()
BOUND = {"card_id": uuid.uuid4(), "chip_serial": "4790512300001234", "station": "station-a"}


def assigned(*stations: str, any_station: bool = False) -> dict[str, Any]:
    return {"batch_id": BATCH, "stations": list(stations), "any_station": any_station}


def test_a_station_the_batch_is_assigned_to_may_have_its_cards() -> None:
    assert assignment_problem(assigned("station-a", "station-c"), None, "station-c") is None


def test_another_station_is_refused_with_the_batch_stations_named() -> None:
    assert assignment_problem(assigned("station-a"), None, "station-b") == (
        "the card's batch is assigned to station station-a, not to station-b"
    )


def test_an_unassigned_or_parked_batch_goes_to_no_station() -> None:
    assert assignment_problem(None, None, "station-a") == (
        "the card's batch is not assigned to any station yet (a planner assigns it)"
    )
    assert assignment_problem(assigned(), None, "station-a") == (
        "the card's batch is parked: assigned to no station"
    )


def test_a_bound_card_is_the_binding_rules_whatever_the_assignment() -> None:
    assert assignment_problem(assigned("station-b"), BOUND, "station-a") is None
    assert assignment_problem(None, BOUND, "station-a") is None


def test_a_batch_prepared_before_planning_goes_to_any_station() -> None:
    assert assignment_problem(assigned(any_station=True), None, "station-z") is None


def test_the_setting_lists_station_ids() -> None:
    assert station_names("") == []
    assert station_names(" station-a , station-07,") == ["station-a", "station-07"]
    settings = KeymgmtSettings(environment="test", perso_stations="station-a")
    assert settings.default_stations == ["station-a"]
    assert KeymgmtSettings(environment="test").default_stations == []


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("station a", "'station a' is not a station id"),
        ("-a", "'-a' is not a station id"),
        ("a,b,a", "station a is named twice"),
        (",".join(f"s{n}" for n in range(33)), "33 stations, at most 32"),
    ],
)
def test_a_bad_setting_is_named(setting: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        KeymgmtSettings(environment="test", perso_stations=setting)


def test_the_planner_request_checks_its_stations() -> None:
    assert BatchStations(stations=[]).stations == []
    with pytest.raises(ValidationError, match="'b@d' is not a station id"):
        BatchStations(stations=["station-a", "b@d"])
    with pytest.raises(ValidationError, match="extra"):
        BatchStations.model_validate({"stations": ["a"], "station": "b"})


@dataclass
class FakePerso:
    issuer: str | None = "acme"
    new_rows: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    async def assign_new(
        self, batch_ids: list[uuid.UUID], stations: list[str], by: str
    ) -> list[dict[str, Any]]:
        self.calls.append(("assign_new", batch_ids, stations, by))
        return self.new_rows

    async def batch_issuer(self, batch_id: uuid.UUID) -> str | None:
        return self.issuer

    async def reassign(
        self, batch_id: uuid.UUID, issuer_id: str, stations: list[str], by: str
    ) -> int:
        self.calls.append(("reassign", batch_id, issuer_id, stations, by))
        return 4

    async def bound_by_station(self, batch_id: uuid.UUID) -> dict[str, int]:
        return {"station-a": 2}


@dataclass
class FakeUow:
    perso: FakePerso
    emitted: list[Event] = field(default_factory=list)

    @property
    def repo(self) -> FakeUow:
        return self

    async def emit(self, event: Event) -> None:
        self.emitted.append(event)


async def test_no_default_station_leaves_batches_for_a_planner() -> None:
    uow = FakeUow(FakePerso())
    await assign_prepared_batches(cast(Any, uow), [BATCH], [], "keymgmt")
    assert uow.perso.calls == []
    assert uow.emitted == []


async def test_the_default_assignment_announces_each_batch_it_wrote() -> None:
    other = uuid.uuid4()
    uow = FakeUow(FakePerso(new_rows=[{"batch_id": BATCH, "issuer_id": "acme", "revision": 1}]))
    await assign_prepared_batches(cast(Any, uow), [BATCH, other, BATCH], ["station-a"], "keymgmt")
    assert uow.perso.calls == [
        ("assign_new", sorted([BATCH, other]), ["station-a"], "service:keymgmt")
    ]
    [event] = uow.emitted
    assert isinstance(event, BatchAssigned)
    assert (event.batch_id, event.stations, event.revision) == (BATCH, ["station-a"], 1)
    assert (event.actor, event.issuer_id) == ("keymgmt", "acme")


async def test_a_reassignment_is_announced_by_its_planner() -> None:
    uow = FakeUow(FakePerso())
    done = await reassign_batch(cast(Any, uow), BATCH, ["station-b"], "operator:olga")
    assert (done.revision, done.bound) == (4, {"station-a": 2})
    assert uow.perso.calls == [("reassign", BATCH, "acme", ["station-b"], "operator:olga")]
    [event] = uow.emitted
    assert isinstance(event, BatchAssigned)
    assert (event.actor, event.stations, event.revision) == ("operator:olga", ["station-b"], 4)


async def test_a_batch_keymgmt_never_prepared_cannot_be_assigned() -> None:
    uow = FakeUow(FakePerso(issuer=None))
    with pytest.raises(BatchNotPrepared, match=f"no card of batch {BATCH}"):
        await reassign_batch(cast(Any, uow), BATCH, ["station-b"], "operator:olga")
    assert uow.emitted == []
