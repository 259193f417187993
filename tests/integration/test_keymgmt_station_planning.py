"""Station planning on the real stack (issue 15: "a station cannot get another station's card"):
keymgmt (real Postgres, Kafka, SoftHSM) assigns each prepared batch to the stations of
BUREAU_PERSO_STATIONS (the fixture's: station-a) and announces it as batch.assigned; a station
the batch is not assigned to gets no script for a card no station has bound (refused, recorded,
the card not bound); a planner (an operator's own token) reassigns the batch, and nobody else
can; a card already bound stays with its station."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.bus import collect
from tests.support.keymgmt import auth, ordered, prepared_events, publish, vault
from tests.support.keymgmt_emv import load_oda_keys, load_pin_and_cvv_keys
from tests.support.perso_chip import ask_script, new_chip
from vcard.store import CardStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]


async def assignments(settings: KeymgmtSettings, count: int) -> list[events.BatchAssigned]:
    """The first `count` batch.assigned on keymgmt's stream."""

    def found(records: list[Any]) -> list[events.BatchAssigned]:
        decoded = (events.decode_event(r.value) for r in records)
        return [e for e in decoded if isinstance(e, events.BatchAssigned)]

    topic = settings.topic("keymgmt")
    return found(await collect(settings.kafka_bootstrap, topic, lambda s: len(found(s)) >= count))


async def refusals(runtime: ServiceRuntime, card_id: str) -> list[tuple[str, str]]:
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT accessor, purpose FROM vault_access WHERE card_id = :c"
                " AND purpose LIKE 'perso refused%' ORDER BY id"
            ),
            {"c": card_id},
        )
    return [(str(a), str(p)) for a, p in rows.all()]


async def binding(runtime: ServiceRuntime, card_id: str) -> tuple[str, str] | None:
    async with runtime.engine.connect() as conn:
        row = await conn.execute(
            text("SELECT station, chip_serial FROM chip_bindings WHERE card_id = :c"),
            {"c": card_id},
        )
    found = row.first()
    return None if found is None else (str(found[0]), str(found[1]))


async def test_a_station_gets_only_the_cards_of_batches_assigned_to_it(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    tmp_path: Path,
) -> None:
    runtime, http = keymgmt
    issuer, station_a, station_b = f"ia{unique}", f"st-{unique}", f"st2-{unique}"
    planner = auth(f"op-{unique}")
    await load_demo_keys(settings, issuer)
    await load_pin_and_cvv_keys(runtime, keymgmt_hsm, issuer)
    await load_oda_keys(http, unique, issuer, 3)  # an ICC key pair for each card
    batch = uuid.uuid4()
    first, second = await vault(http, unique, issuer), await vault(http, unique, issuer)
    orders = [
        ordered(card, issuer).model_copy(update={"batch_id": batch}) for card in (first, second)
    ]
    await publish(settings, *orders)
    await prepared_events(settings, 2)
    [default] = await assignments(settings, 1)
    assert (default.batch_id, default.stations, default.revision) == (batch, ["station-a"], 1)
    assert default.actor == "keymgmt"
    assert default.issuer_id == issuer
    store = CardStore(tmp_path)

    # station-b asks for a card of station-a's batch: refused, recorded, the card not bound,
    # neither with its own chip nor with the chip station-a will use.
    chip_a = new_chip(store)
    for chip in (new_chip(store), chip_a):
        stolen = await ask_script(http, station_b, first["card_id"], chip)
        assert stolen.status_code == 403, stolen.text
        assert stolen.headers["x-bureau-refusal"] == "card-not-for-this-station"
        assert "assigned to station station-a, not to station-b" in stolen.json()["detail"]
    assert await binding(runtime, first["card_id"]) is None
    why = "perso refused: the card's batch is assigned to station station-a, not to station-b"
    assert await refusals(runtime, first["card_id"]) == [("station:station-b", why)] * 2
    # station-a gets it, and the card is bound there.
    assert (await ask_script(http, station_a, first["card_id"], chip_a)).status_code == 200
    assert await binding(runtime, first["card_id"]) == ("station-a", chip_a.chip_serial)

    # Only a planner reassigns: a station, a custodian, an admin, no token are refused and
    # change nothing.
    url = f"/v1/perso/batches/{batch}/stations"
    to_b = {"stations": ["station-b"]}
    for token, status in ((station_b, 403), (f"cu-{unique}", 403), (f"ad-{unique}", 403)):
        assert (await http.put(url, json=to_b, headers=auth(token))).status_code == status
    assert (await http.put(url, json=to_b)).status_code == 401
    refused = await ask_script(http, station_b, second["card_id"], new_chip(store))
    assert refused.headers["x-bureau-refusal"] == "card-not-for-this-station"

    # Bad input is named; a batch keymgmt never prepared is not found.
    bad = await http.put(url, json={"stations": ["station-b", "b@d"]}, headers=planner)
    assert bad.status_code == 422
    assert "'b@d' is not a station id" in bad.text
    twice = await http.put(url, json={"stations": ["x", "x"]}, headers=planner)
    assert twice.status_code == 422
    assert "station x is named twice" in twice.text
    unknown = await http.put(
        f"/v1/perso/batches/{uuid.uuid4()}/stations", json=to_b, headers=planner
    )
    assert unknown.status_code == 404, unknown.text

    # The planner moves the batch to station-b: announced (revision 2, the operator as actor);
    # the card bound at station-a stays there, the unbound one is now station-b's.
    moved = await http.put(url, json=to_b, headers=planner)
    assert moved.status_code == 200, moved.text
    assert moved.json() == {
        "batch_id": str(batch),
        "stations": ["station-b"],
        "revision": 2,
        "bound_cards": {"station-a": 1},
    }
    [_, announced] = await assignments(settings, 2)
    assert (announced.stations, announced.revision) == (["station-b"], 2)
    assert announced.actor == "operator:olga"
    assert (await ask_script(http, station_a, first["card_id"], chip_a)).status_code == 200
    kept = await ask_script(http, station_b, first["card_id"], chip_a)
    assert kept.headers["x-bureau-refusal"] == "card-at-another-station"
    late = await ask_script(http, station_a, second["card_id"], new_chip(store))
    assert late.status_code == 403
    assert "not to station-a" in late.json()["detail"]
    assert (
        await ask_script(http, station_b, second["card_id"], new_chip(store))
    ).status_code == 200

    # Parked (no station); a card prepared later into the batch keeps the planner's
    # assignment: nobody gets it.
    parked = await http.put(url, json={"stations": []}, headers=planner)
    assert parked.json()["revision"] == 3
    third = await vault(http, unique, issuer)
    await publish(settings, ordered(third, issuer).model_copy(update={"batch_id": batch}))
    await prepared_events(settings, 3)
    for station in (station_a, station_b):
        answer = await ask_script(http, station, third["card_id"], new_chip(store))
        assert answer.status_code == 403
        assert answer.json()["detail"] == "the card's batch is parked: assigned to no station"
    assert await binding(runtime, third["card_id"]) is None
