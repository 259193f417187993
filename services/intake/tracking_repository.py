"""SQL of following an order: the card status projection, an order's events, cancellations,
webhooks and their durable delivery outbox, and batch planning. Every read is scoped to the
issuer that asks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

CANCELLABLE = ("ordered", "prepared")


class TrackingRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def _rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in (await self.conn.execute(text(sql), params)).mappings()]

    # -- orders and cards ---------------------------------------------------------------------
    async def orders(self, issuer_id: str, limit: int, before: datetime | None) -> list[Any]:
        return await self._rows(
            "SELECT * FROM orders WHERE issuer_id = :i"
            " AND (CAST(:before AS timestamptz) IS NULL OR created_at < :before)"
            " ORDER BY created_at DESC LIMIT :n",
            i=issuer_id,
            before=before,
            n=limit,
        )

    async def status_counts(self, order_id: UUID) -> dict[str, int]:
        rows = await self.conn.execute(
            text("SELECT status, count(*) FROM cards WHERE order_id = :o GROUP BY status"),
            {"o": order_id},
        )
        return {str(status): int(n) for status, n in rows}

    async def cards_page(self, order_id: UUID, after: int, limit: int) -> list[dict[str, Any]]:
        return await self._rows(
            "SELECT card_id, order_id, sequence, masked_pan, expiry, status, status_at"
            " FROM cards WHERE order_id = :o AND sequence > :after ORDER BY sequence LIMIT :n",
            o=order_id,
            after=after,
            n=limit,
        )

    async def card(self, issuer_id: str, card_id: UUID) -> dict[str, Any] | None:
        rows = await self._rows(
            "SELECT card_id, order_id, sequence, masked_pan, expiry, status, status_at"
            " FROM cards WHERE issuer_id = :i AND card_id = :c",
            i=issuer_id,
            c=card_id,
        )
        return rows[0] if rows else None

    async def advance_cards(
        self, issuer_id: str, card_ids: Sequence[UUID], status: str, rank: int, at: datetime
    ) -> list[tuple[UUID, UUID]]:
        """Move the issuer's cards to `status` unless they are already further; returns
        (card_id, order_id) of every one of the issuer's cards named, moved or not."""
        known = await self._rows(
            "SELECT card_id, order_id FROM cards WHERE issuer_id = :i"
            " AND card_id = ANY(CAST(:ids AS uuid[]))",
            i=issuer_id,
            ids=list(card_ids),
        )
        await self.conn.execute(
            text(
                "UPDATE cards SET status = :s, status_rank = :r, status_at = :at"
                " WHERE issuer_id = :i AND card_id = ANY(CAST(:ids AS uuid[]))"
                " AND status_rank < :r"
            ),
            {"s": status, "r": rank, "at": at, "i": issuer_id, "ids": list(card_ids)},
        )
        return [(r["card_id"], r["order_id"]) for r in known]

    async def lock_cancellable(
        self, order_id: UUID, card_ids: Sequence[UUID] | None
    ) -> list[dict[str, Any]]:
        """The order's named cards (all of them when None), locked, with their status."""
        return await self._rows(
            "SELECT card_id, batch_id, status FROM cards WHERE order_id = :o"
            " AND (CAST(:ids AS uuid[]) IS NULL OR card_id = ANY(CAST(:ids AS uuid[])))"
            " ORDER BY sequence FOR UPDATE",
            o=order_id,
            ids=None if card_ids is None else list(card_ids),
        )

    async def cancel_cards(self, card_ids: Sequence[UUID], rank: int, at: datetime) -> None:
        await self.conn.execute(
            text(
                "UPDATE cards SET status = 'cancelled', status_rank = :r, status_at = :at"
                " WHERE card_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"r": rank, "at": at, "ids": list(card_ids)},
        )

    async def set_order_status(self, order_id: UUID, status: str) -> None:
        await self.conn.execute(
            text("UPDATE orders SET status = :s WHERE order_id = :o"), {"s": status, "o": order_id}
        )

    # -- an order's events --------------------------------------------------------------------
    async def add_order_events(self, rows: Sequence[dict[str, Any]]) -> None:
        """rows: order_id, issuer_id, event_id, type, card_id, occurred_at, detail (dict)."""
        if rows:
            await self.conn.execute(
                text(
                    "INSERT INTO order_events (order_id, issuer_id, event_id, type, card_id,"
                    " occurred_at, detail) VALUES (:order_id, :issuer_id, :event_id, :type,"
                    " :card_id, :occurred_at, CAST(:detail AS jsonb)) ON CONFLICT DO NOTHING"
                ),
                [r | {"detail": json.dumps(r["detail"])} for r in rows],
            )

    async def order_events(self, order_id: UUID, after: int, limit: int) -> list[dict[str, Any]]:
        return await self._rows(
            "SELECT id, event_id, type, card_id, occurred_at, detail FROM order_events"
            " WHERE order_id = :o AND id > :after ORDER BY id LIMIT :n",
            o=order_id,
            after=after,
            n=limit,
        )

    # -- webhooks -----------------------------------------------------------------------------
    async def set_webhook(self, issuer_id: str, url: str, secret_blob: bytes) -> datetime:
        row = (
            await self.conn.execute(
                text(
                    "INSERT INTO webhooks (issuer_id, url, secret_blob) VALUES (:i, :u, :s)"
                    " ON CONFLICT (issuer_id) DO UPDATE SET url = :u, secret_blob = :s,"
                    " updated_at = now() RETURNING updated_at"
                ),
                {"i": issuer_id, "u": url, "s": secret_blob},
            )
        ).one()
        updated_at: datetime = row[0]
        return updated_at

    async def webhook(self, issuer_id: str) -> dict[str, Any] | None:
        rows = await self._rows("SELECT * FROM webhooks WHERE issuer_id = :i", i=issuer_id)
        return rows[0] if rows else None

    async def delete_webhook(self, issuer_id: str) -> bool:
        result = await self.conn.execute(
            text("DELETE FROM webhooks WHERE issuer_id = :i RETURNING issuer_id"),
            {"i": issuer_id},
        )
        return result.first() is not None

    async def enqueue_webhooks(self, rows: Sequence[dict[str, Any]]) -> None:
        """rows: delivery_id, issuer_id, type, body. Kept only for issuers with a webhook."""
        if rows:
            await self.conn.execute(
                text(
                    "INSERT INTO webhook_deliveries (delivery_id, issuer_id, type, body)"
                    " SELECT :delivery_id, :issuer_id, :type, :body"
                    " WHERE EXISTS (SELECT 1 FROM webhooks WHERE issuer_id = :issuer_id)"
                    " ON CONFLICT (delivery_id) DO NOTHING"
                ),
                list(rows),
            )

    async def claim_deliveries(self, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
        """Due deliveries, leased so another replica does not send them meanwhile."""
        return await self._rows(
            "UPDATE webhook_deliveries d SET next_attempt_at = now()"
            " + make_interval(secs => :lease) FROM webhooks w"
            " WHERE d.id IN (SELECT id FROM webhook_deliveries WHERE delivered_at IS NULL"
            " AND failed_at IS NULL AND next_attempt_at <= now() ORDER BY next_attempt_at"
            " LIMIT :n FOR UPDATE SKIP LOCKED) AND w.issuer_id = d.issuer_id"
            " RETURNING d.id, d.delivery_id, d.issuer_id, d.type, d.body, d.attempts,"
            " w.url, w.secret_blob",
            lease=lease_seconds,
            n=limit,
        )

    async def delivered(self, delivery_id: int) -> None:
        await self.conn.execute(
            text(
                "UPDATE webhook_deliveries SET delivered_at = now(), attempts = attempts + 1,"
                " last_error = NULL WHERE id = :d"
            ),
            {"d": delivery_id},
        )

    async def delivery_failed(self, delivery_id: int, error: str, retry_in: float | None) -> None:
        """Another attempt in `retry_in` seconds, or given up for good when None."""
        await self.conn.execute(
            text(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = :e,"
                " next_attempt_at = now() + make_interval(secs => coalesce(:r, 0)),"
                " failed_at = CASE WHEN CAST(:r AS float8) IS NULL THEN now() END"
                " WHERE id = :d"
            ),
            {"d": delivery_id, "e": error[:500], "r": retry_in},
        )

    async def deliveries(self, issuer_id: str, limit: int) -> list[dict[str, Any]]:
        return await self._rows(
            "SELECT delivery_id, type, attempts, next_attempt_at, delivered_at, failed_at,"
            " last_error FROM webhook_deliveries WHERE issuer_id = :i ORDER BY id DESC LIMIT :n",
            i=issuer_id,
            n=limit,
        )

    # -- stock and planning -------------------------------------------------------------------
    async def stock_of_batch(self, issuer_id: str, product_id: str, batch_id: UUID) -> int:
        """Blanks issued to a batch and not yet returned."""
        row = (
            await self.conn.execute(
                text(
                    "SELECT COALESCE(SUM(CASE kind WHEN 'issued' THEN quantity"
                    " WHEN 'returned' THEN -quantity ELSE 0 END), 0) FROM stock_movements"
                    " WHERE issuer_id = :i AND product_id = :p AND batch_id = :b"
                ),
                {"i": issuer_id, "p": product_id, "b": batch_id},
            )
        ).one()
        return int(row[0])

    async def plan(self) -> list[dict[str, Any]]:
        """Accepted orders with cards still to produce, by product, highest priority first."""
        return await self._rows(
            "SELECT o.issuer_id, o.product_id, o.priority, o.order_id, o.created_at,"
            " count(c.card_id) AS waiting FROM orders o JOIN cards c USING (order_id)"
            " WHERE c.status IN ('ordered', 'prepared') GROUP BY o.order_id"
            " ORDER BY o.issuer_id, o.product_id, o.priority DESC, o.created_at"
        )
