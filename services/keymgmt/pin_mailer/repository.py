"""keymgmt's SQL for PIN mailers (their print jobs' states). No commits: the print state
machine (printing.py) commits each state as it is reached."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import text

from services.keymgmt.sql import SqlRepository

_COLUMNS = "mailer_id, card_id, batch_id, status, ipp_job_id, attempts, last_problem"


class PinMailerRepository(SqlRepository):
    async def mailer(self, card_id: UUID) -> dict[str, Any] | None:
        return await self._one(
            f"SELECT {_COLUMNS}, job_name FROM pin_mailers WHERE card_id = :c", c=card_id
        )

    async def add_mailer(self, mailer: dict[str, Any]) -> None:
        await self.conn.execute(
            text(
                "INSERT INTO pin_mailers (mailer_id, card_id, batch_id, issuer_id, job_name,"
                " status, requested_by) VALUES (:m, :c, :b, :i, :j, 'queued', :by)"
            ),
            mailer,
        )

    async def update(self, card_id: UUID, **changes: Any) -> None:
        sets = ", ".join(f"{name} = :{name}" for name in changes)
        await self.conn.execute(
            text(f"UPDATE pin_mailers SET {sets}, updated_at = now() WHERE card_id = :card_id"),
            changes | {"card_id": card_id},
        )

    async def lock_card(self, card_id: UUID) -> None:
        """A session lock: one request per card at a time across keymgmt replicas."""
        await self.conn.execute(
            text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"), {"k": _lock(card_id)}
        )

    async def unlock_card(self, card_id: UUID) -> None:
        await self.conn.execute(
            text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": _lock(card_id)}
        )


def _lock(card_id: UUID) -> str:
    return f"pin-mailer/{card_id}"
