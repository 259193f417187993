"""Who sees what of the log: issuer-bound auditors see only their issuer's entries."""

from __future__ import annotations

from shared.auth import Principal
from shared.errors import NotFound


def scoped_issuer(principal: Principal, issuer_id: str | None) -> str | None:
    """The issuer a query is limited to: an issuer-bound auditor's own, whatever was asked
    (another issuer does not exist for them: 404)."""
    if principal.issuer_id is None:
        return issuer_id
    if issuer_id not in (None, principal.issuer_id):
        raise NotFound("no such issuer")
    return principal.issuer_id
