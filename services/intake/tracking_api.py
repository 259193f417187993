"""Following an order: orders, card status, an order's events, cancellation, webhooks. Every
route is scoped to the calling issuer: another issuer's order or card is a 404."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from services.intake.handlers import RANK
from services.intake.orders import IntakeContext, summary
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
from services.intake.tracking_repository import CANCELLABLE, TrackingRepository
from services.intake.webhooks import delivery
from shared import events
from shared.auth import Principal, require
from shared.events import utc_now

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such order for this issuer"}}


def tracking_router(ctx: IntakeContext) -> APIRouter:
    router = APIRouter()
    engine = ctx.runtime.engine
    issuer_only = Depends(require("issuer"))

    async def own_order(repo: IntakeRepository, who: Principal, order_id: uuid.UUID) -> Any:
        order = await repo.order(str(who.issuer_id), order_id)
        if order is None:
            raise HTTPException(404, "no such order")
        return order

    @router.get("/v1/orders", tags=["orders"], response_model=list[OrderSummary])
    async def list_orders(
        before: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        who: Principal = issuer_only,
    ) -> list[OrderSummary]:
        """The caller's orders, newest first; page with ?before=<created_at of the last>."""
        async with engine.connect() as conn:
            rows = await TrackingRepository(conn).orders(str(who.issuer_id), limit, before)
        return [summary(r) for r in rows]

    @router.get(
        "/v1/orders/{order_id}", tags=["orders"], response_model=OrderSummary, responses=NOT_FOUND
    )
    async def get_order(order_id: uuid.UUID, who: Principal = issuer_only) -> OrderSummary:
        """The order and how many of its cards are in each status."""
        async with engine.connect() as conn:
            order = await own_order(IntakeRepository(conn), who, order_id)
            return summary(order, await TrackingRepository(conn).status_counts(order_id))

    @router.get(
        "/v1/orders/{order_id}/cards", tags=["orders"], response_model=CardPage, responses=NOT_FOUND
    )
    async def order_cards(
        order_id: uuid.UUID,
        after: Annotated[int, Query(ge=-1)] = -1,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
        who: Principal = issuer_only,
    ) -> CardPage:
        """The order's cards by sequence, with their status; page with ?after=next_after."""
        async with engine.connect() as conn:
            await own_order(IntakeRepository(conn), who, order_id)
            rows = await TrackingRepository(conn).cards_page(order_id, after, limit)
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
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
        who: Principal = issuer_only,
    ) -> EventPage:
        """What happened to the order and its cards, oldest first."""
        async with engine.connect() as conn:
            await own_order(IntakeRepository(conn), who, order_id)
            rows = await TrackingRepository(conn).order_events(order_id, after, limit)
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
    async def card_status(card_id: uuid.UUID, who: Principal = issuer_only) -> CardStatus:
        async with engine.connect() as conn:
            card = await TrackingRepository(conn).card(str(who.issuer_id), card_id)
        if card is None:
            raise HTTPException(404, "no such card")
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
        order_id: uuid.UUID, body: Cancellation, who: Principal = issuer_only
    ) -> CancellationResult:
        """Cancel cards not yet personalized (ordered or prepared), all or nothing. Their
        blanks go back to stock; each card ends `cancelled` and is accounted for by audit."""
        issuer_id, actor = str(who.issuer_id), f"issuer:{who.issuer_id}"
        async with engine.begin() as conn:
            order = await own_order(IntakeRepository(conn), who, order_id)
            repo = TrackingRepository(conn)
            wanted = None if body.card_ids is None else list(dict.fromkeys(body.card_ids))
            cards = await repo.lock_cancellable(order_id, wanted)
            if wanted is not None and len(cards) != len(wanted):
                found = {c["card_id"] for c in cards}
                strangers = [str(c) for c in wanted if c not in found][:20]
                raise HTTPException(422, f"not cards of this order: {', '.join(strangers)}")
            late = [c for c in cards if c["status"] not in CANCELLABLE]
            if wanted is not None and late:
                listed = ", ".join(f"{c['card_id']} ({c['status']})" for c in late[:20])
                raise HTTPException(409, f"already past personalization: {listed}")
            chosen = [c for c in cards if c["status"] in CANCELLABLE]
            if not chosen:
                return CancellationResult(order_id=order_id, cancelled=[])
            now = utc_now()
            ids = [c["card_id"] for c in chosen]
            await repo.cancel_cards(ids, RANK["cancelled"], now)
            if await _all_cancelled(repo, order):
                await repo.set_order_status(order_id, "cancelled")
            uow = ctx.unit_of_work(conn)
            order_events, callbacks = [], []
            for card_id in ids:
                cancelled = events.CardCancelled(
                    issuer_id=issuer_id,
                    actor=actor,
                    card_id=card_id,
                    batch_id=order["batch_id"],
                    order_id=order_id,
                    reason=body.reason,
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
                        "detail": {"reason": body.reason},
                    }
                )
                callbacks.append(
                    delivery(
                        issuer_id,
                        "card.cancelled",
                        str(cancelled.event_id),
                        {"order_id": str(order_id), "card_id": str(card_id), "reason": body.reason},
                        now.isoformat(),
                    )
                )
            # The blanks were issued to the order's batch: they go back to the vault.
            await IntakeRepository(conn).add_stock_movement(
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
            await uow.flush()
        ctx.committed()
        return CancellationResult(order_id=order_id, cancelled=ids)

    @router.put("/v1/webhook", tags=["webhooks"], response_model=WebhookView)
    async def set_webhook(body: WebhookConfig, who: Principal = issuer_only) -> WebhookView:
        """Where milestones are posted, signed with the secret (shown only in this answer
        when the bureau makes it)."""
        issuer_id = str(who.issuer_id)
        secret = body.secret or "whsec_" + secrets.token_urlsafe(32)
        async with engine.begin() as conn:
            updated = await TrackingRepository(conn).set_webhook(
                issuer_id, str(body.url), ctx.deliverer.box.seal(issuer_id, secret)
            )
        return WebhookView(
            url=str(body.url), updated_at=updated, secret=None if body.secret else secret
        )

    @router.get(
        "/v1/webhook",
        tags=["webhooks"],
        response_model=WebhookView,
        responses={404: {"description": "no webhook set"}},
    )
    async def get_webhook(who: Principal = issuer_only) -> WebhookView:
        async with engine.connect() as conn:
            hook = await TrackingRepository(conn).webhook(str(who.issuer_id))
        if hook is None:
            raise HTTPException(404, "no webhook set")
        return WebhookView(url=hook["url"], updated_at=hook["updated_at"])

    @router.delete(
        "/v1/webhook",
        tags=["webhooks"],
        status_code=204,
        responses={404: {"description": "no webhook set"}},
    )
    async def delete_webhook(who: Principal = issuer_only) -> Response:
        async with engine.begin() as conn:
            if not await TrackingRepository(conn).delete_webhook(str(who.issuer_id)):
                raise HTTPException(404, "no webhook set")
        return Response(status_code=204)

    @router.get("/v1/webhook/deliveries", tags=["webhooks"], response_model=list[WebhookDelivery])
    async def webhook_deliveries(
        limit: Annotated[int, Query(ge=1, le=500)] = 100, who: Principal = issuer_only
    ) -> list[WebhookDelivery]:
        """The latest callbacks and where each stands (attempts, delivered, given up)."""
        async with engine.connect() as conn:
            rows = await TrackingRepository(conn).deliveries(str(who.issuer_id), limit)
        return [WebhookDelivery(**r) for r in rows]

    return router


async def _all_cancelled(repo: TrackingRepository, order: dict[str, Any]) -> bool:
    counts = await repo.status_counts(order["order_id"])
    return set(counts) == {"cancelled"}
