"""Webhook SSRF attacks on the real intake (real Postgres, real sockets): loopback, the cloud
metadata address, internal service names are refused when set (422 naming the url); a name
that rebinds to loopback after it was checked is never connected to; and what the issuer
reads of a failed delivery says nothing of what listens where."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.intake.webhook_targets import IpAddress
from services.intake.webhooks import NO_ANSWER
from services.keymgmt.settings import KeymgmtSettings
from tests.support.intake import Intake, card, started_intake

pytestmark = pytest.mark.integration


class Listener:
    """A real TCP listener on loopback that counts connections (and answers none of them)."""

    def __init__(self) -> None:
        self.connections = 0

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def __aexit__(self, *_: object) -> None:
        self.server.close()
        await self.server.wait_closed()


class Rebinding:
    """DNS for 'issuer.example': a public address while the URL is set, loopback after."""

    def __init__(self) -> None:
        self.answers = ["93.184.215.14"]

    async def __call__(self, host: str, port: int) -> list[IpAddress]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [ipaddress.ip_address(answer)]


@pytest.fixture
def dns() -> Rebinding:
    return Rebinding()


@pytest.fixture
async def intake(
    settings: KeymgmtSettings,
    keymgmt: tuple[Any, httpx.AsyncClient],
    unique: str,
    dns: Rebinding,
) -> AsyncIterator[Intake]:
    async with started_intake(
        settings,
        keymgmt[1],
        unique,
        resolver=dns,
        webhook_poll_interval=0.05,
        webhook_backoff_base=0.05,
    ) as started:
        yield started


async def deliveries(intake: Intake, issuer: str, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        found: list[dict[str, Any]] = (
            await intake.http.get("/v1/webhook/deliveries", headers=intake.issuer(issuer))
        ).json()
        if len(found) >= count and all(d["attempts"] >= 1 for d in found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("no delivery attempt was recorded")


async def test_internal_targets_are_refused_when_set(intake: Intake) -> None:
    async with Listener() as listener:
        for url in (
            f"http://127.0.0.1:{listener.port}/hook",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://[::1]:8101/",
            "http://localhost:8102/v1/vault/cards",
            "http://keymgmt:8102/",
            "http://kafka.bureau.svc.cluster.local:9092/",
        ):
            answer = await intake.http.put(
                "/v1/webhook", json={"url": url}, headers=intake.issuer("bank-a")
            )
            assert answer.status_code == 422, (url, answer.text)
            assert answer.json()["detail"]["field"] == "url"
        assert listener.connections == 0
    missing = await intake.http.get("/v1/webhook", headers=intake.issuer("bank-a"))
    assert missing.status_code == 404, "nothing was stored"


async def test_a_name_rebound_to_loopback_is_never_connected_to(
    intake: Intake, dns: Rebinding
) -> None:
    async with Listener() as listener:
        dns.answers = ["93.184.215.14", "127.0.0.1"]  # checked public, then rebound
        hook = await intake.http.put(
            "/v1/webhook",
            json={"url": f"http://issuer.example:{listener.port}/hook"},
            headers=intake.issuer("bank-a"),
        )
        assert hook.status_code == 200, hook.text
        assert (await intake.order("bank-a", "ssrf-key-1", [card(1)])).status_code == 201
        [failed] = await deliveries(intake, "bank-a", 1)
        assert "does not call" in failed["last_error"]
        assert listener.connections == 0


async def test_closed_open_and_silent_ports_look_the_same_to_the_issuer(
    settings: KeymgmtSettings, keymgmt: tuple[Any, httpx.AsyncClient], unique: str
) -> None:
    async with (
        Listener() as listener,
        started_intake(
            settings,
            keymgmt[1],
            unique,
            webhook_allowed_networks="127.0.0.1/32",  # as an operator allows a private link
            webhook_poll_interval=0.05,
            webhook_max_attempts=1,
        ) as intake,
    ):
        errors = []
        for issuer, port in (("bank-a", listener.port), ("bank-b", 9)):
            hook = await intake.http.put(
                "/v1/webhook",
                json={"url": f"http://127.0.0.1:{port}/hook"},
                headers=intake.issuer(issuer),
            )
            assert hook.status_code == 200
            order = await intake.order(issuer, f"ssrf-key-{issuer}", [card(2)])
            assert order.status_code == 201
            [failed] = await deliveries(intake, issuer, 1)
            errors.append(failed["last_error"])
        assert listener.connections >= 1, "the open port was reached"
        assert errors == [NO_ANSWER, NO_ANSWER], "an open port and a closed one read the same"
