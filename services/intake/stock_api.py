"""Blank stock (operators): receipts from the loading dock, returns from a batch, witnessed
destruction from the vault, the counts, and the production plan. Each movement is a row and an
event in one transaction."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from services.intake.repository import IntakeRepository
from services.intake.schemas import (
    PlannedBatch,
    StockDestruction,
    StockLevel,
    StockReceipt,
    StockReturn,
)
from services.intake.service import plan_batches
from shared import events
from shared.auth import Principal, require
from shared.errors import Conflict, Invalid, NotFound
from shared.service import RuntimeDep

router = APIRouter(tags=["stock"])
Operator = Annotated[Principal, Depends(require("operator", "admin"))]


async def _known_product(repo: IntakeRepository, issuer_id: str, product_id: str) -> None:
    if await repo.product_kind(issuer_id, product_id) is None:
        raise NotFound(f"no product {product_id!r} for that issuer")


@router.post("/v1/stock/receipts", status_code=201)
async def receive_stock(body: StockReceipt, who: Operator, runtime: RuntimeDep) -> dict[str, Any]:
    """Blank cards counted into the vault from the loading dock."""
    async with runtime.unit_of_work() as uow:
        repo: IntakeRepository = uow.repo
        await _known_product(repo, body.issuer_id, body.product_id)
        added = await repo.add_stock_movement(
            issuer_id=body.issuer_id,
            product_id=body.product_id,
            kind="received",
            quantity=body.quantity,
            lot_id=body.lot_id,
            actor=f"{who.role}:{who.name}",
        )
        if not added:
            raise Conflict(f"lot {body.lot_id!r} was already received")
        await uow.emit(
            events.StockReceived(
                issuer_id=body.issuer_id,
                actor=f"{who.role}:{who.name}",
                lot_id=body.lot_id,
                product_id=body.product_id,
                quantity=body.quantity,
            )
        )
    return {"lot_id": body.lot_id, "quantity": body.quantity}


@router.get("/v1/stock", response_model=list[StockLevel])
async def stock_levels(who: Operator, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Counts per issuer and product: received, issued, returned, destroyed, on hand."""
    async with runtime.unit_of_work() as uow:
        repo: IntakeRepository = uow.repo
        return await repo.stock_levels(None)


@router.post(
    "/v1/stock/returns",
    status_code=201,
    responses={
        404: {"description": "unknown product"},
        409: {"description": "more than the batch still holds"},
    },
)
async def return_stock(body: StockReturn, who: Operator, runtime: RuntimeDep) -> dict[str, Any]:
    """Unused blanks of a batch counted back into the vault (stock.returned)."""
    actor = f"{who.role}:{who.name}"
    async with runtime.unit_of_work() as uow:
        repo: IntakeRepository = uow.repo
        await _known_product(repo, body.issuer_id, body.product_id)
        await repo.lock_stock(body.issuer_id, body.product_id)
        held = await repo.stock_of_batch(body.issuer_id, body.product_id, body.batch_id)
        if body.quantity > held:
            raise Conflict(
                f"the batch holds {held} blank(s) of that product; {body.quantity} asked"
            )
        await repo.add_stock_movement(
            issuer_id=body.issuer_id,
            product_id=body.product_id,
            kind="returned",
            quantity=body.quantity,
            batch_id=body.batch_id,
            actor=actor,
        )
        await uow.emit(
            events.StockReturned(
                issuer_id=body.issuer_id,
                actor=actor,
                batch_id=body.batch_id,
                product_id=body.product_id,
                quantity=body.quantity,
            )
        )
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
async def destroy_stock(
    body: StockDestruction, who: Operator, runtime: RuntimeDep
) -> dict[str, Any]:
    """Blank cards destroyed from the vault, witnessed by two people (stock.destroyed)."""
    first, second = (w.strip() for w in body.witnesses)
    if not first or not second or first == second:
        raise Invalid("two different witnesses are needed")
    actor = f"{who.role}:{who.name}"
    async with runtime.unit_of_work() as uow:
        repo: IntakeRepository = uow.repo
        await _known_product(repo, body.issuer_id, body.product_id)
        await repo.lock_stock(body.issuer_id, body.product_id)
        on_hand = await repo.stock_on_hand(body.issuer_id, body.product_id)
        if body.quantity > on_hand:
            raise Conflict(f"{on_hand} blank(s) on hand; {body.quantity} asked")
        await repo.add_stock_movement(
            issuer_id=body.issuer_id,
            product_id=body.product_id,
            kind="destroyed",
            quantity=body.quantity,
            actor=actor,
        )
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
    return {"product_id": body.product_id, "destroyed": body.quantity}


@router.get("/v1/planning/batches", tags=["planning"], response_model=list[PlannedBatch])
async def planned_batches(
    who: Operator, runtime: RuntimeDep, max_cards: int = 5000
) -> list[PlannedBatch]:
    """Accepted orders with cards still to produce, grouped into production runs per issuer
    and product, highest priority first, at most `max_cards` cards a run (an order is never
    split)."""
    if not 1 <= max_cards <= 1_000_000:
        raise Invalid("max_cards must be 1 to 1,000,000")
    async with runtime.unit_of_work() as uow:
        rows = await uow.repo.plan()
    return plan_batches(rows, max_cards)
