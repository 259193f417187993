"""SQL of the auditor reports (per day); per-batch reconciliation is in repository.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.repository import json_value
from shared.db import checked_identifier


class ReportRepository:
    def __init__(self, conn: AsyncConnection, schema: str) -> None:
        self._conn = conn
        self._s = checked_identifier(schema)

    async def events_by_type(
        self, start: datetime, end: datetime, issuer_id: str | None
    ) -> dict[str, int]:
        """Entries logged in [start, end), by type."""
        rows = await self._conn.execute(
            text(
                f"SELECT type, count(*) FROM {self._s}.events WHERE recorded_at >= :a"
                " AND recorded_at < :b AND (CAST(:i AS text) IS NULL OR issuer_id = :i)"
                " GROUP BY type ORDER BY type"
            ),
            {"a": start, "b": end, "i": issuer_id},
        )
        return {str(t): int(n) for t, n in rows}

    async def batches_active(
        self, start: datetime, end: datetime, issuer_id: str | None
    ) -> list[dict[str, Any]]:
        """Batches with an event, a decision or a discrepancy in [start, end)."""
        rows = await self._conn.execute(
            text(
                "SELECT batch_id, issuer_id, order_id, product_id, card_count, status, counts,"
                " reconciled_at, closed_at, discrepancy, discrepancy_at, first_event_at,"
                f" last_event_at FROM {self._s}.batches"
                " WHERE (CAST(:i AS text) IS NULL OR issuer_id = :i) AND ("
                " (first_event_at < :b AND last_event_at >= :a)"
                " OR (reconciled_at >= :a AND reconciled_at < :b)"
                " OR (closed_at >= :a AND closed_at < :b)"
                " OR (discrepancy_at >= :a AND discrepancy_at < :b))"
                " ORDER BY first_event_at, batch_id"
            ),
            {"a": start, "b": end, "i": issuer_id},
        )
        return [
            {
                **row._asdict(),
                "counts": json_value(row.counts),
                "discrepancy": json_value(row.discrepancy),
            }
            for row in rows
        ]
