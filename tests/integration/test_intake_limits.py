"""Limits before parsing on the real intake (real Postgres, the vault on a fresh SoftHSM token):
a body without valid credentials is refused before it is read, over a real socket too, in
bounded memory; every body is bounded while it streams (413 naming the limit)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from services.keymgmt.settings import KeymgmtSettings
from tests.support.intake import Intake, PeakRss, started_intake

pytestmark = pytest.mark.integration

MB = 1024 * 1024


@pytest.fixture
async def intake(
    settings: KeymgmtSettings, keymgmt: tuple[Any, httpx.AsyncClient], unique: str
) -> AsyncIterator[Intake]:
    async with started_intake(settings, keymgmt[1], unique, order_max_bytes=2 * MB) as started:
        yield started


class Body:
    """A request body made as the server reads it, counting the bytes taken."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            piece = b"[" * min(self.chunk, self.total - self.sent)
            self.sent += len(piece)
            yield piece


async def test_26_mb_without_credentials_is_refused_unread_in_bounded_memory(
    intake: Intake,
) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        body = Body(26 * MB)
        with PeakRss() as peak:
            answer = await intake.http.post(
                "/v1/orders",
                content=body,
                headers={**headers, "Content-Type": "application/json", "Idempotency-Key": "k" * 8},
            )
        assert answer.status_code == 401, answer.text
        assert body.sent <= 64 * 1024
        assert peak.growth < 8 * MB, peak.growth
    bulk = Body(26 * MB)
    answer = await intake.http.post(
        "/v1/orders/bulk?product_id=debit&external_ref=x",
        content=bulk,
        headers={"Content-Type": "text/csv", "Idempotency-Key": "k" * 8},
    )
    assert answer.status_code == 401
    assert bulk.sent <= 64 * 1024


async def test_over_a_real_socket_the_401_comes_before_the_body_is_sent(intake: Intake) -> None:
    server = uvicorn.Server(
        uvicorn.Config(intake.app, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        token = intake.tokens["bank-a"]
        for auth, status in (
            (b"", b"401"),
            (f"Authorization: Bearer {token}\r\n".encode(), b"413"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /v1/orders HTTP/1.1\r\nHost: intake\r\nContent-Type: application/json\r\n"
                b"Idempotency-Key: kkkkkkkk\r\n" + auth + b"Content-Length: 27262976\r\n\r\n"
            )
            await writer.drain()
            # No byte of the 26 MB body is ever sent: the answer must come without it.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.split(b" ")[1] == status, head
            writer.close()
    finally:
        server.should_exit = True
        await serving


async def test_an_order_body_is_bounded_while_it_streams(intake: Intake) -> None:
    body = Body(10 * MB, chunk=16 * 1024)
    answer = await intake.http.post(
        "/v1/orders",
        content=body,
        headers=intake.issuer(
            "bank-a", **{"Content-Type": "application/json", "Idempotency-Key": "k" * 8}
        ),
    )
    assert answer.status_code == 413, answer.text
    assert f"{2 * MB} bytes" in answer.json()["detail"]
    assert body.sent <= 2 * MB + 16 * 1024
    assert (await intake.rows("orders", "cards"))["cards"] == 0
