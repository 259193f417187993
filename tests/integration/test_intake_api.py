"""intake on real Postgres and Kafka, its vault calls answered by the real keymgmt app (in this
process, on a fresh SoftHSM token): orders all-or-nothing, idempotent, tenant-scoped, and bad
input refused with a clear 4xx that leaves nothing half-written."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.intake.app import bootstrap, build_app
from services.intake.settings import IntakeSettings
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from tests.conftest import running
from tests.support.bus import collect

pytestmark = pytest.mark.integration

ADDRESS = {"lines": ["1 Rue Royale"], "postcode": "1000", "city": "Brussels", "country": "BE"}
PANS = ["4761739001010010", "4761739001010028", "4761739001010036"]


def card(pan: str, **overrides: Any) -> dict[str, Any]:
    return {
        "pan": pan,
        "psn": "00",
        "expiry": "3011",
        "cardholder_name": "ADA LOVELACE",
        "address": ADDRESS,
    } | overrides


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Intake:
    def __init__(self, http: httpx.AsyncClient, runtime: Any, config: IntakeSettings) -> None:
        self.http, self.runtime, self.settings = http, runtime, config
        self.tokens: dict[str, str] = {}

    async def counts(self) -> dict[str, int]:
        """Rows of intake's state, and every event it ever queued, read once the relay has
        drained the outbox (so a row is never counted both queued and published)."""
        for _ in range(100):
            async with self.runtime.engine.connect() as conn:
                found = {
                    table: int(
                        (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                    )
                    for table in ("orders", "cards", "stock_movements", "outbox")
                }
            if found.pop("outbox") == 0:
                return found | {"events": self.runtime.relay.published}
            await asyncio.sleep(0.05)
        raise AssertionError("the outbox did not drain")

    async def order(self, issuer: str, key: str, body: Any) -> httpx.Response:
        return await self.http.post(
            "/v1/orders", json=body, headers={**bearer(self.tokens[issuer]), "Idempotency-Key": key}
        )


@pytest.fixture
async def intake(
    settings: KeymgmtSettings,
    keymgmt: tuple[Any, httpx.AsyncClient],
    unique: str,
) -> AsyncIterator[Intake]:
    _, keymgmt_http = keymgmt
    intake_settings = IntakeSettings(
        environment="test",
        topic_prefix=settings.topic_prefix,
        service_tokens=settings.service_tokens,
        principals=f"admin:root=adm-{unique},operator:olga=op-{unique}",
        keymgmt_url="http://keymgmt",
    )
    vault = KeymgmtClient("http://keymgmt", f"in-{unique}", http=keymgmt_http)
    runtime = bootstrap(intake_settings, schema=f"intake_{unique}", vault=vault)
    app = build_app(runtime)
    async with running(runtime):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
            client = Intake(http, runtime, intake_settings)
            admin, operator = bearer(f"adm-{unique}"), bearer(f"op-{unique}")
            for issuer in ("bank-a", "bank-b"):
                assert (
                    await http.post(
                        "/v1/admin/issuers",
                        headers=admin,
                        json={"issuer_id": issuer, "name": issuer},
                    )
                ).status_code == 201
                assert (
                    await http.post(
                        f"/v1/admin/issuers/{issuer}/products",
                        headers=admin,
                        json={"product_id": "debit", "name": "Debit", "kind": "emv"},
                    )
                ).status_code == 201
                answer = await http.post(f"/v1/admin/issuers/{issuer}/credentials", headers=admin)
                client.tokens[issuer] = answer.json()["token"]
                assert (
                    await http.post(
                        "/v1/stock/receipts",
                        headers=operator,
                        json={
                            "issuer_id": issuer,
                            "product_id": "debit",
                            "lot_id": f"L-{issuer}",
                            "quantity": 5,
                        },
                    )
                ).status_code == 201
            yield client


async def test_an_order_is_accepted_once_and_its_events_carry_no_pan(
    intake: Intake,
    settings: KeymgmtSettings,
) -> None:
    body = {"external_ref": "A-1", "product_id": "debit", "cards": [card(p) for p in PANS]}
    first = await intake.order("bank-a", "key-00000001", body)
    assert first.status_code == 201, first.text
    order = first.json()
    assert [c["masked_pan"] for c in order["cards"]][0] == "476173******0010"

    replay = await intake.order("bank-a", "key-00000001", body)
    assert replay.status_code == 200
    assert replay.json()["order_id"] == order["order_id"]
    other_body = await intake.order("bank-a", "key-00000001", {**body, "external_ref": "A-2"})
    assert other_body.status_code == 409
    assert (await intake.counts())["orders"] == 1

    records = await collect(
        settings.kafka_bootstrap, settings.topic("intake"), lambda seen: len(seen) >= 7
    )
    types = sorted(events.decode_event(r.value).type for r in records)
    assert types == sorted(
        ["card.ordered"] * 3
        + ["order.accepted", "order.received", "stock.issued"]
        + ["stock.received"] * 2
    )
    assert not [p for p in PANS if any(p.encode() in r.value for r in records)]
    rows: list[str] = []
    async with intake.runtime.engine.connect() as conn:
        for table in ("orders", "cards", "stock_movements", "outbox", "inbox"):
            rows += [str(row) for row in (await conn.execute(text(f"SELECT * FROM {table}")))]
    dump = "\n".join(rows)
    assert "476173******0010" in dump
    assert not [p for p in PANS if p in dump]


async def test_issuer_b_sees_none_of_issuer_a_orders(intake: Intake) -> None:
    body = {"external_ref": "A-1", "product_id": "debit", "cards": [card(PANS[0])]}
    order = (await intake.order("bank-a", "key-00000002", body)).json()
    own = await intake.http.get(
        f"/v1/orders/{order['order_id']}", headers=bearer(intake.tokens["bank-a"])
    )
    assert own.status_code == 200
    foreign = await intake.http.get(
        f"/v1/orders/{order['order_id']}", headers=bearer(intake.tokens["bank-b"])
    )
    assert foreign.status_code == 404
    # bank-b cannot order bank-a's product either: it does not exist for bank-b's tenant
    assert (
        await intake.order("bank-b", "key-00000003", {**body, "product_id": "nope"})
    ).status_code == 404


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("malformed-json", 422),
        ("unknown-product", 404),
        ("bad-credentials", 401),
        ("no-credentials", 401),
        ("bad-lines", 422),
        ("not-enough-stock", 409),
        ("missing-idempotency-key", 422),
    ],
)
async def test_bad_input_gets_a_clear_4xx_and_writes_nothing(
    intake: Intake, case: str, expected: int
) -> None:
    before = await intake.counts()
    good = {"external_ref": "A-1", "product_id": "debit", "cards": [card(PANS[0])]}
    headers = {**bearer(intake.tokens["bank-a"]), "Idempotency-Key": f"k-{uuid.uuid4()}"}
    kwargs: dict[str, Any] = {"json": good}
    if case == "malformed-json":
        kwargs = {
            "content": b'{"external_ref": "A-1", "cards": [',
            "headers": {**headers, "content-type": "application/json"},
        }
    elif case == "unknown-product":
        kwargs["json"] = {**good, "product_id": "platinum"}
    elif case == "bad-credentials":
        headers = {**headers, **bearer("iss_not-a-real-token")}
    elif case == "no-credentials":
        headers = {"Idempotency-Key": "k-12345678"}
    elif case == "bad-lines":
        kwargs["json"] = {
            **good,
            "cards": [
                card(PANS[0]),
                card("4761739001010011"),
                card(PANS[1], expiry="2001", cardholder_name="Zoë"),
            ],
        }
    elif case == "not-enough-stock":  # 5 blanks on hand, 6 cards asked for
        kwargs["json"] = {**good, "cards": [card(p, psn=f"0{i}") for i in (1, 2) for p in PANS]}
    elif case == "missing-idempotency-key":
        headers = bearer(intake.tokens["bank-a"])
    kwargs.setdefault("headers", headers)
    answer = await intake.http.post("/v1/orders", **kwargs)
    assert answer.status_code == expected, answer.text
    detail = answer.json()["detail"]
    assert detail, "the error says what is wrong"
    assert PANS[0] not in answer.text
    assert "4761739001010011" not in answer.text
    if case == "bad-lines":
        lines = {(e["line"], e["field"]) for e in detail["errors"]}
        assert lines == {(2, "pan"), (3, "expiry"), (3, "cardholder_name")}
    assert await intake.counts() == before


async def test_vault_unavailable_means_503_and_nothing_written(intake: Intake, unique: str) -> None:
    before = await intake.counts()
    dead = KeymgmtClient("http://127.0.0.1:9", f"in-{unique}", policy=RetryPolicy.once())
    runtime = bootstrap(intake.settings, schema=intake.runtime.schema, vault=dead)
    app = build_app(runtime)
    async with running(runtime):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
            answer = await http.post(
                "/v1/orders",
                json={"external_ref": "A-9", "product_id": "debit", "cards": [card(PANS[2])]},
                headers={**bearer(intake.tokens["bank-a"]), "Idempotency-Key": "key-vault-down"},
            )
    assert answer.status_code == 503
    assert "vault" in answer.json()["detail"]
    assert await intake.counts() == before
