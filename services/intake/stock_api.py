"""Blank stock (operators): receipts from the loading dock, returns from a batch, destruction
from the vault under dual control (one operator asks, a second confirms with their own token),
the counts, and the production plan. Each movement is a row and an event in one transaction."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from uuid import UUID

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
from shared.dual_control import (
    SamePrincipalTwice,
    TwoPersonTables,
    control_step,
    principal_id,
    record_refusal,
    request_view,
    second_principal,
)
from shared.errors import Conflict, Invalid, NotFound
from shared.outbox import UnitOfWork
from shared.service import RuntimeDep

router = APIRouter(tags=["stock"])
Operator = Annotated[Principal, Depends(require("operator", "admin"))]
# The two-person requests to destroy blank stock (migration 0015), their steps in audit's log.
STOCK_DESTRUCTIONS = TwoPersonTables(
    "stock-destruction",
    "stock_destruction_requests",
    "stock_destruction_refusals",
    "stock destruction request",
)


def _step(request: dict[str, Any], step: str) -> dict[str, Any]:
    """The common fields of a stock destruction's control.recorded events."""
    what = f"destroy {request['quantity']} blank(s) of {request['product_id']}"
    return {"issuer_id": request["issuer_id"], "subject": what, "step": step}


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
    },
)
async def request_stock_destruction(
    body: StockDestruction, who: Operator, runtime: RuntimeDep
) -> dict[str, Any]:
    """Blank cards to destroy from the vault: nothing moves until a second operator confirms
    (POST .../confirm). The requester is the principal of the token that sends it."""
    actor_id = principal_id(who)
    request = body.model_dump() | {"request_id": uuid.uuid4(), "requested_by": actor_id}
    async with runtime.unit_of_work() as uow:
        repo: IntakeRepository = uow.repo
        await _known_product(repo, body.issuer_id, body.product_id)
        on_hand = await repo.stock_on_hand(body.issuer_id, body.product_id)
        if body.quantity > on_hand:
            raise Conflict(f"{on_hand} blank(s) on hand; {body.quantity} asked")
        await repo.add_stock_destruction_request(request)
        asked = _step(request, "requested")
        await uow.emit(control_step(STOCK_DESTRUCTIONS, request, **asked, principal=actor_id))
    return {
        "destruction_id": str(request["request_id"]),
        "state": "pending",
        "requested_by": request["requested_by"],
    }


@router.post(
    "/v1/stock/destructions/{destruction_id}/confirm",
    responses={
        403: {"description": "the requester cannot confirm their own request"},
        404: {"description": "no such request"},
        409: {"description": "already confirmed, or more than the vault now holds"},
    },
)
async def confirm_stock_destruction(
    destruction_id: UUID,
    who: Operator,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    """A second operator confirms: the blanks leave the stock (stock.destroyed, whose
    `witnesses` are the requester and the confirmer, `actor` the confirmer). The requester
    confirming is refused (403 same-principal-twice) and the refusal is kept. Either way the
    step reaches audit's log (control.recorded) with the request's row."""
    refused: SamePrincipalTwice | None = None
    async with runtime.unit_of_work() as uow:
        repo: IntakeRepository = uow.repo
        request = await _pending(repo, destruction_id)
        step = _step(request, "confirm")
        try:
            actor = second_principal(request["requested_by"], who, "destroying blank stock")
        except SamePrincipalTwice as exc:
            refused, why = exc, f"{exc.refusal}: {exc}"
            refusal = control_step(
                STOCK_DESTRUCTIONS, request, **step, principal=principal_id(who), reason=why
            )
            await record_refusal(uow, STOCK_DESTRUCTIONS, refusal)
        else:
            await _destroy_stock(uow, request, actor)
            await uow.emit(
                control_step(STOCK_DESTRUCTIONS, request, **step, principal=actor, final=True)
            )
    if refused is not None:  # committed above: the refusal stays on record
        raise refused
    return {
        "destruction_id": str(destruction_id),
        "state": "confirmed",
        "product_id": request["product_id"],
        "destroyed": request["quantity"],
        "witnesses": [request["requested_by"], actor],
    }


async def _pending(repo: IntakeRepository, destruction_id: UUID) -> dict[str, Any]:
    request = await repo.stock_destruction_request(destruction_id, for_update=True)
    if request is None:
        raise NotFound(f"no stock destruction request {destruction_id}")
    if request["state"] != "pending":
        raise Conflict(f"stock destruction {destruction_id} is already {request['state']}")
    return request


async def _destroy_stock(
    uow: UnitOfWork[IntakeRepository], request: dict[str, Any], actor: str
) -> None:
    repo, issuer_id, product_id = uow.repo, request["issuer_id"], request["product_id"]
    await repo.lock_stock(issuer_id, product_id)
    on_hand = await repo.stock_on_hand(issuer_id, product_id)
    if request["quantity"] > on_hand:
        raise Conflict(f"{on_hand} blank(s) on hand now; {request['quantity']} asked")
    await repo.add_stock_movement(
        issuer_id=issuer_id,
        product_id=product_id,
        kind="destroyed",
        quantity=request["quantity"],
        actor=actor,
    )
    await repo.confirm_stock_destruction(request["request_id"], actor)
    await uow.emit(
        events.StockDestroyed(
            issuer_id=issuer_id,
            actor=actor,
            product_id=product_id,
            quantity=request["quantity"],
            reason=request["reason"],
            witnesses=(request["requested_by"], actor),
        )
    )


@router.get("/v1/stock/destructions/{destruction_id}")
async def stock_destruction(
    destruction_id: UUID, who: Operator, runtime: RuntimeDep
) -> dict[str, Any]:
    """A stock destruction request: who asked, who confirmed, and every refused confirmation."""
    async with runtime.unit_of_work() as uow:
        return await request_view(uow, STOCK_DESTRUCTIONS, destruction_id)


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
