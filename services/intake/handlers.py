"""The card status projection: intake follows each card's lifecycle events so an issuer can
ask where its cards are, see an order's events, and get callbacks on milestones."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from services.intake.deps import IntakeDeps
from services.intake.repository import IntakeRepository
from services.intake.webhooks import delivery
from shared.events import (
    CardDestroyed,
    CardEncoded,
    CardPacked,
    CardPrepared,
    CardPrinted,
    CardQaFailed,
    CardQaPassed,
    CardSpoiled,
    Event,
    ShipmentDispatched,
)
from shared.handlers import HandlerSpec
from shared.outbox import UnitOfWork

# A card's status only moves forward: exceptions rank above every good stage, so a late
# card.printed never hides a card.spoiled that arrived first from another topic.
RANK = {
    "ordered": 0,
    "prepared": 10,
    "encoded": 20,
    "printed": 30,
    "qa_passed": 40,
    "packed": 50,
    "dispatched": 60,
    "spoiled": 70,
    "qa_failed": 70,
    "cancelled": 80,
    "destroyed": 90,
}
STATUS_OF: dict[type[Event], str] = {
    CardPrepared: "prepared",
    CardEncoded: "encoded",
    CardPrinted: "printed",
    CardQaPassed: "qa_passed",
    CardPacked: "packed",
    ShipmentDispatched: "dispatched",
    CardSpoiled: "spoiled",
    CardQaFailed: "qa_failed",
    CardDestroyed: "destroyed",
}
# Milestones an issuer is called back on, besides acceptance and cancellation.
CALLBACKS = {"spoiled": "card.spoiled", "qa_failed": "card.qa_failed"}


def event_detail(event: Event) -> dict[str, Any]:
    """What an issuer may see of an event: no chip data, no PAN, no station internals."""
    if isinstance(event, CardSpoiled):
        return {"stage": event.stage, "reason": event.reason}
    if isinstance(event, CardQaFailed):
        return {"reason": event.reason}
    if isinstance(event, CardDestroyed):
        return {"reason": event.reason}
    if isinstance(event, ShipmentDispatched):
        return {"shipment_id": str(event.shipment_id), "courier": event.courier}
    return {}


async def follow_card(uow: UnitOfWork[IntakeRepository], event: Any, deps: IntakeDeps) -> None:
    status = STATUS_OF[type(event)]
    if isinstance(event, ShipmentDispatched):
        if event.kind != "cards":
            return  # a PIN-mailer shipment says nothing about where the cards are
        card_ids: list[UUID] = list(event.card_ids)
    else:
        card_ids = [event.card_id]
    repo = uow.repo
    named = await repo.advance_cards(
        event.issuer_id, card_ids, status, RANK[status], event.occurred_at
    )
    if not named:
        return  # not a card intake took an order for
    detail = event_detail(event)
    await repo.add_order_events(
        [
            {
                "order_id": order_id,
                "issuer_id": event.issuer_id,
                "event_id": event.event_id,
                "type": event.type,
                "card_id": card_id,
                "occurred_at": event.occurred_at,
                "detail": detail,
            }
            for card_id, order_id in named
        ]
    )
    at = event.occurred_at.isoformat()
    if isinstance(event, ShipmentDispatched):
        by_order: dict[UUID, list[str]] = {}
        for card_id, order_id in named:
            by_order.setdefault(order_id, []).append(str(card_id))
        await repo.enqueue_webhooks(
            [
                delivery(
                    event.issuer_id,
                    "cards.dispatched",
                    f"{event.event_id}/{order_id}",
                    {"order_id": str(order_id), "card_ids": ids, **detail},
                    at,
                )
                for order_id, ids in by_order.items()
            ]
        )
    elif status in CALLBACKS:
        card_id, order_id = named[0]
        await repo.enqueue_webhooks(
            [
                delivery(
                    event.issuer_id,
                    CALLBACKS[status],
                    str(event.event_id),
                    {"order_id": str(order_id), "card_id": str(card_id), **detail},
                    at,
                )
            ]
        )


HANDLERS: HandlerSpec[IntakeDeps] = {event_type: [follow_card] for event_type in STATUS_OF}
