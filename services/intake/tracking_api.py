"""Following an order: orders, card status, an order's events, cancellation, webhooks. Every
route is scoped to the calling issuer: another issuer's order or card is a 404."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from services.intake.deps import IntakeDepsDep
from services.intake.handlers import RANK
from services.intake.orders import summary
from services.intake.repository import IntakeRepository
from services.intake.schemas import (
    Cancellation,
    CancellationResult,
    CardPage,
    CardStatus,
    EventPage,
    OrderEvent,
    OrderSummary,
    WebhookConfig,
    WebhookDelivery,
    WebhookView,
)
from services.intake.tracking_repository import CANCELLABLE
from services.intake.webhook_targets import TargetRefused
from services.intake.webhooks import delivery
from shared import events
from shared.auth import Principal, require
from shared.errors import Conflict, Invalid, NotFound
from shared.events import utc_now
from shared.outbox import UnitOfWork
from shared.service import RuntimeDep

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such order for this issuer"}}
NO_WEBHOOK: dict[int | str, dict[str, Any]] = {404: {"description": "no webhook set"}}

router = APIRouter()
Issuer = Annotated[Principal, Depends(require("issuer"))]


async def own_order(repo: IntakeRepository, who: Principal, order_id: uuid.UUID) -> Any:
    order = await repo.order(str(who.issuer_id), order_id)
    if order is None:
        raise NotFound("no such order")
    return order


@router.get("/v1/orders", tags=["orders"], response_model=list[OrderSummary])
async def list_orders(
    who: Issuer,
    runtime: RuntimeDep,
    before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[OrderSummary]:
    """The caller's orders, newest first; page with ?before=<created_at of the last>."""
    async with runtime.unit_of_work() as uow:
        rows = await uow.repo.orders(str(who.issuer_id), limit, before)
    return [summary(r) for r in rows]


@router.get(
    "/v1/orders/{order_id}", tags=["orders"], response_model=OrderSummary, responses=NOT_FOUND
)
async def get_order(order_id: uuid.UUID, who: Issuer, runtime: RuntimeDep) -> OrderSummary:
    """The order and how many of its cards are in each status."""
    async with runtime.unit_of_work() as uow:
        order = await own_order(uow.repo, who, order_id)
        return summary(order, await uow.repo.status_counts(order_id))


@router.get(
    "/v1/orders/{order_id}/cards", tags=["orders"], response_model=CardPage, responses=NOT_FOUND
)
async def order_cards(
    order_id: uuid.UUID,
    who: Issuer,
    runtime: RuntimeDep,
    after: Annotated[int, Query(ge=-1)] = -1,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> CardPage:
    """The order's cards by sequence, with their status; page with ?after=next_after."""
    async with runtime.unit_of_work() as uow:
        await own_order(uow.repo, who, order_id)
        rows = await uow.repo.cards_page(order_id, after, limit)
    return CardPage(
        cards=[CardStatus(**r) for r in rows],
        next_after=rows[-1]["sequence"] if len(rows) == limit else None,
    )


@router.get(
    "/v1/orders/{order_id}/events",
    tags=["orders"],
    response_model=EventPage,
    responses=NOT_FOUND,
)
async def order_events(
    order_id: uuid.UUID,
    who: Issuer,
    runtime: RuntimeDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> EventPage:
    """What happened to the order and its cards, oldest first."""
    async with runtime.unit_of_work() as uow:
        await own_order(uow.repo, who, order_id)
        rows = await uow.repo.order_events(order_id, after, limit)
    return EventPage(
        events=[OrderEvent(**r) for r in rows],
        next_after=rows[-1]["id"] if len(rows) == limit else None,
    )


@router.get(
    "/v1/cards/{card_id}",
    tags=["orders"],
    response_model=CardStatus,
    responses={404: {"description": "no such card for this issuer"}},
)
async def card_status(card_id: uuid.UUID, who: Issuer, runtime: RuntimeDep) -> CardStatus:
    async with runtime.unit_of_work() as uow:
        card = await uow.repo.card(str(who.issuer_id), card_id)
    if card is None:
        raise NotFound("no such card")
    return CardStatus(**card)


@router.post(
    "/v1/orders/{order_id}/cancellations",
    tags=["orders"],
    response_model=CancellationResult,
    responses={
        **NOT_FOUND,
        409: {"description": "a named card is already personalized: nothing cancelled"},
        422: {"description": "a named card is not in this order"},
    },
)
async def cancel_cards(
    order_id: uuid.UUID,
    body: Cancellation,
    who: Issuer,
    runtime: RuntimeDep,
    deps: IntakeDepsDep,
) -> CancellationResult:
    """Cancel cards not yet personalized (ordered or prepared), all or nothing. Their blanks
    go back to stock; each card ends `cancelled` and is accounted for by audit."""
    async with runtime.unit_of_work() as uow:
        repo: IntakeRepository = uow.repo
        order = await own_order(repo, who, order_id)
        wanted = None if body.card_ids is None else list(dict.fromkeys(body.card_ids))
        cards = await repo.lock_cancellable(order_id, wanted)
        if wanted is not None and len(cards) != len(wanted):
            found = {c["card_id"] for c in cards}
            strangers = [str(c) for c in wanted if c not in found][:20]
            raise Invalid(f"not cards of this order: {', '.join(strangers)}")
        late = [c for c in cards if c["status"] not in CANCELLABLE]
        if wanted is not None and late:
            listed = ", ".join(f"{c['card_id']} ({c['status']})" for c in late[:20])
            raise Conflict(f"already past personalization: {listed}")
        ids = [c["card_id"] for c in cards if c["status"] in CANCELLABLE]
        if not ids:
            return CancellationResult(order_id=order_id, cancelled=[])
        await _cancel(uow, order, ids, body.reason, str(who.issuer_id))
    deps.callbacks_queued()
    return CancellationResult(order_id=order_id, cancelled=ids)


async def _cancel(
    uow: UnitOfWork[IntakeRepository],
    order: dict[str, Any],
    ids: list[uuid.UUID],
    reason: str,
    issuer_id: str,
) -> None:
    """The cards end cancelled (card.cancelled each, with its order event and callback) and
    their blanks, issued to the order's batch, go back to the vault (stock.returned)."""
    repo, order_id, actor, now = uow.repo, order["order_id"], f"issuer:{issuer_id}", utc_now()
    await repo.cancel_cards(ids, RANK["cancelled"], now)
    if await _all_cancelled(repo, order):
        await repo.set_order_status(order_id, "cancelled")
    order_events, callbacks = [], []
    for card_id in ids:
        cancelled = events.CardCancelled(
            issuer_id=issuer_id,
            actor=actor,
            card_id=card_id,
            batch_id=order["batch_id"],
            order_id=order_id,
            reason=reason,
            occurred_at=now,
        )
        await uow.emit(cancelled)
        order_events.append(
            {
                "order_id": order_id,
                "issuer_id": issuer_id,
                "event_id": cancelled.event_id,
                "type": cancelled.type,
                "card_id": card_id,
                "occurred_at": now,
                "detail": {"reason": reason},
            }
        )
        callbacks.append(
            delivery(
                issuer_id,
                "card.cancelled",
                str(cancelled.event_id),
                {"order_id": str(order_id), "card_id": str(card_id), "reason": reason},
                now.isoformat(),
            )
        )
    await repo.add_stock_movement(
        issuer_id=issuer_id,
        product_id=order["product_id"],
        kind="returned",
        quantity=len(ids),
        batch_id=order["batch_id"],
        actor=actor,
    )
    await uow.emit(
        events.StockReturned(
            issuer_id=issuer_id,
            actor=actor,
            batch_id=order["batch_id"],
            product_id=order["product_id"],
            quantity=len(ids),
        )
    )
    await repo.add_order_events(order_events)
    await repo.enqueue_webhooks(callbacks)


@router.put("/v1/webhook", tags=["webhooks"], response_model=WebhookView)
async def set_webhook(
    body: WebhookConfig, who: Issuer, runtime: RuntimeDep, deps: IntakeDepsDep
) -> WebhookView:
    """Where milestones are posted, signed with the secret (shown only in this answer when the
    bureau makes it)."""
    issuer_id = str(who.issuer_id)
    try:
        await deps.deliverer.check_target(str(body.url))
    except TargetRefused as exc:
        raise Invalid({"field": "url", "problem": str(exc)}) from None
    secret = body.secret or "whsec_" + secrets.token_urlsafe(32)
    async with runtime.unit_of_work() as uow:
        updated = await uow.repo.set_webhook(
            issuer_id, str(body.url), deps.deliverer.box.seal(issuer_id, secret)
        )
    return WebhookView(
        url=str(body.url), updated_at=updated, secret=None if body.secret else secret
    )


@router.get("/v1/webhook", tags=["webhooks"], response_model=WebhookView, responses=NO_WEBHOOK)
async def get_webhook(who: Issuer, runtime: RuntimeDep) -> WebhookView:
    async with runtime.unit_of_work() as uow:
        hook = await uow.repo.webhook(str(who.issuer_id))
    if hook is None:
        raise NotFound("no webhook set")
    return WebhookView(url=hook["url"], updated_at=hook["updated_at"])


@router.delete("/v1/webhook", tags=["webhooks"], status_code=204, responses=NO_WEBHOOK)
async def delete_webhook(who: Issuer, runtime: RuntimeDep) -> Response:
    async with runtime.unit_of_work() as uow:
        if not await uow.repo.delete_webhook(str(who.issuer_id)):
            raise NotFound("no webhook set")
    return Response(status_code=204)


@router.get("/v1/webhook/deliveries", tags=["webhooks"], response_model=list[WebhookDelivery])
async def webhook_deliveries(
    who: Issuer, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[WebhookDelivery]:
    """The latest callbacks and where each stands (attempts, delivered, given up)."""
    async with runtime.unit_of_work() as uow:
        rows = await uow.repo.deliveries(str(who.issuer_id), limit)
    return [WebhookDelivery(**r) for r in rows]


async def _all_cancelled(repo: IntakeRepository, order: dict[str, Any]) -> bool:
    counts = await repo.status_counts(order["order_id"])
    return set(counts) == {"cancelled"}
