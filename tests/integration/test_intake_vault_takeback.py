"""A take-back that cannot reach keymgmt is not lost (issue 16), on the real services: intake on
real Postgres, keymgmt's vault on a fresh SoftHSM token.

An order fails after its card was vaulted (the store's answer is lost) while keymgmt cannot be
reached for the deletion: the forget calls go over real HTTP to a port where nothing listens.
The vault record stays for now, but intake holds a take-back row for it, which its supervised
worker retries (each failure recorded); once keymgmt is back, the worker deletes the record and
the row. A committed order leaves no take-back row and keeps its record.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.keymgmt.settings import KeymgmtSettings
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.keymgmt.contract import VaultForget, VaultForgotten, VaultStored
from shared.keymgmt.errors import KeymgmtUnavailable
from shared.service import ServiceRuntime
from tests.support.bus import wait_for
from tests.support.intake import Intake, card, started_intake

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # released: nothing listens there


class KeymgmtAway:
    """The real vault client; `lose_next_store` loses one store's answer after keymgmt sealed
    the card; while `away`, forget calls go to a port where nothing listens (a real
    connection refused)."""

    def __init__(self, client: KeymgmtClient, token: str) -> None:
        self.client, self.away, self.lose_next_store = client, True, False
        self.nowhere = KeymgmtClient(
            f"http://127.0.0.1:{closed_port()}", token, policy=RetryPolicy(max_attempts=1)
        )
        self.refused = 0

    async def store_cards_json(self, body: bytes) -> VaultStored:
        stored = await self.client.store_cards_json(body)
        if self.lose_next_store:
            self.lose_next_store = False
            raise KeymgmtUnavailable("connection lost after the vault stored the card")
        return stored

    async def forget_cards(self, request: VaultForget) -> VaultForgotten:
        if not self.away:
            return await self.client.forget_cards(request)
        try:
            return await self.nowhere.forget_cards(request)
        except KeymgmtUnavailable:
            self.refused += 1
            raise

    async def aclose(self) -> None:
        await self.nowhere.aclose()
        await self.client.aclose()


@pytest.fixture
async def intake(
    settings: KeymgmtSettings, keymgmt: tuple[Any, httpx.AsyncClient], unique: str
) -> AsyncIterator[tuple[Intake, KeymgmtAway]]:
    made: list[KeymgmtAway] = []

    def wrap(client: KeymgmtClient) -> KeymgmtAway:
        made.append(KeymgmtAway(client, f"in-{unique}"))
        return made[0]

    async with started_intake(settings, keymgmt[1], unique, vault=wrap) as started:
        yield started, made[0]


async def vault_rows(keymgmt: ServiceRuntime, issuer: str) -> int:
    async with keymgmt.engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM vault_cards WHERE issuer_id = :i"), {"i": issuer}
        )
        return int(found.scalar_one())


async def takebacks(intake: Intake) -> list[dict[str, Any]]:
    async with intake.runtime.engine.connect() as conn:
        rows = await conn.execute(text("SELECT attempts, last_error FROM vault_takebacks"))
        return [dict(r) for r in rows.mappings()]


async def test_a_take_back_waits_out_keymgmt_and_deletes_the_orphan(
    intake: tuple[Intake, KeymgmtAway], keymgmt: tuple[ServiceRuntime, httpx.AsyncClient]
) -> None:
    api, vault = intake
    runtime = keymgmt[0]
    vault.away = False
    kept = await api.order("bank-a", "takeback-ok-01", [card(1)])
    assert kept.status_code == 201, kept.text
    assert await takebacks(api) == [], "a committed order leaves no take-back"
    assert await vault_rows(runtime, "bank-a") == 1

    vault.away, vault.lose_next_store = True, True
    failed = await api.order("bank-a", "takeback-lost-01", [card(2)])
    assert failed.status_code == 503, failed.text
    assert (await api.rows("orders"))["orders"] == 1, "the failed order wrote nothing"
    assert await vault_rows(runtime, "bank-a") == 2, "sealed, and keymgmt away for its deletion"

    async def retried() -> bool:  # the request's own try, then the worker's
        rows = await takebacks(api)
        return vault.refused >= 2 and len(rows) == 1 and rows[0]["attempts"] >= 1

    await wait_for(retried, timeout=30)
    [row] = await takebacks(api)
    assert "KeymgmtUnavailable" in row["last_error"]
    assert await vault_rows(runtime, "bank-a") == 2, "not deleted while keymgmt is away"

    vault.away = False

    async def taken_back() -> bool:
        return await takebacks(api) == [] and await vault_rows(runtime, "bank-a") == 1

    await wait_for(taken_back, timeout=90)
    async with runtime.engine.connect() as conn:
        forgets = await conn.execute(
            text("SELECT count(*) FROM vault_access WHERE purpose = 'forget'")
        )
        assert forgets.scalar_one() == 1, "the orphan's deletion is in the vault's access log"
