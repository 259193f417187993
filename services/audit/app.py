"""The audit service: wiring (bootstrap) and the auditor API (event log, reconciliation)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status

from services.audit.access import scoped_issuer
from services.audit.chain import verify_chain
from services.audit.checkpointer import merkle_keeper
from services.audit.export_api import router as export_router
from services.audit.handlers import build_handlers, evaluate_batch
from services.audit.log_repository import EventLog, EventQuery
from services.audit.page import router as page_router
from services.audit.repository import AuditRepository, BatchRow
from services.audit.service import Reconciliation, check_closure, reconcile_batch
from services.audit.settings import AuditSettings
from services.audit.signer import KeymgmtSigner
from services.audit.sweep import stale_batch_sweeper
from services.audit.tree_api import router as tree_router
from shared.auth import Principal, require
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime, create_app, runtime_of

NAME = "audit"
MIGRATIONS = Path(__file__).parent / "migrations"
# Every service's stream. Not the DLQ: its records are undecodable by definition, and the
# dead_letter.recorded events that count them arrive on the services' own streams.
STREAMS = ("intake", "keymgmt", "electrical", "graphical", "qa", "fulfillment", "audit")


def bootstrap(
    settings: AuditSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    signer: KeymgmtSigner | None = None,
) -> ServiceRuntime:
    """Wire the audit runtime. Tests pass their own schema, consumer group and signer."""
    keymgmt: KeymgmtClient | None = None
    if signer is None:
        keymgmt = KeymgmtClient(
            settings.keymgmt_url,
            settings.token_for("audit"),
            timeout_s=10.0,
            policy=RetryPolicy.once(),
        )
        signer = KeymgmtSigner(keymgmt)
    runtime = ServiceRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        handlers=build_handlers(),
        subscribe=STREAMS,
        workers=[stale_batch_sweeper(settings), merkle_keeper(settings, signer)],
        schema=schema,
        consumer_group=consumer_group,
    )
    if keymgmt is not None:
        runtime.on_stop(keymgmt.aclose)
    runtime.state["signer"] = signer
    return runtime


def build_app(runtime: ServiceRuntime) -> FastAPI:
    app = create_app(
        runtime,
        title="cardbureau audit",
        description="Append-only, hash-chained event log; zero-loss batch reconciliation.",
    )
    app.include_router(router)
    app.include_router(tree_router)
    app.include_router(export_router)
    app.include_router(page_router)
    return app


router = APIRouter(prefix="/v1", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor", "admin"))]
Reconciler = Annotated[Principal, Depends(require("auditor", "operator", "admin"))]


def _not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no such {what}")


def _check_issuer(principal: Principal, issuer_id: str) -> None:
    """A principal bound to an issuer sees only that issuer; the rest does not exist for it."""
    if principal.issuer_id is not None and principal.issuer_id != issuer_id:
        raise _not_found("batch")


@router.get("/events", summary="The event log, in log order, filtered and paginated")
async def list_events(
    principal: Auditor,
    request: Request,
    card_id: UUID | None = None,
    batch_id: UUID | None = None,
    event_type: Annotated[str | None, Query(alias="type")] = None,
    issuer_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_seq: Annotated[int, Query(ge=0)] = 0,
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
        after_seq,
        limit,
        actor,
        occurred_from,
        occurred_to,
    )
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        found = await EventLog(conn, runtime.schema).find_events(query)
    return {
        "events": found,
        "next_after_seq": found[-1]["seq"] if len(found) == limit else None,
    }


@router.get(
    "/batches/{batch_id}/reconciliation",
    summary="A batch's counts, status (open, held, reconciled, closed) and discrepancy detail",
)
async def get_reconciliation(
    batch_id: UUID, principal: Auditor, request: Request
) -> dict[str, Any]:
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        repo = AuditRepository(conn, runtime.schema)
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
    batch_id: UUID, principal: Reconciler, request: Request
) -> dict[str, Any]:
    runtime = runtime_of(request)
    async with runtime.engine.begin() as conn:
        repo = AuditRepository(conn, runtime.schema)
        batch = await repo.existing_batch(batch_id, lock=True)
        if batch is None:
            raise _not_found("batch")
        _check_issuer(principal, batch.facts.issuer_id)
        uow = UnitOfWork(conn, runtime.schema, runtime.emit_topic)
        decision = await evaluate_batch(
            uow, repo, batch, report_discrepancy=True, actor=f"{principal.role}:{principal.name}"
        )
        batch = await repo.existing_batch(batch_id, lock=False) or batch
    if uow.emitted:
        runtime.relay.wake()
    view = _batch_view(batch, decision.status, decision.report)
    view["emitted"] = [event.type for event in uow.emitted]
    return view


@router.get("/log/verify", summary="Recompute the hash chain over a range of the log")
async def verify_log(
    principal: Auditor,
    request: Request,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> dict[str, Any]:
    if principal.issuer_id is not None:
        # The chain spans every issuer's entries; bureau auditors verify it.
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="issuer auditors cannot verify")
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        event_log = EventLog(conn, runtime.schema)
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
