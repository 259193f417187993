"""All SQL of the graphical service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.graphical.service import CardDesign
from shared.db import checked_identifier


@dataclass(frozen=True)
class PrintJob:
    job_id: UUID
    card_id: UUID
    batch_id: UUID
    issuer_id: str
    chip_serial: str
    printer: str
    design_id: str
    status: str
    image_sha256: str | None
    location: str | None
    reason: str | None
    source_event_id: UUID
    created_at: datetime | None = None


_JOB_COLUMNS = (
    "job_id, card_id, batch_id, issuer_id, chip_serial, printer, design_id, status,"
    " image_sha256, location, reason, source_event_id"
)


class GraphicalRepository:
    def __init__(self, conn: AsyncConnection, schema: str) -> None:
        self._conn = conn
        self._s = checked_identifier(schema)

    async def design_for(self, issuer_id: str) -> CardDesign | None:
        row = (
            await self._conn.execute(
                text(f"SELECT design FROM {self._s}.designs WHERE issuer_id = :i"),
                {"i": issuer_id},
            )
        ).first()
        if row is None:
            return None
        stored = row[0]  # jsonb: a str, or already decoded if the driver has a codec
        if isinstance(stored, str | bytes):
            return CardDesign.model_validate_json(stored)
        return CardDesign.model_validate(stored)

    async def save_design(self, issuer_id: str, design: CardDesign, by: str) -> None:
        await self._conn.execute(
            text(
                f"INSERT INTO {self._s}.designs (issuer_id, design, updated_by)"
                " VALUES (:i, CAST(:d AS jsonb), :by)"
                " ON CONFLICT (issuer_id) DO UPDATE"
                " SET design = EXCLUDED.design, updated_by = EXCLUDED.updated_by,"
                " updated_at = now()"
            ),
            {"i": issuer_id, "d": design.model_dump_json(), "by": by},
        )

    async def lock_card(self, card_id: UUID) -> None:
        """Serialise concurrent handling of one card (a transaction-scoped advisory lock)."""
        await self._conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"{self._s}/print/{card_id}"},
        )

    async def job_for_card(self, card_id: UUID) -> PrintJob | None:
        row = (
            await self._conn.execute(
                text(
                    f"SELECT {_JOB_COLUMNS}, created_at FROM {self._s}.print_jobs"
                    " WHERE card_id = :c"
                ),
                {"c": card_id},
            )
        ).first()
        return None if row is None else PrintJob(*row)

    async def add_job(self, job: PrintJob) -> None:
        values: dict[str, Any] = {
            name: getattr(job, name) for name in _JOB_COLUMNS.replace(" ", "").split(",")
        }
        placeholders = ", ".join(f":{name}" for name in values)
        await self._conn.execute(
            text(f"INSERT INTO {self._s}.print_jobs ({_JOB_COLUMNS}) VALUES ({placeholders})"),
            values,
        )
