"""Dual control between two people (PCI Card Production, Logical Security 5-6; issue 15): an act
that needs two people is started by one authenticated principal and completed by a second,
different one. A principal is who its own bearer token names (`role:name` from the registry,
shared/auth.py), never a name someone typed, so "Alice" and "alice" typed by one operator are
one person, and two tokens of the registry are two people.

Every step of such an act (asked, confirmed, refused) is a row in the owning service's own
tables and a `control.recorded` event (shared/events/control.py) in the same transaction, which
audit appends to its hash-chained log and serves to auditors (GET /v1/control-events). This
module owns what the acts share: the refusal row with its event, and the view of a request
with its refusals (each service supplies its TwoPersonTables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from fastapi.encoders import jsonable_encoder
from sqlalchemy import text

from shared.auth import Principal
from shared.db import checked_identifier
from shared.errors import Forbidden, NotFound
from shared.events.control import ControlAct, ControlRecorded
from shared.outbox import UnitOfWork

SAME_PRINCIPAL_TWICE = "same-principal-twice"
# A step refused because the principal's role may not take it. Recorded only where the workload
# verifies that role's tokens anyway (keymgmt's staff at a ceremony component): a workload holds
# the verifiers of the roles its routes admit and no more (deploy/k8s/make_secrets.py), so a
# destruction's confirmation by another role is turned away at authentication, unrecorded.
WRONG_ROLE = "wrong-role"


class SamePrincipalTwice(Forbidden):
    """The second step of a dual-control act by the principal who took the first (403)."""

    refusal: ClassVar[str | None] = SAME_PRINCIPAL_TWICE


def principal_id(who: Principal) -> str:
    """How records and events name a principal: `role:name` (issuer principals add nothing:
    they never take part in dual control)."""
    return f"{who.role}:{who.name}"


def same_principal(first: str, second: str) -> bool:
    """Registry names differ only by case at most by mistake: treat them as one person."""
    return first.strip().casefold() == second.strip().casefold()


def second_principal(first: str, second: Principal, act: str) -> str:
    """The id of `second`, who completes `act` that `first` started; SamePrincipalTwice when
    they are one person."""
    second_id = principal_id(second)
    if same_principal(first, second_id):
        raise SamePrincipalTwice(
            f"{act} needs two different people: {second_id} already took the first step"
        )
    return second_id


# -- the record of a two-person act: its tables, its view, its steps in audit's log -------------
@dataclass(frozen=True)
class TwoPersonTables:
    """Where a service keeps one kind of two-person request, in its own schema: the requests
    (`request_id`, `requested_by`, `state`, `confirmed_by`, ... and what the act is about) and
    every refused confirmation (`request_id`, `refused_principal`, `reason`, `refused_at`)."""

    act: ControlAct
    requests: str
    refusals: str
    what: str  # names the request in errors: "destruction request"


def control_step(
    tables: TwoPersonTables,
    request: Mapping[str, Any],
    *,
    issuer_id: str,
    subject: str,
    step: str,
    principal: str,
    reason: str | None = None,
    final: bool = False,
) -> ControlRecorded:
    """The `control.recorded` event of one step of `request` (a row of `tables.requests`):
    `principal` took it; the requester is named with it, so an auditor reads both people."""
    return ControlRecorded(
        issuer_id=issuer_id,
        actor=principal,
        act=tables.act,
        subject_id=request["request_id"],
        subject=subject[:300],
        step=step,
        outcome="ok" if reason is None else "refused",
        principal=principal,
        started_by=request["requested_by"],
        reason=None if reason is None else reason[:500],
        final=final,
    )


async def record_refusal(
    uow: UnitOfWork[Any], tables: TwoPersonTables, refused: ControlRecorded
) -> None:
    """Keep a refused step: its row in the service's refusals table and its event for audit's
    log, in the unit's one transaction (which the caller commits before raising the refusal)."""
    await uow.conn.execute(
        text(
            f"INSERT INTO {uow.schema}.{checked_identifier(tables.refusals)}"
            " (request_id, refused_principal, reason) VALUES (:r, :p, :why)"
        ),
        {"r": refused.subject_id, "p": refused.principal, "why": refused.reason or ""},
    )
    await uow.emit(refused)


async def request_view(
    uow: UnitOfWork[Any], tables: TwoPersonTables, request_id: UUID
) -> dict[str, Any]:
    """A request as its operators read it: every column of its row, and its refusals (who,
    why, when) in order. NotFound names the request."""
    requests = f"{uow.schema}.{checked_identifier(tables.requests)}"
    row = (
        await uow.conn.execute(
            text(f"SELECT * FROM {requests} WHERE request_id = :r"), {"r": request_id}
        )
    ).first()
    if row is None:
        raise NotFound(f"no {tables.what} {request_id}")
    refusals = await uow.conn.execute(
        text(
            "SELECT refused_principal, reason, refused_at"
            f" FROM {uow.schema}.{checked_identifier(tables.refusals)}"
            " WHERE request_id = :r ORDER BY id"
        ),
        {"r": request_id},
    )
    view = dict(row._mapping) | {"refusals": [dict(r._mapping) for r in refusals]}
    encoded: dict[str, Any] = jsonable_encoder(view)
    return encoded
