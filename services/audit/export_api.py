"""Auditor exports (NDJSON, CSV) of the event log and the daily reconciliation report."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from services.audit.access import scoped_issuer
from services.audit.log_repository import EventQuery
from services.audit.report_repository import ReportRepository
from shared.auth import Principal, require
from shared.service import RuntimeDep, ServiceRuntime

router = APIRouter(prefix="/v1", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor", "admin"))]
PAGE = 1000
CSV_COLUMNS = (
    "seq", "log_index", "event_id", "type", "version", "issuer_id", "actor", "occurred_at",
    "recorded_at", "card_id", "batch_id", "order_id", "leaf_hash", "entry_hash", "payload",
)  # fmt: skip


class ExportFormat(StrEnum):
    NDJSON = "ndjson"
    CSV = "csv"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


async def _pages(runtime: ServiceRuntime, query: EventQuery) -> AsyncIterator[list[dict[str, Any]]]:
    """The whole selection in log order, a page per transaction (memory stays one page)."""
    after = query.after_seq
    while True:
        async with runtime.unit_of_work() as uow:
            page = await uow.repo.log.find_events(
                EventQuery(**{**query.__dict__, "after_seq": after, "limit": PAGE})
            )
        if page:
            yield page
        if len(page) < PAGE:
            return
        after = page[-1]["seq"]


async def _ndjson(runtime: ServiceRuntime, query: EventQuery) -> AsyncIterator[bytes]:
    async for page in _pages(runtime, query):
        yield "".join(json.dumps(row, default=_text) + "\n" for row in page).encode()


async def _csv(runtime: ServiceRuntime, query: EventQuery) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async for page in _pages(runtime, query):
        writer.writerows([_text(row[c]) for c in CSV_COLUMNS] for row in page)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


@router.get("/events/export", summary="The filtered event log as NDJSON or CSV, streamed")
async def export_events(
    principal: Auditor,
    runtime: RuntimeDep,
    export_format: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.NDJSON,
    card_id: UUID | None = None,
    batch_id: UUID | None = None,
    event_type: Annotated[str | None, Query(alias="type")] = None,
    issuer_id: str | None = None,
    actor: str | None = None,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
) -> StreamingResponse:
    query = EventQuery(
        card_id,
        batch_id,
        event_type,
        scoped_issuer(principal, issuer_id),
        0,
        PAGE,
        actor,
        occurred_from,
        occurred_to,
    )
    if export_format is ExportFormat.CSV:
        body, media = _csv(runtime, query), "text/csv; charset=utf-8"
    else:
        body, media = _ndjson(runtime, query), "application/x-ndjson"
    filename = f"audit-events.{export_format.value}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(body, media_type=media, headers=headers)


@router.get("/reports/daily", summary="One UTC day: events logged, batches and their state")
async def daily_report(
    principal: Auditor, runtime: RuntimeDep, day: date, issuer_id: str | None = None
) -> dict[str, Any]:
    issuer = scoped_issuer(principal, issuer_id)
    start = datetime.combine(day, time(0), tzinfo=UTC)
    end = start + timedelta(days=1)
    async with runtime.unit_of_work() as uow:
        reports: ReportRepository = uow.repo.reports
        by_type = await reports.events_by_type(start, end, issuer)
        batches = await reports.batches_active(start, end, issuer)

    def in_day(at: datetime | None) -> bool:
        return at is not None and start <= at < end

    return {
        "day": day.isoformat(),
        "issuer_id": issuer,
        "events_logged": sum(by_type.values()),
        "events_by_type": by_type,
        "batches": batches,
        "totals": {
            "batches_active": len(batches),
            "reconciled": sum(1 for b in batches if in_day(b["reconciled_at"])),
            "closed": sum(1 for b in batches if in_day(b["closed_at"])),
            "held": sum(1 for b in batches if b["status"] == "held"),
            "discrepancies_reported": by_type.get("batch.discrepancy", 0),
            "dead_letters": by_type.get("dead_letter.recorded", 0),
        },
    }
