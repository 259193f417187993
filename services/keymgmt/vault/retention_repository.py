"""keymgmt's SQL for retention: each card's milestones, the issuers' windows, and the
deletions themselves (services/keymgmt/vault/retention.py says when)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from services.keymgmt.sql import SqlRepository

Milestone = Literal["personalized_at", "finished_at", "dispatched_at"]

# Sensitive authentication data may go once the card is finished for good (destroyed or
# cancelled), or personalized (QA passed) with no PIN mailer to print, or with it printed.
_SAD_DUE = """
    SELECT r.card_id, r.issuer_id FROM card_retention r
    WHERE r.sad_purged_at IS NULL
      AND (r.finished_at IS NOT NULL
           OR (r.personalized_at IS NOT NULL
               AND (NOT EXISTS (SELECT 1 FROM card_pins p WHERE p.card_id = r.card_id)
                    OR EXISTS (SELECT 1 FROM pin_mailers m
                               WHERE m.card_id = r.card_id AND m.status = 'printed'))))
    ORDER BY r.card_id LIMIT :limit FOR UPDATE OF r SKIP LOCKED
"""

# Cardholder data goes a window after dispatch (the issuer's, else the default), or at once
# when the card was finished without being dispatched and its SAD is gone.
_CARDHOLDER_DUE = """
    SELECT r.card_id, r.issuer_id, r.sad_purged_at FROM card_retention r
    LEFT JOIN retention_policies p ON p.issuer_id = r.issuer_id
    WHERE r.cardholder_purged_at IS NULL
      AND ((r.dispatched_at IS NOT NULL
            AND r.dispatched_at + make_interval(days => coalesce(p.cardholder_days, :days))
                <= :now)
           OR (r.finished_at IS NOT NULL AND r.dispatched_at IS NULL))
    ORDER BY r.card_id LIMIT :limit FOR UPDATE OF r SKIP LOCKED
"""


class RetentionRepository(SqlRepository):
    async def note(
        self, milestone: Milestone, issuer_id: str, card_ids: Sequence[UUID], at: datetime
    ) -> None:
        """Record a milestone (the first time it is seen counts)."""
        if not card_ids:
            return
        await self._all(
            f"INSERT INTO card_retention (card_id, issuer_id, {milestone})"  # noqa: S608
            " SELECT unnest(CAST(:ids AS uuid[])), :issuer, :at"
            f" ON CONFLICT (card_id) DO UPDATE SET {milestone} ="
            f" coalesce(card_retention.{milestone}, EXCLUDED.{milestone}) RETURNING card_id",
            ids=list(card_ids),
            issuer=issuer_id,
            at=at,
        )

    async def set_policy(self, issuer_id: str, days: int, who: str) -> None:
        await self._all(
            "INSERT INTO retention_policies (issuer_id, cardholder_days, updated_by)"
            " VALUES (:i, :d, :w) ON CONFLICT (issuer_id) DO UPDATE SET"
            " cardholder_days = :d, updated_by = :w, updated_at = now() RETURNING issuer_id",
            i=issuer_id,
            d=days,
            w=who,
        )

    async def policy(self, issuer_id: str) -> dict[str, Any] | None:
        return await self._one(
            "SELECT issuer_id, cardholder_days, updated_by, updated_at"
            " FROM retention_policies WHERE issuer_id = :i",
            i=issuer_id,
        )

    async def sad_due(self, limit: int) -> list[dict[str, Any]]:
        return await self._all(_SAD_DUE, limit=limit)

    async def cardholder_due(self, now: datetime, days: int, limit: int) -> list[dict[str, Any]]:
        return await self._all(_CARDHOLDER_DUE, now=now, days=days, limit=limit)

    async def delete_sad(self, card_ids: Sequence[UUID], now: datetime) -> None:
        ids = list(card_ids)
        await self._all("DELETE FROM card_pins WHERE card_id = ANY(:ids) RETURNING 1", ids=ids)
        await self._all(
            "DELETE FROM card_verification_values WHERE card_id = ANY(:ids) RETURNING 1", ids=ids
        )
        # The offline PIN wrapped for the chip (EMV profile): a PIN too, needed only to
        # personalise the card.
        await self._all(
            "DELETE FROM card_offline_pins WHERE card_id = ANY(:ids) RETURNING 1", ids=ids
        )
        await self._all(
            "UPDATE card_retention SET sad_purged_at = coalesce(sad_purged_at, :now)"
            " WHERE card_id = ANY(:ids) RETURNING 1",
            ids=ids,
            now=now,
        )

    async def delete_cardholder(self, card_ids: Sequence[UUID], now: datetime) -> None:
        """The vault record, and any SAD left (a PIN block is useless without its PAN)."""
        ids = list(card_ids)
        await self.delete_sad(ids, now)
        await self._all("DELETE FROM vault_cards WHERE card_id = ANY(:ids) RETURNING 1", ids=ids)
        await self._all(
            "UPDATE card_retention SET cardholder_purged_at = :now WHERE card_id = ANY(:ids)"
            " RETURNING 1",
            ids=ids,
            now=now,
        )
