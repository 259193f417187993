"""keymgmt's SQL for the PAN vault and its access log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import text

from services.keymgmt.sql import SqlRepository


class VaultRepository(SqlRepository):
    async def vault_cards(self, card_ids: Sequence[UUID]) -> dict[UUID, dict[str, Any]]:
        rows = await self._all(
            "SELECT card_id, issuer_id, pan_token, pan_hash, masked_pan FROM vault_cards"
            " WHERE card_id = ANY(:ids)",
            ids=list(card_ids),
        )
        return {r["card_id"]: r for r in rows}

    async def add_vault_cards(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.conn.execute(
                text(
                    "INSERT INTO vault_cards (card_id, issuer_id, pan_token, pan_hash, pan_blob,"
                    " record_blob, masked_pan) VALUES (:card_id, :issuer_id, :pan_token,"
                    " :pan_hash, :pan_blob, :record_blob, :masked_pan)"
                ),
                list(rows),
            )

    async def forget_unprepared(
        self, issuer_id: str, card_ids: Sequence[UUID]
    ) -> tuple[list[UUID], list[UUID]]:
        """Delete the issuer's vault records of these cards unless keymgmt prepared the card
        (its order went on); (deleted, kept)."""
        kept = await self._all(
            "SELECT card_id FROM prepared_cards WHERE card_id = ANY(:ids)", ids=list(card_ids)
        )
        keep = [r["card_id"] for r in kept]
        deleted = await self._all(
            "DELETE FROM vault_cards WHERE issuer_id = :i AND card_id = ANY(:ids)"
            " AND NOT (card_id = ANY(:keep)) RETURNING card_id",
            i=issuer_id,
            ids=list(card_ids),
            keep=keep,
        )
        return [r["card_id"] for r in deleted], keep

    async def vault_card(self, card_id: UUID) -> dict[str, Any] | None:
        return await self._one(
            "SELECT card_id, issuer_id, pan_token, pan_blob, record_blob, masked_pan"
            " FROM vault_cards WHERE card_id = :c",
            c=card_id,
        )

    async def record_access(self, accesses: Iterable[tuple[UUID, str, str]]) -> None:
        rows = [{"c": c, "a": who, "p": purpose} for c, who, purpose in accesses]
        if rows:
            await self.conn.execute(
                text("INSERT INTO vault_access (card_id, accessor, purpose) VALUES (:c, :a, :p)"),
                rows,
            )
