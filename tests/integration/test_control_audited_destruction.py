"""A card destruction under dual control reaches audit's log, on the real stack (issue 15):
the requester's own confirmation is refused, a second operator's completes it; audit logs
the three steps beside the card.destroyed events, shows them to an auditor with
both people, keeps its reconciliation counts to the cards, and its chain verifies.

fulfillment and audit run in this process on one fresh topic prefix; keymgmt is the HTTP
double of the fulfillment tests.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from services.fulfillment.settings import FulfillmentSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.audit import AUDITOR, control_steps, logged
from tests.support.bus import settled
from tests.support.fulfillment import (
    ISSUER,
    publish,
)

pytestmark = pytest.mark.integration


def failed(card_id: uuid.UUID, batch_id: uuid.UUID) -> events.CardQaFailed:
    return events.CardQaFailed(
        issuer_id=ISSUER,
        actor="qa",
        card_id=card_id,
        batch_id=batch_id,
        chip_serial=f"CS{card_id.hex[:6]}",
        reason="ARQC mismatch",
    )


async def test_a_two_operator_destruction_and_a_refused_confirmation_are_in_audits_log(
    fulfillment_settings: FulfillmentSettings,
    runtime: ServiceRuntime,
    http: httpx.AsyncClient,
    audit: ServiceRuntime,
    api: httpx.AsyncClient,
    unique: str,
) -> None:
    assert fulfillment_settings.topic_prefix == audit.settings.topic_prefix, (
        "one bureau, one prefix"
    )
    batch, cards = uuid.uuid4(), [uuid.uuid4(), uuid.uuid4()]
    await publish(fulfillment_settings, *(("qa", failed(card, batch)) for card in cards))
    await settled(runtime, 2)
    asked = await http.post("/v1/destructions", json={"card_ids": [str(c) for c in cards]})
    assert asked.status_code == 201, asked.text
    request_id = asked.json()["destruction_id"]
    confirm = f"/v1/destructions/{request_id}/confirm"
    same = await http.post(confirm)  # olga, who asked
    assert same.status_code == 403, same.text
    oscar_token = {"Authorization": f"Bearer op2-{unique}"}
    assert (await http.post(confirm, headers=oscar_token)).status_code == 200

    olga, oscar = "operator:olga", "operator:oscar"
    steps = await control_steps(api, 3, act="card-destruction", subject_id=request_id)
    assert [(s["step"], s["outcome"], s["principal"], s["started_by"]) for s in steps] == [
        ("requested", "ok", olga, olga),
        ("confirm", "refused", olga, olga),
        ("confirm", "ok", oscar, olga),
    ]
    assert [s["final"] for s in steps] == [False, False, True]
    assert steps[1]["reason"].startswith("same-principal-twice: ")
    assert {s["subject"] for s in steps} == {"destroy 2 card(s) awaiting destruction"}
    # By principal (who took a step or started its act): olga's refusal; oscar's confirmation.
    by_olga = await control_steps(api, 1, principal=olga, outcome="refused")
    assert [s["seq"] for s in by_olga] == [steps[1]["seq"]]
    by_oscar = await control_steps(api, 1, principal=oscar)
    assert [s["seq"] for s in by_oscar] == [steps[2]["seq"]]
    destroyed = await logged(api, 2, type="card.destroyed", batch_id=str(batch))
    assert {tuple(e["payload"]["witnesses"]) for e in destroyed} == {(olga, oscar)}
    # The steps move no count: the batch's reconciliation knows its two cards, destroyed.
    report = await api.get(f"/v1/batches/{batch}/reconciliation", headers=AUDITOR)
    assert report.status_code == 200, report.text
    assert report.json()["counts"]["destroyed"] == 2
    chain = (await api.get("/v1/log/verify", headers=AUDITOR)).json()
    assert chain["ok"], chain
