"""All SQL of the station agent: the queue of prepared cards and each card's state."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.electrical.service import CLAIM_ORDER_COLUMNS, QueuedCard
from shared.db import checked_identifier

_QUEUED = "card_id, batch_id, batch_seq, seq, issuer_id, product_id, traceparent"
# Station planning: a queued card this station may claim, its batch assigned to the station.
# A batch (alias b) whose cards the station :station may claim: the claim's rule and readiness's
# count of "for this station" are this one condition.
_BATCH_FOR_STATION = "(b.any_station OR :station = ANY(b.stations))"
_FOR_STATION = (
    "state = 'queued' AND EXISTS (SELECT 1 FROM {s}.batches b WHERE b.batch_id = c.batch_id"
    f" AND {_BATCH_FOR_STATION})"
)


@dataclass(frozen=True)
class UnfinishedCard:
    card: QueuedCard
    state: str  # assigned | encoding
    chip_serial: str | None
    reader: str | None


@dataclass(frozen=True)
class StationQueue:
    """Queued cards by where their batch's assignment (batch.assigned) sends them."""

    for_this_station: int  # assigned to this station (or queued before station planning)
    other_stations: int  # assigned to other stations only
    parked: int  # assigned to no station: the planner parked the batch
    unplanned: int  # no assignment heard yet: waiting for the planner

    @property
    def waiting_elsewhere(self) -> int:
        return self.other_stations + self.parked + self.unplanned


class StationRepository:
    def __init__(self, conn: AsyncConnection, schema: str) -> None:
        self._conn = conn
        self._s = checked_identifier(schema)
        self._for_station = _FOR_STATION.format(s=self._s)

    async def enqueue(
        self,
        card_id: UUID,
        batch_id: UUID,
        issuer_id: str,
        product_id: str,
        event_id: UUID,
        traceparent: str | None = None,
    ) -> bool:
        """A prepared card joins the queue; False if it is already known (any state) or was
        cancelled before it arrived."""
        await self._conn.execute(
            text(f"INSERT INTO {self._s}.batches (batch_id) VALUES (:b) ON CONFLICT DO NOTHING"),
            {"b": batch_id},
        )
        row = (
            await self._conn.execute(
                text(
                    f"INSERT INTO {self._s}.station_cards"
                    " (card_id, batch_id, batch_seq, issuer_id, product_id, source_event_id,"
                    " traceparent)"
                    f" SELECT :c, :b, seq, :i, :p, :e, :t FROM {self._s}.batches"
                    " WHERE batch_id = :b"
                    f" AND NOT EXISTS (SELECT 1 FROM {self._s}.cancelled_cards WHERE card_id = :c)"
                    " ON CONFLICT (card_id) DO NOTHING RETURNING card_id"
                ),
                {
                    "c": card_id,
                    "b": batch_id,
                    "i": issuer_id,
                    "p": product_id,
                    "e": event_id,
                    "t": traceparent,
                },
            )
        ).first()
        return row is not None

    async def claim_next(self, chip_serial: str, station_id: str, reader: str) -> QueuedCard | None:
        """Bind the next queued card of a batch assigned to this station to this chip and reader;
        concurrent readers skip the rows others hold locked, so each card goes to exactly one
        reader."""
        order = ", ".join(CLAIM_ORDER_COLUMNS)
        row = (
            await self._conn.execute(
                text(
                    f"UPDATE {self._s}.station_cards SET state = 'assigned',"
                    " chip_serial = :chip, station_id = :station, reader = :reader,"
                    " assigned_at = now()"
                    f" WHERE card_id = (SELECT card_id FROM {self._s}.station_cards c"
                    f" WHERE {self._for_station} ORDER BY {order}"
                    " LIMIT 1 FOR UPDATE OF c SKIP LOCKED)"
                    f" RETURNING {_QUEUED}"
                ),
                {"chip": chip_serial, "station": station_id, "reader": reader},
            )
        ).first()
        return None if row is None else QueuedCard(*row)

    async def claim_for_chip(
        self, chip_serial: str, station_id: str, reader: str
    ) -> tuple[str | None, QueuedCard | None]:
        """(state of the card the chip is already bound to, None) for a used chip, which is
        never reused; else (None, the card claimed for it, if any is queued)."""
        bound = await self.chip_bound(chip_serial)
        if bound is not None:
            return bound, None
        return None, await self.claim_next(chip_serial, station_id, reader)

    async def has_queued(self, station_id: str) -> bool:
        """Whether a card this station may claim is queued."""
        row = await self._conn.execute(
            text(
                f"SELECT EXISTS (SELECT 1 FROM {self._s}.station_cards c WHERE {self._for_station})"
            ),
            {"station": station_id},
        )
        return bool(row.scalar_one())

    async def waiting_elsewhere(self, station_id: str) -> int:
        """Queued cards this station may not claim: their batch is assigned elsewhere, parked,
        or not assigned yet. They stay queued, never spoiled."""
        return (await self.queue_for(station_id)).waiting_elsewhere

    async def queue_for(self, station_id: str) -> StationQueue:
        """The queue as this station sees it, for its /ready (polled, so one cheap query): the
        queued cards are counted per batch from the claim index (state = 'queued', led by
        batch_seq) and each batch's count goes to where its assignment sends it."""
        row = await self._conn.execute(
            text(
                f"SELECT coalesce(sum(n) FILTER (WHERE {_BATCH_FOR_STATION}), 0),"
                " coalesce(sum(n) FILTER (WHERE NOT b.any_station AND cardinality(b.stations) > 0"
                " AND NOT :station = ANY(b.stations)), 0),"
                " coalesce(sum(n) FILTER (WHERE NOT b.any_station AND b.stations = '{}'), 0),"
                " coalesce(sum(n) FILTER (WHERE NOT b.any_station AND b.stations IS NULL), 0)"
                f" FROM (SELECT batch_seq, count(*) AS n FROM {self._s}.station_cards"
                " WHERE state = 'queued' GROUP BY batch_seq) q"
                f" JOIN {self._s}.batches b ON b.seq = q.batch_seq"
            ),
            {"station": station_id},
        )
        return StationQueue(*(int(n) for n in row.one()))

    async def assign(self, batch_id: UUID, stations: list[str], revision: int) -> bool:
        """keymgmt's assignment of the batch (batch.assigned), kept only if newer than the one
        held: records of one batch may arrive in any order. False when it was older."""
        row = await self._conn.execute(
            text(
                f"INSERT INTO {self._s}.batches AS b (batch_id, stations, revision)"
                " VALUES (:b, :st, :r) ON CONFLICT (batch_id) DO UPDATE SET"
                " stations = EXCLUDED.stations, revision = EXCLUDED.revision,"
                " any_station = false WHERE b.revision < EXCLUDED.revision RETURNING batch_id"
            ),
            {"b": batch_id, "st": stations, "r": revision},
        )
        return row.first() is not None

    async def not_assigned_here(self, batch_id: UUID, station_id: str) -> None:
        """keymgmt refused this station a card of the batch: the station stops claiming the
        batch until a newer assignment names it."""
        await self._conn.execute(
            text(
                f"UPDATE {self._s}.batches SET any_station = false,"
                " stations = array_remove(coalesce(stations, '{}'), :station)"
                " WHERE batch_id = :b"
            ),
            {"b": batch_id, "station": station_id},
        )

    async def chip_bound(self, chip_serial: str) -> str | None:
        """The state of the card this chip is bound to, if any (a used chip is never reused)."""
        row = await self._conn.execute(
            text(f"SELECT state FROM {self._s}.station_cards WHERE chip_serial = :chip"),
            {"chip": chip_serial},
        )
        return row.scalar_one_or_none()

    async def _move(self, card_id: UUID, to: str, frm: tuple[str, ...], **values: object) -> bool:
        sets = "".join(f", {name} = :{name}" for name in values)
        finished = ", finished_at = now()" if to in ("encoded", "spoiled", "cancelled") else ""
        row = (
            await self._conn.execute(
                text(
                    f"UPDATE {self._s}.station_cards SET state = :to{sets}{finished}"
                    " WHERE card_id = :card_id AND state = ANY(:frm) RETURNING card_id"
                ),
                {"card_id": card_id, "to": to, "frm": list(frm), **values},
            )
        ).first()
        return row is not None

    async def cancel(self, card_id: UUID, batch_id: UUID, reason: str, event_id: UUID) -> str:
        """The issuer cancelled the card. A queued card leaves the queue ('cancelled'); an
        unknown card is remembered so its card.prepared never queues it ('remembered'); a card
        already at a reader or past it goes on, and its state is returned (audit then holds
        the encoded card for destruction)."""
        await self._conn.execute(
            text(
                f"INSERT INTO {self._s}.cancelled_cards"
                " (card_id, batch_id, reason, source_event_id)"
                " VALUES (:c, :b, :r, :e) ON CONFLICT (card_id) DO NOTHING"
            ),
            {"c": card_id, "b": batch_id, "r": reason[:500], "e": event_id},
        )
        if await self._move(card_id, "cancelled", ("queued",), reason=reason[:500]):
            return "cancelled"
        state = (
            await self._conn.execute(
                text(f"SELECT state FROM {self._s}.station_cards WHERE card_id = :c"),
                {"c": card_id},
            )
        ).scalar_one_or_none()
        return "remembered" if state is None else str(state)

    async def cancel_assigned(self, card_id: UUID, reason: str) -> bool:
        """keymgmt refused an assigned card as cancelled: its chip was never written, so the
        chip is released for the next card and the card ends `cancelled`."""
        return await self._move(
            card_id, "cancelled", ("assigned",), reason=reason, chip_serial=None, reader=None
        )

    async def start_encoding(self, card_id: UUID) -> bool:
        """Committed before the first personalisation APDU: from here on a crash spoils it."""
        return await self._move(card_id, "encoding", ("assigned",))

    async def mark_encoded(self, card_id: UUID, apdu_count: int) -> bool:
        return await self._move(card_id, "encoded", ("encoding",), apdu_count=apdu_count)

    async def mark_spoiled(self, card_id: UUID, reason: str, chip_consumed: bool) -> bool:
        """A card that never touched its chip releases the chip for the next card."""
        if chip_consumed:
            return await self._move(card_id, "spoiled", ("assigned", "encoding"), reason=reason)
        return await self._move(
            card_id, "spoiled", ("assigned",), reason=reason, chip_serial=None, reader=None
        )

    async def release(self, card_id: UUID) -> bool:
        """Back to the queue: only an `assigned` card, whose chip was never written."""
        return await self._move(
            card_id, "queued", ("assigned",), chip_serial=None, station_id=None, reader=None
        )

    async def unfinished(self, station_id: str) -> list[UnfinishedCard]:
        rows = await self._conn.execute(
            text(
                f"SELECT {_QUEUED}, state, chip_serial, reader FROM {self._s}.station_cards"
                " WHERE station_id = :station AND state IN ('assigned', 'encoding')"
                " ORDER BY seq FOR UPDATE"
            ),
            {"station": station_id},
        )
        return [UnfinishedCard(QueuedCard(*row[:7]), *row[7:]) for row in rows]

    async def counts(self) -> dict[str, int]:
        rows = await self._conn.execute(
            text(f"SELECT state, count(*) FROM {self._s}.station_cards GROUP BY state")
        )
        return {state: int(n) for state, n in rows}
