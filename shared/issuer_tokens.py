"""Issuer tokens verified by intake, for the other services an issuer may call directly (e.g. a
mobile operator fetching its SIM output file from keymgmt).

intake is the only service that issues and revokes issuer credentials (docs/intake-api.md, 1);
it answers `GET /v1/whoami` with the issuer a bearer token speaks for. `RemoteIssuerTokens` is
an authenticator (shared/auth.py) that asks it, and remembers a positive answer for
`ttl_seconds` (so a revoked token may still pass that long; unknown tokens are not cached, so
a newly issued one works at once). intake unreachable: the token is not recognised (401).
Install it after the static principals, so configured tokens never cause a call.
"""

from __future__ import annotations

import logging
import time

import httpx

from shared.auth import Principal, token_digest

log = logging.getLogger(__name__)

WHOAMI = "/v1/whoami"


class RemoteIssuerTokens:
    def __init__(
        self,
        intake_url: str,
        *,
        ttl_seconds: float = 30.0,
        timeout_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = intake_url.rstrip("/")
        self._ttl, self._timeout, self._transport = ttl_seconds, timeout_seconds, transport
        self._known: dict[str, tuple[float, Principal]] = {}

    async def __call__(self, token: str) -> Principal | None:
        digest = token_digest(token)
        cached = self._known.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            async with httpx.AsyncClient(
                transport=self._transport, timeout=self._timeout
            ) as client:
                answer = await client.get(
                    self._url + WHOAMI, headers={"Authorization": f"Bearer {token}"}
                )
        except httpx.HTTPError as exc:
            log.warning("intake unreachable for an issuer token: %s", exc.__class__.__name__)
            return None
        if answer.status_code != 200:
            self._known.pop(digest, None)
            return None
        issuer_id = str(answer.json()["issuer_id"])
        principal = Principal("issuer", issuer_id, issuer_id)
        self._known[digest] = (time.monotonic() + self._ttl, principal)
        return principal
