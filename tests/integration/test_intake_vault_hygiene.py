"""A refused or failed order leaves nothing in the vault, on the real services: intake on real
Postgres, keymgmt's vault on a fresh SoftHSM token. Refusals (stock, idempotency, bad cards)
come before the vault is called; a failure after vaulting (the vault lost half-way through a
bulk file, so its first chunk is already sealed) takes every record back out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.keymgmt.settings import KeymgmtSettings
from shared.keymgmt.client import KeymgmtClient
from shared.keymgmt.contract import VaultForget, VaultForgotten, VaultStored
from shared.keymgmt.errors import KeymgmtUnavailable
from shared.service import ServiceRuntime
from tests.support.intake import Intake, card, chunked, csv_lines, started_intake

pytestmark = pytest.mark.integration


class LostAfter:
    """The real vault client, its connection lost after `calls` store calls succeeded."""

    def __init__(self, client: KeymgmtClient, calls: int) -> None:
        self.client, self.left = client, calls

    async def store_cards_json(self, body: bytes) -> VaultStored:
        if self.left == 0:
            stored = await self.client.store_cards_json(body)  # sealed, then the answer is lost
            raise KeymgmtUnavailable(f"connection lost after storing {len(stored.cards)} cards")
        self.left -= 1
        return await self.client.store_cards_json(body)

    async def forget_cards(self, request: VaultForget) -> VaultForgotten:
        return await self.client.forget_cards(request)

    async def aclose(self) -> None:
        await self.client.aclose()


async def vault_rows(keymgmt: ServiceRuntime, issuer: str) -> int:
    async with keymgmt.engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM vault_cards WHERE issuer_id = :i"), {"i": issuer}
        )
        return int(found.scalar_one())


@pytest.fixture
async def intake(
    settings: KeymgmtSettings, keymgmt: tuple[Any, httpx.AsyncClient], unique: str
) -> AsyncIterator[Intake]:
    async with started_intake(
        settings, keymgmt[1], unique, stock=5, vault=lambda c: LostAfter(c, 1), bulk_chunk=3
    ) as started:
        yield started


async def test_refused_orders_never_reach_the_vault(
    intake: Intake, keymgmt: tuple[ServiceRuntime, httpx.AsyncClient]
) -> None:
    runtime = keymgmt[0]
    short = await intake.order("bank-a", "hyg-key-01", [card(n) for n in range(6)])
    assert short.status_code == 409, short.text  # 5 blanks on hand
    bad = await intake.order("bank-a", "hyg-key-02", [card(0, cardholder_name="A")])
    assert bad.status_code == 422
    assert await vault_rows(runtime, "bank-a") == 0
    first = await intake.order("bank-a", "hyg-key-03", [card(1)])
    assert first.status_code == 201, first.text
    other_body = await intake.order("bank-a", "hyg-key-03", [card(2)])
    assert other_body.status_code == 409
    assert await vault_rows(runtime, "bank-a") == 1, "only the accepted order's card"


async def test_a_failure_after_vaulting_takes_every_record_back(
    intake: Intake, keymgmt: tuple[ServiceRuntime, httpx.AsyncClient]
) -> None:
    runtime = keymgmt[0]
    headers = intake.issuer(
        "bank-b", **{"Idempotency-Key": "hyg-bulk-1", "Content-Type": "text/csv"}
    )
    answer = await intake.http.post(
        "/v1/orders/bulk?product_id=debit&external_ref=hyg-bulk",
        content=chunked(csv_lines(5)),
        headers=headers,
    )
    assert answer.status_code == 503, answer.text  # chunk 1 stored, chunk 2's answer lost
    assert await vault_rows(runtime, "bank-b") == 0
    assert (await intake.rows("orders", "cards")) == {"orders": 0, "cards": 0}
    async with runtime.engine.connect() as conn:
        forgets = await conn.execute(
            text("SELECT count(*) FROM vault_access WHERE purpose = 'forget'")
        )
        assert forgets.scalar_one() == 5, "each deletion is in the vault's access log"
