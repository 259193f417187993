"""All of intake's SQL: issuers, products, stock and orders here; following an order (the card
status projection, cancellations, webhooks, planning) in tracking_repository.py, whose queries
IntakeRepository inherits so that a unit of work carries one repository."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import text

from services.intake.tracking_repository import TrackingRepository


class IntakeRepository(TrackingRepository):
    async def issuer_for_digest(self, digest: str) -> str | None:
        row = (
            await self.conn.execute(
                text(
                    "SELECT issuer_id FROM issuer_credentials"
                    " WHERE digest = :d AND revoked_at IS NULL"
                ),
                {"d": digest},
            )
        ).first()
        return None if row is None else str(row[0])

    async def add_issuer(self, issuer_id: str, name: str) -> bool:
        result = await self.conn.execute(
            text(
                "INSERT INTO issuers (issuer_id, name) VALUES (:i, :n)"
                " ON CONFLICT (issuer_id) DO NOTHING RETURNING issuer_id"
            ),
            {"i": issuer_id, "n": name},
        )
        return result.first() is not None

    async def issuer_exists(self, issuer_id: str) -> bool:
        row = await self.conn.execute(
            text("SELECT 1 FROM issuers WHERE issuer_id = :i"), {"i": issuer_id}
        )
        return row.first() is not None

    async def add_credential(self, issuer_id: str, digest: str) -> None:
        await self.conn.execute(
            text("INSERT INTO issuer_credentials (digest, issuer_id) VALUES (:d, :i)"),
            {"d": digest, "i": issuer_id},
        )

    async def revoke_credentials(self, issuer_id: str) -> int:
        result = await self.conn.execute(
            text(
                "UPDATE issuer_credentials SET revoked_at = now()"
                " WHERE issuer_id = :i AND revoked_at IS NULL RETURNING digest"
            ),
            {"i": issuer_id},
        )
        return len(result.all())

    async def add_product(self, issuer_id: str, product_id: str, name: str, kind: str) -> bool:
        result = await self.conn.execute(
            text(
                "INSERT INTO products (issuer_id, product_id, name, kind)"
                " VALUES (:i, :p, :n, :k) ON CONFLICT DO NOTHING RETURNING product_id"
            ),
            {"i": issuer_id, "p": product_id, "n": name, "k": kind},
        )
        return result.first() is not None

    async def product_kind(self, issuer_id: str, product_id: str) -> str | None:
        row = (
            await self.conn.execute(
                text("SELECT kind FROM products WHERE issuer_id = :i AND product_id = :p"),
                {"i": issuer_id, "p": product_id},
            )
        ).first()
        return None if row is None else str(row[0])

    async def lock_stock(self, issuer_id: str, product_id: str) -> None:
        """Serialise stock decisions per product so two orders cannot spend the same blanks."""
        await self.conn.execute(
            text("SELECT 1 FROM products WHERE issuer_id = :i AND product_id = :p FOR UPDATE"),
            {"i": issuer_id, "p": product_id},
        )

    async def stock_on_hand(self, issuer_id: str, product_id: str) -> int:
        row = (
            await self.conn.execute(
                text(
                    "SELECT COALESCE(SUM(CASE WHEN kind IN ('received', 'returned') THEN quantity"
                    " ELSE -quantity END), 0) FROM stock_movements"
                    " WHERE issuer_id = :i AND product_id = :p"
                ),
                {"i": issuer_id, "p": product_id},
            )
        ).one()
        return int(row[0])

    async def stock_levels(self, issuer_id: str | None) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            text(
                "SELECT issuer_id, product_id, kind, SUM(quantity) FROM stock_movements"
                " WHERE (CAST(:i AS text) IS NULL OR issuer_id = :i)"
                " GROUP BY issuer_id, product_id, kind ORDER BY 1, 2, 3"
            ),
            {"i": issuer_id},
        )
        levels: dict[tuple[str, str], dict[str, Any]] = {}
        for issuer, product, kind, quantity in rows:
            entry = levels.setdefault(
                (issuer, product), {"issuer_id": issuer, "product_id": product}
            )
            entry[kind] = int(quantity)
        for entry in levels.values():
            entry["on_hand"] = (
                entry.get("received", 0)
                + entry.get("returned", 0)
                - entry.get("issued", 0)
                - entry.get("destroyed", 0)
            )
        return list(levels.values())

    async def add_stock_movement(
        self,
        *,
        issuer_id: str,
        product_id: str,
        kind: str,
        quantity: int,
        actor: str,
        lot_id: str | None = None,
        batch_id: UUID | None = None,
    ) -> bool:
        result = await self.conn.execute(
            text(
                "INSERT INTO stock_movements"
                " (issuer_id, product_id, kind, quantity, lot_id, batch_id, actor)"
                " VALUES (:i, :p, :k, :q, :l, :b, :a) ON CONFLICT DO NOTHING RETURNING id"
            ),
            {
                "i": issuer_id,
                "p": product_id,
                "k": kind,
                "q": quantity,
                "l": lot_id,
                "b": batch_id,
                "a": actor,
            },
        )
        return result.first() is not None

    async def add_stock_destruction_request(self, request: dict[str, Any]) -> None:
        await self.conn.execute(
            text(
                "INSERT INTO stock_destruction_requests"
                " (request_id, issuer_id, product_id, quantity, reason, requested_by)"
                " VALUES (:request_id, :issuer_id, :product_id, :quantity, :reason, :requested_by)"
            ),
            request,
        )

    async def stock_destruction_request(
        self, request_id: UUID, *, for_update: bool = False
    ) -> dict[str, Any] | None:
        lock = " FOR UPDATE" if for_update else ""
        row = (
            (
                await self.conn.execute(
                    text(f"SELECT * FROM stock_destruction_requests WHERE request_id = :r{lock}"),
                    {"r": request_id},
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else dict(row)

    async def confirm_stock_destruction(self, request_id: UUID, confirmed_by: str) -> None:
        await self.conn.execute(
            text(
                "UPDATE stock_destruction_requests SET state = 'confirmed', confirmed_by = :by,"
                " confirmed_at = now() WHERE request_id = :r AND state = 'pending'"
            ),
            {"r": request_id, "by": confirmed_by},
        )

    async def order_by_key(self, issuer_id: str, key: str) -> dict[str, Any] | None:
        row = (
            (
                await self.conn.execute(
                    text("SELECT * FROM orders WHERE issuer_id = :i AND idempotency_key = :k"),
                    {"i": issuer_id, "k": key},
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else dict(row)

    async def order(self, issuer_id: str, order_id: UUID) -> dict[str, Any] | None:
        row = (
            (
                await self.conn.execute(
                    text("SELECT * FROM orders WHERE issuer_id = :i AND order_id = :o"),
                    {"i": issuer_id, "o": order_id},
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else dict(row)

    async def cards_of(self, order_id: UUID) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            text(
                "SELECT card_id, sequence, masked_pan, expiry FROM cards"
                " WHERE order_id = :o ORDER BY sequence"
            ),
            {"o": order_id},
        )
        return [dict(r) for r in rows.mappings()]

    async def add_order(self, order: dict[str, Any], cards: list[dict[str, Any]]) -> None:
        await self.conn.execute(
            text(
                "INSERT INTO orders (order_id, issuer_id, external_ref, idempotency_key,"
                " request_mac, product_id, card_count, batch_id, status, priority, source)"
                " VALUES (:order_id, :issuer_id, :external_ref, :idempotency_key,"
                " :request_mac, :product_id, :card_count, :batch_id, :status, :priority,"
                " :source)"
            ),
            {"priority": 0, "source": "json"} | order,
        )
        if cards:
            await self.add_cards(cards)

    async def add_cards(self, cards: list[dict[str, Any]]) -> None:
        """One statement per chunk of cards of one order (unnest: one round trip)."""
        first = cards[0]
        await self.conn.execute(
            text(
                "INSERT INTO cards (card_id, order_id, issuer_id, batch_id, sequence,"
                " masked_pan, pan_token, expiry) SELECT c, :o, :i, :b, s, m, t, e FROM"
                " unnest(CAST(:ids AS uuid[]), CAST(:seq AS int[]), CAST(:masked AS text[]),"
                " CAST(:tokens AS text[]), CAST(:expiry AS text[])) AS u(c, s, m, t, e)"
            ),
            {
                "o": first["order_id"],
                "i": first["issuer_id"],
                "b": first["batch_id"],
                "ids": [c["card_id"] for c in cards],
                "seq": [c["sequence"] for c in cards],
                "masked": [c["masked_pan"] for c in cards],
                "tokens": [c["pan_token"] for c in cards],
                "expiry": [c["expiry"] for c in cards],
            },
        )

    # -- bulk files: duplicate PANs found in Postgres, not in memory ---------------------------
    async def open_duplicate_check(self) -> None:
        """Keyed digests of (PAN, PSN) per line, dropped with the transaction."""
        await self.conn.execute(
            text(
                "CREATE TEMP TABLE bulk_seen (digest bytea NOT NULL, line integer NOT NULL)"
                " ON COMMIT DROP"
            )
        )

    async def add_seen(self, digests: list[bytes], lines: list[int]) -> None:
        if digests:
            await self.conn.execute(
                text(
                    "INSERT INTO bulk_seen SELECT * FROM"
                    " unnest(CAST(:d AS bytea[]), CAST(:l AS int[]))"
                ),
                {"d": digests, "l": lines},
            )

    async def duplicate_lines(self, limit: int) -> list[tuple[int, int]]:
        """(line, first line with the same PAN and PSN) for every repeat, by line."""
        rows = await self.conn.execute(
            text(
                "SELECT line, first FROM (SELECT line, min(line) OVER (PARTITION BY digest)"
                " AS first FROM bulk_seen) s WHERE line <> first ORDER BY line LIMIT :n"
            ),
            {"n": limit},
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    # -- vault take-backs: card ids in the vault whose order has not committed (takeback.py) --
    async def open_takeback(self, issuer_id: str, card_ids: list[UUID]) -> int:
        row = await self.conn.execute(
            text("INSERT INTO vault_takebacks (issuer_id, card_ids) VALUES (:i, :c) RETURNING id"),
            {"i": issuer_id, "c": card_ids},
        )
        return int(row.scalar_one())

    async def close_takebacks(self, row_ids: list[int]) -> None:
        """Deleted: in the order's transaction (back if it fails), or once keymgmt confirmed."""
        await self.conn.execute(
            text("DELETE FROM vault_takebacks WHERE id = ANY(:ids)"), {"ids": row_ids}
        )

    async def due_takeback(self) -> dict[str, Any] | None:
        """The oldest due take-back no in-flight order holds (its transaction locks the row)."""
        rows = await self._rows(
            "SELECT id, issuer_id, card_ids, attempts FROM vault_takebacks"
            " WHERE next_at <= now() ORDER BY next_at LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
        return rows[0] if rows else None

    async def takeback_failed(self, row_id: int, problem: str, delay_s: float) -> None:
        await self.conn.execute(
            text(
                "UPDATE vault_takebacks SET attempts = attempts + 1, last_error = :p,"
                " next_at = now() + make_interval(secs => :d) WHERE id = :id"
            ),
            {"id": row_id, "p": problem[:500], "d": delay_s},
        )
