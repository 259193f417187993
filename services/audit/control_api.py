"""Dual control for auditors (issue 15): every step of an act two people must take, as audit's
log holds it. Fulfillment (card destruction), intake (blank-stock destruction) and keymgmt (key
ceremonies, API and CLI) emit a `control.recorded` event per step (shared/events/control.py)
in the transaction of the step's own row; audit appends it to its hash-chained log like every
event, so a step here IS a log entry (its leaf in the Merkle tree and the signed checkpoints):
who asked, who confirmed, who was refused and why, for what. Ceremony steps name the custodian
and key check values, never key material.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from services.audit.access import scoped_issuer
from services.audit.log_repository import ControlQuery, EventLog
from services.audit.paging import Page
from shared.auth import Principal, require
from shared.events.control import ControlAct
from shared.service import RuntimeDep

router = APIRouter(prefix="/v1", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor", "admin"))]


@router.get(
    "/control-events",
    summary="Steps of dual-control acts (destructions, key ceremonies) in audit's log, in order",
)
async def list_control_events(
    principal: Auditor,
    runtime: RuntimeDep,
    page: Page,
    act: ControlAct | None = None,
    outcome: Literal["ok", "refused"] | None = None,
    principal_id: Annotated[str | None, Query(alias="principal", max_length=128)] = None,
    subject_id: UUID | None = None,
    issuer_id: str | None = None,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
) -> dict[str, Any]:
    """`principal` matches who took a step or who started its act (`role:name`); an issuer's
    auditor sees its own issuer's steps (a card destruction, which may span issuers, is the
    bureau's)."""
    query = ControlQuery(
        act,
        outcome,
        principal_id,
        subject_id,
        scoped_issuer(principal, issuer_id),
        occurred_from,
        occurred_to,
        page.after_seq,
        page.limit,
    )
    async with runtime.unit_of_work() as uow:
        event_log: EventLog = uow.repo.log
        entries = await event_log.control_events(query)
    return page.answer("control_events", [control_event(entry) for entry in entries])


def control_event(entry: dict[str, Any]) -> dict[str, Any]:
    """One log entry of a dual-control step, as an auditor reads it."""
    step = entry["payload"]
    return {
        "seq": entry["seq"],
        "log_index": entry["log_index"],
        "entry_hash": entry["entry_hash"],
        "recorded_at": entry["recorded_at"],
        "occurred_at": entry["occurred_at"],
        "issuer_id": entry["issuer_id"],
        "act": step["act"],
        "subject_id": step["subject_id"],
        "subject": step["subject"],
        "step": step["step"],
        "outcome": step["outcome"],
        "final": step.get("final", False),
        "principal": step.get("principal"),
        "started_by": step.get("started_by"),
        "reason": step.get("reason"),
        "kcv": step.get("kcv"),
        "event_id": entry["event_id"],
    }
