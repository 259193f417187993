"""The fulfillment service on the real stack: packing, destruction under dual control (two
operators, each with their own token), and dispatch only after audit reconciles the batch, in
consignments of a bounded size; no PAN and no address leave in events or manifests.

keymgmt is another process: the KeymgmtDouble of the graphical tests serves it over HTTP.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.fulfillment.settings import FulfillmentSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.bus import collect, settled
from tests.support.fulfillment import (
    ISSUER,
    count_of,
    emitted,
    passed,
    publish,
)
from tests.support.graphical import CLEAR_PAN, KeymgmtDouble

pytestmark = pytest.mark.integration


@pytest.fixture
def fulfillment_settings(fulfillment_settings: FulfillmentSettings) -> FulfillmentSettings:
    """Consignments of two cards: a batch of more ships as several (issue 17's 100,000-card
    batch as 50); every test here has at most two cards a shipment otherwise."""
    return fulfillment_settings.model_copy(update={"fulfillment_shipment_max_cards": 2})


async def test_batch_is_packed_rejects_destroyed_by_two_operators_and_dispatched_after_audit(
    fulfillment_settings: FulfillmentSettings,
    runtime: ServiceRuntime,
    http: httpx.AsyncClient,
    fulfillment_keymgmt: KeymgmtDouble,
    unique: str,
) -> None:
    batch = uuid.uuid4()
    a, b = fulfillment_keymgmt.add_card(ISSUER), fulfillment_keymgmt.add_card(ISSUER)
    c, d, e = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    passed_a = passed(a, batch)
    rejects: list[tuple[str, events.Event]] = [
        (
            "qa",
            events.CardQaFailed(
                issuer_id=ISSUER,
                actor="qa",
                card_id=c,
                batch_id=batch,
                chip_serial="CSc",
                reason="ARQC mismatch",
            ),
        ),
        (
            "graphical",
            events.CardSpoiled(
                issuer_id=ISSUER,
                actor="graphical",
                card_id=d,
                batch_id=batch,
                stage="graphical",
                reason="smudge",
            ),
        ),
        (
            "electrical",
            events.CardSpoiled(
                issuer_id=ISSUER,
                actor="station-a",
                card_id=e,
                batch_id=batch,
                stage="electrical",
                reason="6A80",
            ),
        ),
    ]
    await publish(
        fulfillment_settings, ("qa", passed_a), ("qa", passed(b, batch)), ("qa", passed_a), *rejects
    )
    await settled(runtime, 6)
    packed = await emitted(fulfillment_settings, count_of("card.packed", 2))
    assert sorted(p.card_id for p in packed if isinstance(p, events.CardPacked)) == sorted([a, b])
    assert fulfillment_keymgmt.calls["mailing"] == 2

    view = (await http.get(f"/v1/batches/{batch}")).json()
    assert sorted(view["packed"]) == sorted([str(a), str(b)])
    assert sorted(view["awaiting_destruction"]) == sorted([str(c), str(d), str(e)])
    assert view["dispatched"] == []
    assert view["release"] == "awaiting reconciliation"
    assert not fulfillment_settings.manifest_dir.exists() or not any(
        fulfillment_settings.manifest_dir.iterdir()
    )

    async def ask(cards: list[uuid.UUID], **kw: Any) -> httpx.Response:
        return await http.post("/v1/destructions", json={"card_ids": [str(x) for x in cards]}, **kw)

    olga, oscar = "operator:olga", "operator:oscar"
    oscar_token = {"Authorization": f"Bearer op2-{unique}"}
    # Typed witness names are gone: the body names the cards only.
    old_body = {"card_ids": [str(c)], "witnesses": ["ann", "bob"]}
    assert (await http.post("/v1/destructions", json=old_body)).status_code == 422
    assert (await ask([c, a])).status_code == 409  # a is packed: nothing is requested
    auditor = {"Authorization": f"Bearer aud-{unique}"}
    assert (await ask([c], headers=auditor)).status_code == 403
    asked = await ask([c, d])
    assert asked.status_code == 201, asked.text
    request = asked.json()
    assert (request["state"], request["requested_by"]) == ("pending", olga)
    confirm = f"/v1/destructions/{request['destruction_id']}/confirm"
    # The attack: the requester confirms their own request. Refused, kept, nothing destroyed.
    same = await http.post(confirm)
    assert same.status_code == 403, same.text
    assert same.headers["X-Bureau-Refusal"] == "same-principal-twice"
    assert "two different people" in same.text
    assert (await http.post(confirm, headers=auditor)).status_code == 403
    view = (await http.get(f"/v1/batches/{batch}")).json()
    assert sorted(view["awaiting_destruction"]) == sorted([str(c), str(d), str(e)])
    done = await http.post(confirm, headers=oscar_token)
    assert done.status_code == 200, done.text
    assert done.json()["witnesses"] == [olga, oscar]
    assert (await http.post(confirm, headers=oscar_token)).status_code == 409  # once only
    assert (await ask([c])).status_code == 409  # already destroyed
    record = (await http.get(f"/v1/destructions/{request['destruction_id']}")).json()
    assert (record["state"], record["requested_by"], record["confirmed_by"]) == (
        "confirmed",
        olga,
        oscar,
    )
    assert [r["refused_principal"] for r in record["refusals"]] == [olga]

    await publish(
        fulfillment_settings,
        (
            "audit",
            events.BatchReconciled(
                issuer_id=ISSUER, actor="audit", batch_id=batch, counts={"in": 5, "good": 2}
            ),
        ),
    )
    out = await emitted(fulfillment_settings, count_of("shipment.dispatched", 1))
    assert Counter(x.type for x in out) == Counter(
        {"card.packed": 2, "card.destroyed": 2, "shipment.dispatched": 1, "control.recorded": 3}
    )
    # Each step of the destruction went to audit's log: asked, refused (olga twice), confirmed.
    steps = [x for x in out if isinstance(x, events.ControlRecorded)]
    assert sorted((x.step, x.outcome, x.principal, x.started_by) for x in steps) == [
        ("confirm", "ok", oscar, olga),
        ("confirm", "refused", olga, olga),
        ("requested", "ok", olga, olga),
    ]
    destroyed = [x for x in out if isinstance(x, events.CardDestroyed)]
    assert sorted(x.card_id for x in destroyed) == sorted([c, d])
    assert {(x.witnesses, x.actor) for x in destroyed} == {((olga, oscar), oscar)}
    (shipment,) = [x for x in out if isinstance(x, events.ShipmentDispatched)]
    assert sorted(shipment.card_ids) == sorted([a, b])
    assert (shipment.kind, shipment.courier) == ("cards", "swift-post")
    manifest = fulfillment_settings.manifest_dir / f"{shipment.shipment_id}.json"
    assert manifest.exists()
    assert (fulfillment_settings.manifest_dir / f"{shipment.shipment_id}.csv").exists()
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == shipment.manifest_sha256
    assert {i["card_id"] for i in json.loads(manifest.read_bytes())["items"]} == {str(a), str(b)}

    view = (await http.get(f"/v1/batches/{batch}")).json()
    assert sorted(view["dispatched"]) == sorted([str(a), str(b)])
    assert sorted(view["destroyed"]) == sorted([str(c), str(d)])
    assert view["awaiting_destruction"] == [str(e)]
    assert view["release"] == "reconciled"

    everything = b"".join(events.encode_event(x) for x in out)
    everything += b"".join(p.read_bytes() for p in fulfillment_settings.manifest_dir.iterdir())
    for secret in (CLEAR_PAN, "1 Test Street", "T1 1ST", "Jane Q Public"):
        assert secret.encode() not in everything
    async with runtime.engine.connect() as conn:
        kept = await conn.execute(
            text(f"SELECT count(*) FROM {runtime.schema}.carriers WHERE address IS NOT NULL")
        )
        assert kept.scalar_one() == 0  # addresses purged once the shipment left


async def test_held_batch_ships_nothing_and_a_late_card_ships_on_its_own(
    fulfillment_settings: FulfillmentSettings,
    runtime: ServiceRuntime,
    fulfillment_keymgmt: KeymgmtDouble,
) -> None:
    batch = uuid.uuid4()
    first, late = fulfillment_keymgmt.add_card(ISSUER), fulfillment_keymgmt.add_card(ISSUER)
    discrepancy = events.BatchDiscrepancy(
        issuer_id=ISSUER,
        actor="audit",
        batch_id=batch,
        counts={"in": 2},
        missing={"qa": [late]},
        problems=["1 card not accounted for at qa"],
    )
    await publish(fulfillment_settings, ("qa", passed(first, batch)), ("audit", discrepancy))
    await settled(runtime, 2)
    out = await emitted(fulfillment_settings, count_of("card.packed", 1))
    assert [x.type for x in out] == ["card.packed"]
    assert not fulfillment_settings.manifest_dir.exists() or not any(
        fulfillment_settings.manifest_dir.iterdir()
    )

    reconciled = events.BatchReconciled(
        issuer_id=ISSUER, actor="audit", batch_id=batch, counts={"in": 2}
    )
    await publish(fulfillment_settings, ("audit", reconciled))
    out = await emitted(fulfillment_settings, count_of("shipment.dispatched", 1))
    await publish(fulfillment_settings, ("qa", passed(late, batch)))
    out = await emitted(fulfillment_settings, count_of("shipment.dispatched", 2))
    shipments = [x for x in out if isinstance(x, events.ShipmentDispatched)]
    assert [s.card_ids for s in shipments] == [[first], [late]]
    assert shipments[0].shipment_id != shipments[1].shipment_id


async def test_a_card_keymgmt_does_not_know_is_dead_lettered_not_packed(
    fulfillment_settings: FulfillmentSettings, runtime: ServiceRuntime
) -> None:
    await publish(fulfillment_settings, ("qa", passed(uuid.uuid4(), uuid.uuid4())))
    dead = await collect(
        fulfillment_settings.kafka_bootstrap,
        fulfillment_settings.topic("dlq"),
        lambda seen: len(seen) >= 1,
    )
    assert dict(dead[0].headers)["dlq.reason"].decode().startswith("poison: keymgmt holds no")
    out = await emitted(fulfillment_settings, lambda seen: len(seen) >= 1)
    assert [x.type for x in out] == ["dead_letter.recorded"]


def card_shipments(n: int) -> Callable[[list[events.Event]], bool]:
    def enough(seen: list[events.Event]) -> bool:
        kinds = [x.kind for x in seen if isinstance(x, events.ShipmentDispatched)]
        return kinds.count("cards") >= n

    return enough


async def test_a_batch_ships_in_consignments_of_the_configured_size(
    fulfillment_settings: FulfillmentSettings,
    runtime: ServiceRuntime,
    fulfillment_keymgmt: KeymgmtDouble,
) -> None:
    batch = uuid.uuid4()
    cards = [fulfillment_keymgmt.add_card(ISSUER) for _ in range(5)]
    await publish(fulfillment_settings, *(("qa", passed(card, batch)) for card in cards))
    await settled(runtime, len(cards))
    await emitted(fulfillment_settings, count_of("card.packed", len(cards)))
    reconciled = events.BatchReconciled(
        issuer_id=ISSUER, actor="audit", batch_id=batch, counts={"in": len(cards)}
    )
    await publish(fulfillment_settings, ("audit", reconciled))
    out = await emitted(fulfillment_settings, card_shipments(3))
    shipments = [x for x in out if isinstance(x, events.ShipmentDispatched)]
    of_cards = [s for s in shipments if s.kind == "cards"]
    assert sorted(len(s.card_ids) for s in of_cards) == [1, 2, 2]
    shipped = Counter(card for s in of_cards for card in s.card_ids)
    assert shipped == Counter(cards)  # every card once
    assert len({s.shipment_id for s in shipments}) == len(shipments)
    for shipment in of_cards:
        manifest = fulfillment_settings.manifest_dir / f"{shipment.shipment_id}.json"
        assert manifest.exists()
    mailers = [s for s in shipments if s.kind == "pin_mailers"]
    mailed = Counter(card for s in mailers for card in s.card_ids)
    assert all(n == 1 for n in mailed.values())
    assert set(mailed) <= set(cards)
