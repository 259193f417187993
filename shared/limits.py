"""Limits before parsing: credentials checked before a request body is read, and every body
bounded while it streams in.

FastAPI reads and parses a body before it resolves an endpoint's dependencies, so the
credential check of `shared.auth.require` comes too late to protect the parser: a 26 MB body
without credentials used to be read and decoded before its 401. This ASGI middleware runs
first. For a request that carries a body it
- finds the route the router will pick, and its bound (`body_limit` on the endpoint, else
  DEFAULT_BODY_BYTES);
- refuses the request (401) unless its bearer token names a principal, without reading a byte
  of the body (routes marked `public` skip this: none carries a body today);
- refuses a declared Content-Length over the bound at once (413), and counts the bytes as the
  endpoint reads them, refusing (413) the moment the bound is passed, so a chunked body cannot
  outgrow it either.
The role check stays with the endpoint's `require(...)`, which reuses the principal found here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import PRINCIPAL_KEY, Principal, authenticate

DEFAULT_BODY_BYTES = 1024 * 1024
_LIMIT_ATTR = "__bureau_body_limit__"
_PUBLIC_ATTR = "__bureau_public__"

F = TypeVar("F", bound=Callable[..., Any])


def body_limit(max_bytes: int | None = None, *, setting: str | None = None) -> Callable[[F], F]:
    """Mark an endpoint's body bound: a number of bytes, or the name of a settings field of
    the service (read from the runtime at request time, e.g. `setting="bulk_max_bytes"`)."""
    if (max_bytes is None) == (setting is None):
        raise ValueError("give either max_bytes or setting")

    def mark(endpoint: F) -> F:
        setattr(endpoint, _LIMIT_ATTR, max_bytes if setting is None else setting)
        return endpoint

    return mark


def public(endpoint: F) -> F:
    """Mark an endpoint that takes no credentials (its body, if any, is still bounded)."""
    setattr(endpoint, _PUBLIC_ATTR, True)
    return endpoint


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"the request body is over the limit of {limit} bytes")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _bearer(scope: Scope) -> str | None:
    scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def _send_json(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    # The unread body stays unread: the server closes the connection after this answer.
    raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """The middleware (install with `install_request_limits(app)`)."""

    def __init__(self, app: ASGIApp, fastapi: FastAPI, routers: Sequence[APIRouter]) -> None:
        self.app = app
        self.fastapi = fastapi
        # The service's own routes as declared (the app's table nests included routers).
        self.routes = [route for router in routers for route in router.routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._has_body(scope):
            await self.app(scope, receive, send)
            return
        endpoint = self._endpoint(scope)
        limit = self._limit(endpoint)
        if not getattr(endpoint, _PUBLIC_ATTR, False):
            principal = await self._authenticate(scope)
            if principal is None:
                await _send_json(
                    send,
                    401,
                    "unknown, revoked or missing credentials: send 'Authorization: Bearer"
                    " <token>'; the body was not read",
                    {"WWW-Authenticate": "Bearer"},
                )
                return
            scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(send, 413, BodyTooLarge(limit).detail, {})
            return
        await self._bounded(scope, receive, send, limit)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # read outside FastAPI's handlers (a streamed upload)
            if started:
                raise
            await _send_json(send, 413, str(exc.detail), {})

    @staticmethod
    def _has_body(scope: Scope) -> bool:
        length = _header(scope, b"content-length")
        if _header(scope, b"transfer-encoding") is not None:
            return True
        return length is not None and length.strip() not in ("", "0")

    def _endpoint(self, scope: Scope) -> Any:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "endpoint", None)
        return None

    def _limit(self, endpoint: Any) -> int:
        mark = getattr(endpoint, _LIMIT_ATTR, None)
        if isinstance(mark, str):
            return int(getattr(self.fastapi.state.runtime.settings, mark))
        return DEFAULT_BODY_BYTES if mark is None else int(mark)

    async def _authenticate(self, scope: Scope) -> Principal | None:
        token = _bearer(scope)
        if token is None:
            return None
        return await authenticate(self.fastapi.state.authenticators, token)


def install_request_limits(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Limits for `app`, whose endpoints come from `routers` (included without a prefix)."""
    app.add_middleware(RequestLimits, fastapi=app, routers=list(routers))
