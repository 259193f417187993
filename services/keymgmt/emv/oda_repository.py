"""keymgmt's SQL for offline data authentication (migration 0071): trusted CA public keys,
issuer certificates, the ICC key pool, a card's ODA row and its offline PIN wrap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import text

from services.keymgmt.sql import SqlRepository


def _one(rows: Any) -> dict[str, Any] | None:
    row = rows.mappings().first()
    return None if row is None else dict(row)


class OdaRepository(SqlRepository):
    async def put_ca_key(self, row: dict[str, Any]) -> None:
        await self.conn.execute(
            text(
                "INSERT INTO ca_public_keys (rid, ca_index, modulus, exponent, expires, source,"
                " added_by) VALUES (:rid, :ca_index, :modulus, :exponent, :expires, :source,"
                " :added_by) ON CONFLICT (rid, ca_index) DO UPDATE SET modulus = EXCLUDED.modulus,"
                " exponent = EXCLUDED.exponent, expires = EXCLUDED.expires,"
                " source = EXCLUDED.source, added_by = EXCLUDED.added_by, added_at = now()"
            ),
            row,
        )

    async def ca_key(self, rid: str, ca_index: str) -> dict[str, Any] | None:
        return _one(
            await self.conn.execute(
                text("SELECT * FROM ca_public_keys WHERE rid = :r AND ca_index = :i"),
                {"r": rid, "i": ca_index},
            )
        )

    async def put_issuer_certificate(self, row: dict[str, Any]) -> None:
        await self.conn.execute(
            text(
                "INSERT INTO issuer_certificates (issuer_id, key_label, rid, ca_index, certificate,"
                " remainder, exponent, serial, expires, origin, added_by) VALUES (:issuer_id,"
                " :key_label, :rid, :ca_index, :certificate, :remainder, :exponent, :serial,"
                " :expires, :origin, :added_by) ON CONFLICT (issuer_id, key_label) DO UPDATE SET"
                " rid = EXCLUDED.rid, ca_index = EXCLUDED.ca_index,"
                " certificate = EXCLUDED.certificate, remainder = EXCLUDED.remainder,"
                " exponent = EXCLUDED.exponent, serial = EXCLUDED.serial,"
                " expires = EXCLUDED.expires, origin = EXCLUDED.origin,"
                " added_by = EXCLUDED.added_by, added_at = now()"
            ),
            row,
        )

    async def issuer_certificate(self, issuer_id: str, key_label: str) -> dict[str, Any] | None:
        return _one(
            await self.conn.execute(
                text("SELECT * FROM issuer_certificates WHERE issuer_id = :i AND key_label = :k"),
                {"i": issuer_id, "k": key_label},
            )
        )

    # -- the ICC key pool --------------------------------------------------------------------
    async def add_pool_pairs(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Store the pairs; their pool ids, in the order given."""
        ids: list[int] = []
        for row in rows:
            result = await self.conn.execute(
                text(
                    "INSERT INTO icc_key_pool (pool_key_label, bits, modulus, exponent, wrapped)"
                    " VALUES (:pool_key_label, :bits, :modulus, :exponent, :wrapped) RETURNING id"
                ),
                row,
            )
            ids.append(int(result.scalar_one()))
        return ids

    async def free_pool_pairs(self) -> int:
        rows = await self.conn.execute(
            text("SELECT count(*) FROM icc_key_pool WHERE taken_by IS NULL")
        )
        return int(rows.scalar_one())

    async def draw_pool_pairs(self, card_ids: Sequence[UUID]) -> list[dict[str, Any]]:
        """One free pair per card (skipping pairs other transactions are drawing), marked
        taken by the card; fewer rows than cards when the pool runs dry."""
        if not card_ids:
            return []
        rows = await self.conn.execute(
            text(
                "WITH free AS (SELECT id FROM icc_key_pool WHERE taken_by IS NULL ORDER BY id"
                " LIMIT :count FOR UPDATE SKIP LOCKED),"
                " numbered AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM free),"
                " cards AS (SELECT c, ordinality AS n FROM unnest(CAST(:cards AS uuid[]))"
                " WITH ORDINALITY AS t(c, ordinality))"
                " UPDATE icc_key_pool p SET taken_by = cards.c, taken_at = now()"
                " FROM numbered JOIN cards ON cards.n = numbered.n WHERE p.id = numbered.id"
                " RETURNING p.id, p.taken_by, p.pool_key_label, p.modulus, p.exponent"
            ),
            {"count": len(card_ids), "cards": list(card_ids)},
        )
        return [dict(r) for r in rows.mappings()]

    async def pool_pair(self, pool_id: int) -> dict[str, Any] | None:
        return _one(
            await self.conn.execute(
                text("SELECT * FROM icc_key_pool WHERE id = :i"), {"i": pool_id}
            )
        )

    # -- a card's ODA data and offline PIN ---------------------------------------------------
    async def put_card_oda(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.conn.execute(
                text(
                    "INSERT INTO card_oda (card_id, issuer_id, issuer_key_label, pool_id,"
                    " effective, static_hash, sda, icc_certificate) VALUES (:card_id,"
                    " :issuer_id, :issuer_key_label, :pool_id, :effective, :static_hash, :sda,"
                    " :icc_certificate)"
                ),
                list(rows),
            )

    async def card_oda(self, card_id: UUID) -> dict[str, Any] | None:
        return _one(
            await self.conn.execute(
                text("SELECT * FROM card_oda WHERE card_id = :c"), {"c": card_id}
            )
        )

    async def put_offline_pins(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.conn.execute(
                text(
                    "INSERT INTO card_offline_pins (card_id, storage_key_label, wrapped)"
                    " VALUES (:card_id, :storage_key_label, :wrapped)"
                ),
                list(rows),
            )

    async def offline_pin(self, card_id: UUID) -> dict[str, Any] | None:
        return _one(
            await self.conn.execute(
                text("SELECT * FROM card_offline_pins WHERE card_id = :c"), {"c": card_id}
            )
        )
