"""What audit remembers of each card and batch, and how an event changes it (no I/O).

Events of a batch arrive in any order across topics, so every fact is recorded on its own and
the first event of a kind wins: a later duplicate of a fact (say a second card.encoded under a
new event id) stays in the log but does not move the projection.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal
from uuid import UUID

from shared.events import (
    CardCancelled,
    CardDestroyed,
    CardEncoded,
    CardOrdered,
    CardPacked,
    CardPrepared,
    CardPrinted,
    CardQaFailed,
    CardQaPassed,
    CardSpoiled,
    Event,
    OrderAccepted,
    ShipmentDispatched,
    StockIssued,
    StockReturned,
)

BatchStatus = Literal["open", "held", "reconciled", "closed"]


@dataclass(frozen=True)
class BatchFacts:
    """The batch-level numbers reconciliation needs."""

    batch_id: UUID
    issuer_id: str
    card_count: int | None = None
    stock_issued: int = 0
    stock_returned: int = 0


@dataclass(frozen=True)
class CardRecord:
    card_id: UUID
    batch_id: UUID
    issuer_id: str
    order_id: UUID | None = None
    ordered_at: datetime | None = None
    prepared_at: datetime | None = None
    encoded_at: datetime | None = None
    chip_serial: str | None = None
    spoiled_at: datetime | None = None
    spoiled_stage: str | None = None
    spoiled_reason: str | None = None
    printed_at: datetime | None = None
    qa_passed_at: datetime | None = None
    qa_failed_at: datetime | None = None
    qa_failed_reason: str | None = None
    packed_at: datetime | None = None
    dispatched_at: datetime | None = None
    shipment_id: UUID | None = None
    destroyed_at: datetime | None = None
    destroyed_reason: str | None = None
    cancelled_at: datetime | None = None

    @property
    def withdrawn(self) -> bool:
        """Cancelled by the issuer before any blank was personalized: accounted for without
        destruction (its blank went back to stock). A card cancelled too late, once a chip
        was encoded or spoiled, must still be destroyed."""
        return self.cancelled_at is not None and self.encoded_at is None and self.spoiled_at is None

    @property
    def ended(self) -> bool:
        """Reached a production end state: packed (good), destroyed or withdrawn."""
        return self.packed_at is not None or self.destroyed_at is not None or self.withdrawn

    @property
    def settled(self) -> bool:
        """Left the bureau's custody: dispatched or destroyed, or never left the vault."""
        return self.dispatched_at is not None or self.destroyed_at is not None or self.withdrawn


def apply_batch_event(batch: BatchFacts, event: Event) -> BatchFacts:
    """The batch after an order or stock event. Stock movements add up (each event once)."""
    if isinstance(event, OrderAccepted) and batch.card_count is None:
        return replace(batch, card_count=event.card_count)
    if isinstance(event, StockIssued):
        return replace(batch, stock_issued=batch.stock_issued + event.quantity)
    if isinstance(event, StockReturned):
        return replace(batch, stock_returned=batch.stock_returned + event.quantity)
    return batch


CARD_EVENTS: tuple[type[Event], ...] = (
    CardOrdered,
    CardPrepared,
    CardEncoded,
    CardSpoiled,
    CardPrinted,
    CardQaPassed,
    CardQaFailed,
    CardPacked,
    CardDestroyed,
    CardCancelled,
)


def apply_card_event(card: CardRecord, event: Event) -> CardRecord:
    """The card after `event`; facts already known are kept (first one wins)."""
    at = event.occurred_at
    if isinstance(event, CardOrdered) and card.ordered_at is None:
        return replace(card, ordered_at=at, order_id=event.order_id)
    if isinstance(event, CardPrepared) and card.prepared_at is None:
        return replace(card, prepared_at=at)
    if isinstance(event, CardEncoded) and card.encoded_at is None:
        return replace(card, encoded_at=at, chip_serial=card.chip_serial or event.chip_serial)
    if isinstance(event, CardSpoiled) and card.spoiled_at is None:
        return replace(
            card,
            spoiled_at=at,
            spoiled_stage=event.stage,
            spoiled_reason=event.reason,
            chip_serial=card.chip_serial or event.chip_serial,
        )
    if isinstance(event, CardPrinted) and card.printed_at is None:
        return replace(card, printed_at=at)
    if isinstance(event, CardQaPassed) and card.qa_passed_at is None:
        return replace(card, qa_passed_at=at)
    if isinstance(event, CardQaFailed) and card.qa_failed_at is None:
        return replace(card, qa_failed_at=at, qa_failed_reason=event.reason)
    if isinstance(event, CardPacked) and card.packed_at is None:
        return replace(card, packed_at=at)
    if isinstance(event, CardDestroyed) and card.destroyed_at is None:
        return replace(card, destroyed_at=at, destroyed_reason=event.reason)
    if isinstance(event, CardCancelled) and card.cancelled_at is None:
        return replace(card, cancelled_at=at)
    if (
        isinstance(event, ShipmentDispatched)
        and event.kind == "cards"
        and card.card_id in event.card_ids
        and card.dispatched_at is None
    ):
        return replace(card, dispatched_at=at, shipment_id=event.shipment_id)
    return card
