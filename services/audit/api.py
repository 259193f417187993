"""The auditor API of the event log: events, batch reconciliation, and the hash chain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from services.audit.access import scoped_issuer
from services.audit.chain import verify_chain
from services.audit.handlers import evaluate_batch
from services.audit.log_repository import EventLog, EventQuery
from services.audit.paging import Page
from services.audit.repository import AuditRepository, BatchRow
from services.audit.service import Reconciliation, check_closure, reconcile_batch
from shared.auth import Principal, require
from shared.errors import Forbidden, NotFound
from shared.service import RuntimeDep

router = APIRouter(prefix="/v1", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor", "admin"))]
Reconciler = Annotated[Principal, Depends(require("auditor", "operator", "admin"))]


def _not_found(what: str) -> NotFound:
    return NotFound(f"no such {what}")


def _check_issuer(principal: Principal, issuer_id: str) -> None:
    """A principal bound to an issuer sees only that issuer; the rest does not exist for it."""
    if principal.issuer_id is not None and principal.issuer_id != issuer_id:
        raise _not_found("batch")


@router.get("/events", summary="The event log, in log order, filtered and paginated")
async def list_events(
    principal: Auditor,
    runtime: RuntimeDep,
    page: Page,
    card_id: UUID | None = None,
    batch_id: UUID | None = None,
    event_type: Annotated[str | None, Query(alias="type")] = None,
    issuer_id: str | None = None,
    actor: str | None = None,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
) -> dict[str, Any]:
    issuer_id = scoped_issuer(principal, issuer_id)
    query = EventQuery(
        card_id,
        batch_id,
        event_type,
        issuer_id,
        page.after_seq,
        page.limit,
        actor,
        occurred_from,
        occurred_to,
    )
    async with runtime.unit_of_work() as uow:
        found = await uow.repo.log.find_events(query)
    return page.answer("events", found)


@router.get(
    "/batches/{batch_id}/reconciliation",
    summary="A batch's counts, status (open, held, reconciled, closed) and discrepancy detail",
)
async def get_reconciliation(
    batch_id: UUID, principal: Auditor, runtime: RuntimeDep
) -> dict[str, Any]:
    async with runtime.unit_of_work() as uow:
        repo: AuditRepository = uow.repo.batches
        batch = await repo.existing_batch(batch_id, lock=False)
        if batch is None:
            raise _not_found("batch")
        _check_issuer(principal, batch.facts.issuer_id)
        cards = await repo.batch_cards(batch_id)
    released = batch.status in ("reconciled", "closed")
    report = (check_closure if released else reconcile_batch)(batch.facts, cards)
    return _batch_view(batch, batch.status, report)


@router.post(
    "/batches/{batch_id}/reconcile",
    summary="Reconcile the batch now; an incomplete one gets a batch.discrepancy (once each)",
)
async def request_reconciliation(
    batch_id: UUID, principal: Reconciler, runtime: RuntimeDep
) -> dict[str, Any]:
    async with runtime.unit_of_work() as uow:
        repo: AuditRepository = uow.repo.batches
        batch = await repo.existing_batch(batch_id, lock=True)
        if batch is None:
            raise _not_found("batch")
        _check_issuer(principal, batch.facts.issuer_id)
        decision = await evaluate_batch(
            uow, repo, batch, report_discrepancy=True, actor=f"{principal.role}:{principal.name}"
        )
        batch = await repo.existing_batch(batch_id, lock=False) or batch
    view = _batch_view(batch, decision.status, decision.report)
    view["emitted"] = [event.type for event in uow.emitted]
    return view


@router.get("/log/verify", summary="Recompute the hash chain over a range of the log")
async def verify_log(
    principal: Auditor,
    runtime: RuntimeDep,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> dict[str, Any]:
    if principal.issuer_id is not None:
        # The chain spans every issuer's entries; bureau auditors verify it.
        raise Forbidden("issuer auditors cannot verify")
    async with runtime.unit_of_work() as uow:
        event_log: EventLog = uow.repo.log
        try:
            prev_hash, next_index = await event_log.chain_position(after_seq)
        except LookupError as exc:
            raise _not_found("log entry") from exc
        entries = await event_log.chain_entries(after_seq, limit)
    verdict = verify_chain(entries, prev_hash=prev_hash, next_index=next_index)
    return {
        "after_seq": after_seq,
        "checked": verdict.checked,
        "last_index": verdict.last_index,
        "head_hash": verdict.head_hash,
        "ok": verdict.ok,
        "first_bad_seq": verdict.first_bad_seq,
        "problem": verdict.problem,
    }


def _batch_view(batch: BatchRow, batch_status: str, report: Reconciliation) -> dict[str, Any]:
    record = batch.record
    return {
        "batch_id": batch.facts.batch_id,
        "issuer_id": batch.facts.issuer_id,
        "order_id": record.get("order_id"),
        "product_id": record.get("product_id"),
        "status": batch_status,
        "complete": report.complete,
        "counts": report.counts,
        "missing": report.missing,
        "problems": report.problems,
        "reconciled_at": record.get("reconciled_at"),
        "closed_at": record.get("closed_at"),
        "last_event_at": record.get("last_event_at"),
        "last_discrepancy": (
            None
            if record.get("discrepancy") is None
            else {**record["discrepancy"], "at": record.get("discrepancy_at")}
        ),
    }
