"""Webhook SSRF attacks refused before any connection: internal names, loopback, the cloud
metadata address, private and mapped addresses, http in production, a second resolution
pointing elsewhere (DNS rebinding) never followed; and what the issuer is told names no
transport detail."""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx
import pytest

from services.intake.settings import IntakeSettings
from services.intake.webhook_targets import (
    IpAddress,
    TargetRefused,
    check_url,
    parse_networks,
    resolve_target,
)
from services.intake.webhooks import NO_ANSWER, Deliverer, SecretBox

PUBLIC = ipaddress.ip_address("93.184.215.14")


def resolving(*answers: str) -> Any:
    """A resolver giving each call the next answer (a rebinding name does just this)."""
    calls = iter(answers)

    async def resolve(host: str, port: int) -> list[IpAddress]:
        return [ipaddress.ip_address(a) for a in next(calls).split(",")]

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8101/",
        "http://keymgmt:8102/v1/vault/cards",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://intake.bureau.svc.cluster.local/",
        "https://printer.local/",
        "ftp://issuer.example/",
        "https://user:pw@issuer.example/",
        "https:///no-host",
    ],
)
def test_urls_that_name_no_public_host_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, production=False)


def test_production_takes_https_on_443_or_8443_only() -> None:
    with pytest.raises(TargetRefused, match="https"):
        check_url("http://issuer.example/hook", production=True)
    with pytest.raises(TargetRefused, match="port"):
        check_url("https://issuer.example:22/hook", production=True)
    assert check_url("https://issuer.example:8443/hook", production=True).port == 8443
    assert check_url("http://issuer.example/hook", production=False).scheme == "http"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "169.254.169.254",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "198.51.100.7",
    ],
)
async def test_internal_addresses_are_refused_literal_or_resolved(address: str) -> None:
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(TargetRefused, match="does not call"):
        await resolve_target(f"http://{literal}/hook", production=False)
    with pytest.raises(TargetRefused, match="does not call"):
        await resolve_target(
            "https://issuer.example/hook",
            production=True,
            resolver=resolving(f"93.184.215.14,{address}"),  # one bad address is enough
        )


async def test_an_allowed_network_opens_it_but_link_local_never() -> None:
    allowed = parse_networks("127.0.0.1/32")
    target = await resolve_target("http://127.0.0.1:9/x", production=False, allowed=allowed)
    assert target.url == "http://127.0.0.1:9/x"
    with pytest.raises(TargetRefused):
        await resolve_target("http://127.0.0.2/x", production=False, allowed=allowed)
    with pytest.raises(ValueError, match="link-local"):
        parse_networks("169.254.169.254/32")
    with pytest.raises(ValueError, match="link-local"):
        IntakeSettings(webhook_allowed_networks="10.0.0.0/8,169.254.0.0/16")


async def test_the_delivery_connects_to_the_checked_address_not_a_second_lookup() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    settings = IntakeSettings(environment="test")
    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    # First lookup public, every later one loopback: the rebinding attack.
    deliverer = Deliverer(
        settings,
        SecretBox("k"),
        client=client,
        resolver=resolving("93.184.215.14", "127.0.0.1", "127.0.0.1"),
    )
    row = row_for(deliverer, "https://issuer.example/hook?x=1")
    assert await deliverer._post(row) is None
    assert seen[0].url == "https://93.184.215.14/hook?x=1"
    assert seen[0].headers["host"] == "issuer.example"
    assert seen[0].extensions["sni_hostname"] == "issuer.example"
    refused = await deliverer._post(row)
    assert "does not call" in str(refused)
    assert len(seen) == 1, "the rebound name was never connected to"
    await client.aclose()


async def test_the_issuer_learns_no_transport_detail() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/refused":
            raise httpx.ConnectError("Connection refused")
        if request.url.path == "/slow":
            raise httpx.ReadTimeout("timed out")
        raise httpx.RemoteProtocolError("Server disconnected without sending a response")

    client = httpx.AsyncClient(transport=httpx.MockTransport(fail))
    deliverer = Deliverer(
        IntakeSettings(), SecretBox("k"), client=client, resolver=resolving(*["93.184.215.14"] * 3)
    )
    said = {
        await deliverer._post(row_for(deliverer, f"https://issuer.example/{path}"))
        for path in ("refused", "slow", "garbage")
    }
    assert said == {NO_ANSWER}, "closed, filtered and non-HTTP ports must look the same"
    await client.aclose()


def row_for(deliverer: Deliverer, url: str) -> dict[str, Any]:
    return {
        "issuer_id": "bank-a",
        "url": url,
        "body": '{"id":"1"}',
        "secret_blob": deliverer.box.seal("bank-a", "s" * 32),
        "delivery_id": "d1",
        "type": "order.accepted",
    }
