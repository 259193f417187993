"""Who is calling: bearer tokens mapped to a principal with a role and, for issuers, a tenant.

Tokens are compared by SHA-256 digest (they are high-entropy secrets, not passwords), so a
registry holds only digests, and a configured principal may be given as its verifier
`sha256:<hex>` instead of its token (shared/credentials.py): a workload holds only the
verifiers of those it checks. Every endpoint names the roles it accepts (ARCHITECTURE.md,
security boundaries); issuer-scoped endpoints also check the tenant.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from fastapi import Depends, HTTPException, Request, status

from shared.credentials import secret_digest, split_entries, token_digest

__all__ = [
    "PRINCIPAL_KEY",
    "ROLES",
    "Authenticator",
    "Principal",
    "Role",
    "StaticTokens",
    "authenticate",
    "bearer_token",
    "require",
    "token_digest",  # shared.credentials's, where issuer tokens are digested too
]

Role = Literal["issuer", "station", "operator", "custodian", "auditor", "admin", "service"]


@dataclass(frozen=True)
class Principal:
    role: Role
    name: str
    issuer_id: str | None = None


ROLES: tuple[Role, ...] = (
    "issuer",
    "station",
    "operator",
    "custodian",
    "auditor",
    "admin",
    "service",
)


Authenticator = Callable[[str], Awaitable[Principal | None]]
# Where shared.limits leaves the principal it found before the body was read (scope state).
PRINCIPAL_KEY = "bureau.principal"


class StaticTokens:
    """Principals configured from settings: `role:name[:issuer]=token-or-verifier,...`."""

    def __init__(self, spec: str) -> None:
        self._by_digest: dict[str, Principal] = {}
        for number, (who, secret) in enumerate(split_entries(spec), 1):
            parts = who.split(":")
            if not secret:  # `who` may then be a token: never quote it
                raise ValueError(f"principal entry {number} is not role:name[:issuer]=token")
            if len(parts) not in (2, 3):
                raise ValueError(f"bad principal spec {who!r}: want role:name[:issuer]=token")
            role = parts[0]
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r} in principal spec")
            try:
                digest = secret_digest(secret)
            except ValueError as exc:
                raise ValueError(f"principal {who}: {exc}") from None
            issuer = parts[2] if len(parts) == 3 else None
            self._by_digest[digest] = Principal(role, parts[1], issuer)

    async def __call__(self, token: str) -> Principal | None:
        digest = token_digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None


async def bearer_token(request: Request) -> str:
    """`async def`, though it never waits: a plain `def` dependency costs FastAPI a thread
    handoff on every request."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def authenticate(authenticators: Iterable[Authenticator], token: str) -> Principal | None:
    """The principal the first authenticator that knows the token names, or None."""
    for authenticator in authenticators:
        principal = await authenticator(token)
        if principal is not None:
            return principal
    return None


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """FastAPI dependency: authenticate through app.state.authenticators and check the role."""
    allowed = set(roles)

    async def dependency(request: Request, token: str = Depends(bearer_token)) -> Principal:
        # shared.limits already authenticated a request with a body, before reading it.
        found = request.scope.get("state", {}).get(PRINCIPAL_KEY)
        principal = found if isinstance(found, Principal) else None
        if principal is None:
            principal = await authenticate(request.app.state.authenticators, token)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="unknown or revoked credentials",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if principal.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {principal.role!r} may not call this endpoint",
            )
        return principal

    return dependency
