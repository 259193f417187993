"""Blank stock beyond receipts (operators): returns from a batch, witnessed destruction from
the vault, and the production plan. Each movement is a row and an event in one transaction."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from services.intake.orders import IntakeContext
from services.intake.repository import IntakeRepository
from services.intake.schemas import PlannedBatch, StockDestruction, StockReturn
from services.intake.service import plan_batches
from services.intake.tracking_repository import TrackingRepository
from shared import events
from shared.auth import Principal, require


def stock_router(ctx: IntakeContext) -> APIRouter:
    router = APIRouter(tags=["stock"])
    engine = ctx.runtime.engine
    operator = Depends(require("operator", "admin"))

    @router.post(
        "/v1/stock/returns",
        status_code=201,
        responses={
            404: {"description": "unknown product"},
            409: {"description": "more than the batch still holds"},
        },
    )
    async def return_stock(body: StockReturn, who: Principal = operator) -> dict[str, Any]:
        """Unused blanks of a batch counted back into the vault (stock.returned)."""
        actor = f"{who.role}:{who.name}"
        async with engine.begin() as conn:
            repo = IntakeRepository(conn)
            if await repo.product_kind(body.issuer_id, body.product_id) is None:
                raise HTTPException(404, f"no product {body.product_id!r} for that issuer")
            await repo.lock_stock(body.issuer_id, body.product_id)
            held = await TrackingRepository(conn).stock_of_batch(
                body.issuer_id, body.product_id, body.batch_id
            )
            if body.quantity > held:
                raise HTTPException(
                    409, f"the batch holds {held} blank(s) of that product; {body.quantity} asked"
                )
            await repo.add_stock_movement(
                issuer_id=body.issuer_id,
                product_id=body.product_id,
                kind="returned",
                quantity=body.quantity,
                batch_id=body.batch_id,
                actor=actor,
            )
            uow = ctx.unit_of_work(conn)
            await uow.emit(
                events.StockReturned(
                    issuer_id=body.issuer_id,
                    actor=actor,
                    batch_id=body.batch_id,
                    product_id=body.product_id,
                    quantity=body.quantity,
                )
            )
            await uow.flush()
        ctx.committed()
        return {"batch_id": str(body.batch_id), "returned": body.quantity}

    @router.post(
        "/v1/stock/destructions",
        status_code=201,
        responses={
            404: {"description": "unknown product"},
            409: {"description": "more than the vault holds"},
            422: {"description": "the two witnesses must be two different people"},
        },
    )
    async def destroy_stock(body: StockDestruction, who: Principal = operator) -> dict[str, Any]:
        """Blank cards destroyed from the vault, witnessed by two people (stock.destroyed)."""
        first, second = (w.strip() for w in body.witnesses)
        if not first or not second or first == second:
            raise HTTPException(422, "two different witnesses are needed")
        actor = f"{who.role}:{who.name}"
        async with engine.begin() as conn:
            repo = IntakeRepository(conn)
            if await repo.product_kind(body.issuer_id, body.product_id) is None:
                raise HTTPException(404, f"no product {body.product_id!r} for that issuer")
            await repo.lock_stock(body.issuer_id, body.product_id)
            on_hand = await repo.stock_on_hand(body.issuer_id, body.product_id)
            if body.quantity > on_hand:
                raise HTTPException(409, f"{on_hand} blank(s) on hand; {body.quantity} asked")
            await repo.add_stock_movement(
                issuer_id=body.issuer_id,
                product_id=body.product_id,
                kind="destroyed",
                quantity=body.quantity,
                actor=actor,
            )
            uow = ctx.unit_of_work(conn)
            await uow.emit(
                events.StockDestroyed(
                    issuer_id=body.issuer_id,
                    actor=actor,
                    product_id=body.product_id,
                    quantity=body.quantity,
                    reason=body.reason,
                    witnesses=(first, second),
                )
            )
            await uow.flush()
        ctx.committed()
        return {"product_id": body.product_id, "destroyed": body.quantity}

    @router.get("/v1/planning/batches", tags=["planning"], response_model=list[PlannedBatch])
    async def planned_batches(
        max_cards: int = 5000, who: Principal = operator
    ) -> list[PlannedBatch]:
        """Accepted orders with cards still to produce, grouped into production runs per
        issuer and product, highest priority first, at most `max_cards` cards a run (an order
        is never split)."""
        if not 1 <= max_cards <= 1_000_000:
            raise HTTPException(422, "max_cards must be 1 to 1,000,000")
        async with engine.connect() as conn:
            rows = await TrackingRepository(conn).plan()
        return plan_batches(rows, max_cards)

    return router
