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
    job_name: str | None = None
    ipp_job_id: int | None = None
    attempts: int = 0
    rejections: int = 0
    last_problem: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    traceparent: str | None = None  # the card's trace, from its card.encoded


_JOB_COLUMNS = (
    "job_id, card_id, batch_id, issuer_id, chip_serial, printer, design_id, status,"
    " image_sha256, location, reason, source_event_id, job_name"
)
_READ_COLUMNS = (
    f"{_JOB_COLUMNS}, ipp_job_id, attempts, rejections, last_problem, created_at, updated_at,"
    " traceparent"
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

    async def save_photo(
        self, card_id: UUID, issuer_id: str, photo: bytes, sha256: str, by: str
    ) -> bool:
        """False when the card's photo belongs to another issuer (nothing is changed)."""
        row = (
            await self._conn.execute(
                text(
                    f"INSERT INTO {self._s}.photos (card_id, issuer_id, photo, sha256, uploaded_by)"
                    " VALUES (:c, :i, :p, :sha, :by) ON CONFLICT (card_id) DO UPDATE"
                    " SET photo = EXCLUDED.photo, sha256 = EXCLUDED.sha256,"
                    " uploaded_by = EXCLUDED.uploaded_by, uploaded_at = now()"
                    f" WHERE {self._s}.photos.issuer_id = EXCLUDED.issuer_id RETURNING card_id"
                ),
                {"c": card_id, "i": issuer_id, "p": photo, "sha": sha256, "by": by},
            )
        ).first()
        return row is not None

    async def photo_for(self, card_id: UUID, issuer_id: str) -> bytes | None:
        row = (
            await self._conn.execute(
                text(f"SELECT photo FROM {self._s}.photos WHERE card_id = :c AND issuer_id = :i"),
                {"c": card_id, "i": issuer_id},
            )
        ).first()
        return None if row is None else bytes(row[0])

    async def purge_photo(self, card_id: UUID) -> None:
        await self._conn.execute(
            text(f"DELETE FROM {self._s}.photos WHERE card_id = :c"), {"c": card_id}
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
                text(f"SELECT {_READ_COLUMNS} FROM {self._s}.print_jobs WHERE card_id = :c"),
                {"c": card_id},
            )
        ).first()
        return None if row is None else PrintJob(*row)

    async def add_job(self, job: PrintJob, document: bytes | None = None) -> None:
        values: dict[str, Any] = {
            name: getattr(job, name) for name in _JOB_COLUMNS.replace(" ", "").split(",")
        }
        placeholders = ", ".join(f":{name}" for name in values)
        await self._conn.execute(
            text(
                f"INSERT INTO {self._s}.print_jobs ({_JOB_COLUMNS}, traceparent, document)"
                f" VALUES ({placeholders}, :traceparent, :document)"
            ),
            values | {"traceparent": job.traceparent, "document": document},
        )

    async def claim_due_job(self, lease_s: float) -> PrintJob | None:
        """The oldest job due for work (submit, or follow on the printer), leased so that
        another replica leaves it alone until the lease ends."""
        row = (
            await self._conn.execute(
                text(
                    f"UPDATE {self._s}.print_jobs SET lease_until = now() + make_interval("
                    " secs => :lease) WHERE job_id = (SELECT job_id FROM"
                    f" {self._s}.print_jobs WHERE status IN ('queued', 'submitting', 'submitted')"
                    " AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now())"
                    " ORDER BY next_attempt_at, created_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
                    f" RETURNING {_READ_COLUMNS}"
                ),
                {"lease": lease_s},
            )
        ).first()
        return None if row is None else PrintJob(*row)

    async def document(self, job_id: UUID) -> bytes | None:
        row = (
            await self._conn.execute(
                text(f"SELECT document FROM {self._s}.print_jobs WHERE job_id = :j"),
                {"j": job_id},
            )
        ).first()
        return None if row is None or row[0] is None else bytes(row[0])

    async def drop_document(self, job_id: UUID) -> None:
        """Once a job is over, the bureau keeps the render's sha256, not the face itself."""
        await self._conn.execute(
            text(f"UPDATE {self._s}.print_jobs SET document = NULL WHERE job_id = :j"),
            {"j": job_id},
        )

    async def document_of_card(self, card_id: UUID) -> tuple[str, bytes] | None:
        """The rendered face of a job still waiting for the printer, and its sha256."""
        row = (
            await self._conn.execute(
                text(
                    f"SELECT image_sha256, document FROM {self._s}.print_jobs"
                    " WHERE card_id = :c AND document IS NOT NULL"
                ),
                {"c": card_id},
            )
        ).first()
        return None if row is None else (str(row[0]), bytes(row[1]))

    async def update_job(
        self,
        job_id: UUID,
        *,
        status: str,
        retry_in_s: float = 0.0,
        problem: str | None = None,
        **changes: Any,
    ) -> None:
        """Move a job on. `attempts`/`rejections` given as +1 through `count`; the lease ends."""
        allowed = {"ipp_job_id", "reason", "location", "attempts", "rejections"}
        if set(changes) - allowed:
            raise ValueError(f"cannot set {sorted(set(changes) - allowed)}")
        sets = "".join(f", {name} = :{name}" for name in changes)
        await self._conn.execute(
            text(
                f"UPDATE {self._s}.print_jobs SET status = :status, last_problem = :problem,"
                " next_attempt_at = now() + make_interval(secs => :retry), lease_until = NULL,"
                f" updated_at = now(){sets} WHERE job_id = :job_id"
            ),
            {"job_id": job_id, "status": status, "problem": problem, "retry": retry_in_s} | changes,
        )

    async def job_counts(self) -> dict[str, int]:
        rows = await self._conn.execute(
            text(f"SELECT status, count(*) FROM {self._s}.print_jobs GROUP BY status")
        )
        return {str(status): int(n) for status, n in rows}

    async def waiting_jobs(self, limit: int = 20) -> list[PrintJob]:
        rows = await self._conn.execute(
            text(
                f"SELECT {_READ_COLUMNS} FROM {self._s}.print_jobs"
                " WHERE status IN ('queued', 'submitting', 'submitted')"
                " ORDER BY created_at LIMIT :n"
            ),
            {"n": limit},
        )
        return [PrintJob(*row) for row in rows]
