"""shared.limits on a small app: no credentials, no body read; every body bounded as it streams,
whatever its Content-Length says; the principal found before the body is the one `require`
uses; a route's own bound (bytes or a settings field) replaces the default."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request

from services.graphical import app as graphical_app
from services.graphical.render import MAX_PHOTO_BYTES
from services.graphical.settings import GraphicalSettings
from shared.auth import Principal, StaticTokens, require
from shared.errors import install_error_handlers
from shared.limits import DEFAULT_BODY_BYTES, body_limit, install_request_limits

TOKEN = "issuer-token-0123456789"
Issuer = Annotated[Principal, Depends(require("issuer"))]


def small_app() -> FastAPI:
    app, router = FastAPI(), APIRouter()
    app.state.authenticators = [StaticTokens(f"issuer:acme:acme={TOKEN},operator:olga=op-token")]
    app.state.runtime = SimpleNamespace(settings=SimpleNamespace(upload_max=4096))

    @router.post("/json")
    async def post_json(body: dict[str, str], who: Issuer) -> dict[str, str]:
        return {"who": who.name, "keys": ",".join(body)}

    @router.put("/photo")
    @body_limit(1000)
    async def put_photo(request: Request, who: Issuer) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @router.post("/upload")
    @body_limit(setting="upload_max")
    async def upload(request: Request, who: Issuer) -> dict[str, int]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"bytes": total}

    app.include_router(router)
    install_error_handlers(app)
    install_request_limits(app, [router])
    return app


class Body:
    """A request body produced as the server reads it, counting what was taken."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            piece = b"x" * min(self.chunk, self.total - self.sent)
            self.sent += len(piece)
            yield piece


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=small_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def test_no_credentials_means_401_before_a_byte_of_the_body(
    http: httpx.AsyncClient,
) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        body = Body(26 * 1024 * 1024)
        answer = await http.post("/json", content=body, headers=headers)
        assert answer.status_code == 401, answer.text
        assert "body was not read" in answer.json()["detail"]
        assert answer.headers["www-authenticate"] == "Bearer"
        assert body.sent <= 64 * 1024  # at most the chunk the client had already produced


async def test_declared_length_over_the_bound_is_413_naming_it(http: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = await http.put("/photo", content=b"x" * 1001, headers=auth)
    assert answer.status_code == 413
    assert "1000 bytes" in answer.json()["detail"]
    fits = await http.put("/photo", content=b"x" * 1000, headers=auth)
    assert fits.json() == {"bytes": 1000}


async def test_a_chunked_body_is_cut_off_once_it_passes_the_bound(
    http: httpx.AsyncClient,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path, limit in (("/photo", 1000), ("/upload", 4096), ("/json", DEFAULT_BODY_BYTES)):
        body = Body(limit * 50, chunk=512)
        answer = await http.request(
            "PUT" if path == "/photo" else "POST", path, content=body, headers=auth
        )
        assert answer.status_code == 413, (path, answer.text)
        assert f"{limit} bytes" in answer.json()["detail"]
        assert body.sent <= limit + 512  # stopped at the chunk that crossed the bound


async def test_the_role_check_stays_with_the_endpoint(http: httpx.AsyncClient) -> None:
    other_role = await http.post(
        "/json", json={"a": "b"}, headers={"Authorization": "Bearer op-token"}
    )
    assert other_role.status_code == 403
    ok = await http.post("/json", json={"a": "b"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.json() == {"who": "acme", "keys": "a"}


def test_a_limit_is_bytes_or_a_setting_never_both() -> None:
    with pytest.raises(ValueError, match="either"):
        body_limit(10, setting="x")
    with pytest.raises(ValueError, match="either"):
        body_limit()


async def test_the_photo_upload_of_the_real_graphical_app_is_bounded_while_it_streams() -> None:
    """graphical's own app (not started: the refusals come before any database work)."""
    settings = GraphicalSettings(environment="test", principals="operator:olga=op-token")
    app = graphical_app.build_app(graphical_app.bootstrap(settings))
    transport = httpx.ASGITransport(app=app)
    auth = {"Authorization": "Bearer op-token", "Content-Type": "image/png"}
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as client:
        path = f"/v1/photos/acme/{uuid.uuid4()}"
        body = Body(20 * MAX_PHOTO_BYTES, chunk=64 * 1024)
        answer = await client.put(path, content=body, headers=auth)
        assert answer.status_code == 413, answer.text
        assert f"{MAX_PHOTO_BYTES} bytes" in answer.json()["detail"]
        assert body.sent <= MAX_PHOTO_BYTES + 64 * 1024
        unauthenticated = Body(20 * MAX_PHOTO_BYTES)
        refused = await client.put(
            path, content=unauthenticated, headers={"Content-Type": "image/png"}
        )
        assert refused.status_code == 401
        assert unauthenticated.sent <= 64 * 1024
