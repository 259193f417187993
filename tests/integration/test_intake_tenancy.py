"""Tenancy: issuer B gets 404 for every one of issuer A's resources, on every endpoint. The
test walks the app's own route table, so an endpoint added without a probe here fails it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from services.keymgmt.settings import KeymgmtSettings
from tests.support.intake import Intake, card, csv_lines, started_intake

pytestmark = pytest.mark.integration

# Not issuer data: liveness, metrics and the API description are public by design.
PUBLIC = {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/redoc"}
# Bureau-side endpoints: an issuer's token is refused by role before any tenant question.
BUREAU_ONLY = {
    ("POST", "/v1/admin/issuers"),
    ("POST", "/v1/admin/issuers/{issuer_id}/credentials"),
    ("POST", "/v1/admin/issuers/{issuer_id}/products"),
    ("POST", "/v1/stock/receipts"),
    ("GET", "/v1/stock"),
    ("POST", "/v1/stock/returns"),
    ("POST", "/v1/stock/destructions"),
    ("POST", "/v1/stock/destructions/{destruction_id}/confirm"),
    ("GET", "/v1/stock/destructions/{destruction_id}"),
    ("GET", "/v1/planning/batches"),
}


class World:
    """Issuer A's resources, and B's view of them."""

    def __init__(self, intake: Intake, order: dict[str, Any]) -> None:
        self.intake, self.order = intake, order
        self.a, self.b = intake.issuer("bank-a"), intake.issuer("bank-b")

    async def as_b(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return await self.intake.http.request(method, url, headers=self.b, **kw)


Probe = Callable[[World], Awaitable[None]]


async def order_of_a(w: World, method: str, suffix: str, **kw: Any) -> None:
    answer = await w.as_b(method, f"/v1/orders/{w.order['order_id']}{suffix}", **kw)
    assert answer.status_code == 404, answer.text
    mine = await w.intake.http.request("GET", f"/v1/orders/{w.order['order_id']}", headers=w.a)
    assert mine.json()["cards_by_status"] == {"ordered": 2}, "B changed nothing of A's"


async def card_of_a(w: World) -> None:
    answer = await w.as_b("GET", f"/v1/cards/{w.order['cards'][0]['card_id']}")
    assert answer.status_code == 404


async def orders_list(w: World) -> None:
    answer = await w.as_b("GET", "/v1/orders")
    assert answer.status_code == 200
    assert answer.json() == []


async def order_replay_with_a_key(w: World) -> None:
    """B reusing A's Idempotency-Key and body gets its own new order, never A's."""
    body = {"external_ref": "A-1", "product_id": "debit", "cards": [card(1), card(2)]}
    answer = await w.intake.http.post(
        "/v1/orders", json=body, headers={**w.b, "Idempotency-Key": "tenancy-key-1"}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["order_id"] != w.order["order_id"]


async def bulk_replay_with_a_key(w: World) -> None:
    answer = await w.intake.http.post(
        "/v1/orders/bulk",
        params={"product_id": "debit", "external_ref": "A-BULK"},
        content=b"".join(csv_lines(2)),
        headers={**w.b, "Idempotency-Key": "tenancy-key-2", "Content-Type": "text/csv"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["order_id"] != w.order["bulk_order_id"]


async def webhook_read(w: World) -> None:
    assert (await w.as_b("GET", "/v1/webhook")).status_code == 404


async def webhook_delete(w: World) -> None:
    assert (await w.as_b("DELETE", "/v1/webhook")).status_code == 404
    assert (await w.intake.http.get("/v1/webhook", headers=w.a)).json()["url"].endswith("/a")


async def webhook_set(w: World) -> None:
    answer = await w.as_b("PUT", "/v1/webhook", json={"url": "http://127.0.0.1:9/b"})
    assert answer.status_code == 200
    assert (await w.intake.http.get("/v1/webhook", headers=w.a)).json()["url"].endswith("/a")
    assert (await w.as_b("DELETE", "/v1/webhook")).status_code == 204


async def webhook_deliveries(w: World) -> None:
    answer = await w.as_b("GET", "/v1/webhook/deliveries")
    assert answer.status_code == 200
    assert answer.json() == []
    mine = await w.intake.http.get("/v1/webhook/deliveries", headers=w.a)
    assert mine.json(), "A's own deliveries are there"


async def whoami(w: World) -> None:
    """A token speaks for its own issuer only: B's token names B, never A."""
    answer = await w.as_b("GET", "/v1/whoami")
    assert answer.status_code == 200
    assert answer.json() == {"role": "issuer", "issuer_id": "bank-b"}
    mine = await w.intake.http.get("/v1/whoami", headers=w.a)
    assert mine.json()["issuer_id"] == "bank-a"


PROBES: dict[tuple[str, str], Probe] = {
    ("GET", "/v1/orders/{order_id}"): lambda w: order_of_a(w, "GET", ""),
    ("GET", "/v1/orders/{order_id}/cards"): lambda w: order_of_a(w, "GET", "/cards"),
    ("GET", "/v1/orders/{order_id}/events"): lambda w: order_of_a(w, "GET", "/events"),
    ("POST", "/v1/orders/{order_id}/cancellations"): lambda w: order_of_a(
        w, "POST", "/cancellations", json={"reason": "not mine"}
    ),
    ("GET", "/v1/cards/{card_id}"): card_of_a,
    ("GET", "/v1/orders"): orders_list,
    ("POST", "/v1/orders"): order_replay_with_a_key,
    ("POST", "/v1/orders/bulk"): bulk_replay_with_a_key,
    ("GET", "/v1/webhook"): webhook_read,
    ("PUT", "/v1/webhook"): webhook_set,
    ("DELETE", "/v1/webhook"): webhook_delete,
    ("GET", "/v1/webhook/deliveries"): webhook_deliveries,
    ("GET", "/v1/whoami"): whoami,
}


@pytest.fixture
async def world(
    settings: KeymgmtSettings,
    keymgmt: tuple[Any, httpx.AsyncClient],
    unique: str,
) -> AsyncIterator[World]:
    # The receiver's loopback network, allowed as an operator would allow a private link.
    async with started_intake(
        settings, keymgmt[1], unique, webhook_allowed_networks="127.0.0.1/32"
    ) as intake:
        a = intake.issuer("bank-a")
        hook = await intake.http.put("/v1/webhook", json={"url": "http://127.0.0.1:9/a"}, headers=a)
        assert hook.status_code == 200
        answer = await intake.order("bank-a", "tenancy-key-1", [card(1), card(2)])
        assert answer.status_code == 201, answer.text
        order = answer.json()
        bulk = await intake.http.post(
            "/v1/orders/bulk",
            params={"product_id": "debit", "external_ref": "A-BULK"},
            content=b"".join(csv_lines(2)),
            headers={**a, "Idempotency-Key": "tenancy-key-2", "Content-Type": "text/csv"},
        )
        assert bulk.status_code == 201, bulk.text
        order["bulk_order_id"] = bulk.json()["order_id"]
        yield World(intake, order)


def routes(app: Any) -> set[tuple[str, str]]:
    """Every operation the app serves, from its OpenAPI document (FastAPI keeps included
    routers behind private wrappers; the document lists them all). Top-level routes hidden
    from the document are taken from the route table, so hiding one does not escape."""
    found = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    for route in app.routes:
        if isinstance(route, APIRoute):
            found |= {(method, route.path) for method in route.methods or ()}
    return {(method, path) for method, path in found if path not in PUBLIC}


async def test_every_endpoint_is_probed_and_issuer_b_never_reaches_a(world: World) -> None:
    table = routes(world.intake.app)
    unprobed = table - set(PROBES) - BUREAU_ONLY
    assert not unprobed, f"endpoints without a tenancy probe: {sorted(unprobed)}"
    assert not (set(PROBES) | BUREAU_ONLY) - table, "probes for endpoints that are gone"
    for key in sorted(PROBES):
        await PROBES[key](world)
    for method, path in sorted(BUREAU_ONLY):
        url = path.replace("{issuer_id}", "bank-a").replace("{destruction_id}", str(uuid.uuid4()))
        answer = await world.as_b(method, url, json={})
        assert answer.status_code == 403, (method, path, answer.text)
    unknown = await world.as_b("GET", f"/v1/orders/{uuid.uuid4()}")
    assert unknown.status_code == 404, "an unknown id and another issuer's look the same"
