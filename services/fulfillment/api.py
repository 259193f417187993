"""Fulfillment's HTTP API: witnessed destruction of rejects, and a batch's cards."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, Field

from services.fulfillment.handlers import FulfillmentDeps
from services.fulfillment.repository import FulfillmentRepository
from services.fulfillment.service import check_destruction, check_witnesses
from shared.auth import Principal, require
from shared.errors import NotFound
from shared.events import CardDestroyed
from shared.service import RuntimeDep, deps_of

router = APIRouter(prefix="/v1", tags=["fulfillment"])
Operator = Annotated[Principal, Depends(require("operator"))]
FulfillmentDepsDep = Annotated[FulfillmentDeps, Depends(deps_of(FulfillmentDeps))]


class DestructionRequest(BaseModel):
    card_ids: list[UUID] = Field(min_length=1, max_length=10_000)
    witnesses: list[str] = Field(description="two different people who saw the cards destroyed")


@router.post(
    "/destructions",
    status_code=status.HTTP_201_CREATED,
    summary="Record the witnessed destruction of cards awaiting it (all or nothing)",
)
async def destroy_cards(
    body: DestructionRequest, principal: Operator, runtime: RuntimeDep, deps: FulfillmentDepsDep
) -> dict[str, Any]:
    witnesses = check_witnesses(body.witnesses)
    async with runtime.unit_of_work() as uow:
        repo: FulfillmentRepository = uow.repo
        cards = await repo.cards_for_update(body.card_ids)
        check_destruction(body.card_ids, {c: row.state for c, row in cards.items()})
        destroyed_by = f"{principal.role}:{principal.name}"
        letters = await repo.carriers_of(body.card_ids)
        await repo.mark_destroyed(body.card_ids, witnesses, destroyed_by)
        for card_id in body.card_ids:
            row = cards[card_id]
            await uow.emit(
                CardDestroyed(
                    issuer_id=row.issuer_id,
                    actor=destroyed_by,
                    card_id=card_id,
                    batch_id=row.batch_id,
                    reason=row.reason or "rejected",
                    witnesses=witnesses,
                )
            )
    for batch_id, carrier_id in letters:  # shredded with the cards
        deps.inserter.discard(batch_id, carrier_id)
    return {"destroyed": [str(c) for c in body.card_ids], "witnesses": list(witnesses)}


@router.get("/batches/{batch_id}", summary="A batch's cards: packed, awaiting destruction, ...")
async def get_batch(batch_id: UUID, _: Operator, runtime: RuntimeDep) -> dict[str, Any]:
    async with runtime.unit_of_work() as uow:
        view: dict[str, Any] | None = await uow.repo.batch_view(batch_id)
    if view is None:
        raise NotFound(f"no cards of batch {batch_id} here")
    return view
