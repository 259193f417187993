"""Blank stock on the real stack: an order issues blanks to its batch, an order the vault
cannot cover is refused, unused blanks return from a batch, blanks are destroyed under dual
control (one operator asks, a second confirms), counts per product add up, each movement is
an event; and accepted orders are planned into production runs by product and priority."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.keymgmt.settings import KeymgmtSettings
from shared import events
from tests.support.bus import collect
from tests.support.intake import Intake, card, started_intake

pytestmark = pytest.mark.integration


@pytest.fixture
async def intake(
    settings: KeymgmtSettings,
    keymgmt: tuple[Any, httpx.AsyncClient],
    unique: str,
) -> AsyncIterator[Intake]:
    async with started_intake(settings, keymgmt[1], unique, stock=10) as started:
        yield started


async def levels(intake: Intake, issuer: str) -> dict[str, Any]:
    rows = (await intake.http.get("/v1/stock", headers=intake.operator)).json()
    level: dict[str, Any] = next(r for r in rows if r["issuer_id"] == issuer)
    return level


async def test_blank_stock_moves_are_counted_refused_when_short_and_emitted(
    intake: Intake,
) -> None:
    first = (await intake.order("bank-a", "stock-key-1", [card(n) for n in range(4)])).json()
    urgent_body = {"external_ref": "urgent", "product_id": "debit", "cards": [card(9)]}
    assert (
        await intake.order("bank-a", "stock-key-2", [card(n) for n in range(10, 17)])
    ).status_code == 409
    returns = {"issuer_id": "bank-a", "product_id": "debit", "batch_id": first["batch_id"]}
    too_many = await intake.http.post(
        "/v1/stock/returns", json=returns | {"quantity": 5}, headers=intake.operator
    )
    assert too_many.status_code == 409
    assert "holds 4" in too_many.text
    back = await intake.http.post(
        "/v1/stock/returns", json=returns | {"quantity": 1}, headers=intake.operator
    )
    assert back.status_code == 201, back.text
    destruction = {"issuer_id": "bank-a", "product_id": "debit", "reason": "water damage"}
    typed_names = await intake.http.post(
        "/v1/stock/destructions",
        json=destruction | {"quantity": 2, "witnesses": ["olga", "ann"]},
        headers=intake.operator,
    )
    assert typed_names.status_code == 422  # witnesses are tokens now, not typed names
    asked = await intake.http.post(
        "/v1/stock/destructions", json=destruction | {"quantity": 2}, headers=intake.operator
    )
    assert asked.status_code == 201, asked.text
    assert asked.json()["requested_by"] == "operator:olga"
    confirm = f"/v1/stock/destructions/{asked.json()['destruction_id']}/confirm"
    # The attack: the requester confirms their own request. Refused, kept, no stock moves.
    same = await intake.http.post(confirm, headers=intake.operator)
    assert same.status_code == 403, same.text
    assert same.headers["X-Bureau-Refusal"] == "same-principal-twice"
    assert (await levels(intake, "bank-a"))["destroyed"] == 0
    destroyed = await intake.http.post(confirm, headers=intake.second_operator)
    assert destroyed.status_code == 200, destroyed.text
    assert destroyed.json()["witnesses"] == ["operator:olga", "operator:oscar"]
    again = await intake.http.post(confirm, headers=intake.second_operator)
    assert again.status_code == 409  # confirmed once only
    record = (await intake.http.get(confirm[: -len("/confirm")], headers=intake.operator)).json()
    assert (record["state"], record["confirmed_by"]) == ("confirmed", "operator:oscar")
    assert [r["refused_principal"] for r in record["refusals"]] == ["operator:olga"]
    assert await levels(intake, "bank-a") == {
        "issuer_id": "bank-a",
        "product_id": "debit",
        "received": 10,
        "issued": 4,
        "returned": 1,
        "destroyed": 2,
        "on_hand": 5,
    }
    assert (
        await intake.order("bank-a", "stock-key-3", [card(n) for n in range(20, 26)])
    ).status_code == 409

    answer = await intake.http.post(
        "/v1/orders",
        json=urgent_body,
        headers=intake.issuer("bank-a", **{"Idempotency-Key": "stock-key-4"}),
    )
    assert answer.status_code == 201
    plan = await intake.http.get(
        "/v1/planning/batches", params={"max_cards": 4}, headers=intake.operator
    )
    assert plan.status_code == 200
    runs = [(r["issuer_id"], r["card_count"], len(r["orders"])) for r in plan.json()]
    assert runs == [("bank-a", 4, 1), ("bank-a", 1, 1)]

    emitted = await collect(
        intake.settings.kafka_bootstrap,
        intake.settings.topic("intake"),
        lambda seen: any(b'"stock.destroyed"' in r.value for r in seen),
    )
    moves = [events.decode_event(r.value) for r in emitted]
    assert [e.quantity for e in moves if isinstance(e, events.StockReturned)] == [1]
    gone = [e for e in moves if isinstance(e, events.StockDestroyed)]
    assert [(e.quantity, e.witnesses, e.actor) for e in gone] == [
        (2, ("operator:olga", "operator:oscar"), "operator:oscar")
    ]
