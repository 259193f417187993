"""Fulfillment's HTTP API: destruction of rejects under dual control (one operator requests, a
second confirms), and a batch's cards."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, ConfigDict, Field

from services.fulfillment.deps import FulfillmentDeps
from services.fulfillment.repository import FulfillmentRepository
from services.fulfillment.service import check_destruction
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
from shared.errors import Conflict, NotFound
from shared.events import CardDestroyed
from shared.outbox import UnitOfWork
from shared.service import RuntimeDep, deps_of

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["fulfillment"])
Operator = Annotated[Principal, Depends(require("operator"))]
FulfillmentDepsDep = Annotated[FulfillmentDeps, Depends(deps_of(FulfillmentDeps))]
# The two-person requests to destroy cards (migration 0015), their steps in audit's log.
DESTRUCTIONS = TwoPersonTables(
    "card-destruction", "destruction_requests", "destruction_refusals", "destruction request"
)
# A request may name cards of several issuers: the act is the bureau's.
BUREAU = "bureau"


def _subject(card_ids: list[UUID]) -> str:
    return f"destroy {len(card_ids)} card(s) awaiting destruction"


class DestructionRequest(BaseModel):
    """The cards to destroy; the requester is the operator whose token sends it. The second
    operator confirms with their own token (no typed witness names: shared/dual_control.py)."""

    model_config = ConfigDict(extra="forbid")

    card_ids: list[UUID] = Field(min_length=1, max_length=10_000)


class DestructionNotFound(NotFound):
    pass


class DestructionNotPending(Conflict):
    pass


@router.post(
    "/destructions",
    status_code=status.HTTP_201_CREATED,
    summary="Request the destruction of cards awaiting it (a second operator confirms it)",
)
async def request_destruction(
    body: DestructionRequest, principal: Operator, runtime: RuntimeDep
) -> dict[str, Any]:
    """Nothing is destroyed yet: the request names the cards, all awaiting destruction, and
    the operator who asked. A different operator confirms it (POST .../confirm)."""
    request_id, requested_by = uuid.uuid4(), principal_id(principal)
    async with runtime.unit_of_work() as uow:
        repo: FulfillmentRepository = uow.repo
        cards = await repo.cards_for_update(body.card_ids)
        check_destruction(body.card_ids, {c: row.state for c, row in cards.items()})
        await repo.add_destruction_request(request_id, body.card_ids, requested_by)
        request = {"request_id": request_id, "requested_by": requested_by}
        await uow.emit(
            control_step(
                DESTRUCTIONS,
                request,
                issuer_id=BUREAU,
                subject=_subject(body.card_ids),
                step="requested",
                principal=requested_by,
            )
        )
    log.info(
        "destruction requested",
        extra={"request_id": str(request_id), "by": requested_by, "cards": len(body.card_ids)},
    )
    return {
        "destruction_id": str(request_id),
        "state": "pending",
        "requested_by": requested_by,
        "card_ids": [str(c) for c in body.card_ids],
    }


@router.post(
    "/destructions/{destruction_id}/confirm",
    summary="Confirm a destruction another operator requested: the cards are destroyed",
    responses={403: {"description": "the requester cannot confirm their own request"}},
)
async def confirm_destruction(
    destruction_id: UUID,
    principal: Operator,
    runtime: RuntimeDep,
    deps: FulfillmentDepsDep,
) -> dict[str, Any]:
    """All or nothing, under dual control: both operators land in each card.destroyed event
    (`witnesses`: requester, confirmer; `actor`: the confirmer). A confirmation by the
    requester is refused (403 same-principal-twice) and the refusal is kept. Either way the
    step reaches audit's log (control.recorded) with the request's row."""
    refused: SamePrincipalTwice | None = None
    async with runtime.unit_of_work() as uow:
        repo: FulfillmentRepository = uow.repo
        request = await _pending(repo, destruction_id)
        card_ids: list[UUID] = list(request["card_ids"])
        step: dict[str, Any] = {
            "issuer_id": BUREAU,
            "subject": _subject(card_ids),
            "step": "confirm",
        }
        try:
            confirmed_by = second_principal(request["requested_by"], principal, "destroying cards")
        except SamePrincipalTwice as exc:
            refused, who = exc, principal_id(principal)
            why = f"{exc.refusal}: {exc}"
            refusal = control_step(DESTRUCTIONS, request, **step, principal=who, reason=why)
            await record_refusal(uow, DESTRUCTIONS, refusal)
        else:
            witnesses = (str(request["requested_by"]), confirmed_by)
            letters = await _destroy(uow, card_ids, witnesses)
            await repo.confirm_destruction(destruction_id, confirmed_by)
            await uow.emit(
                control_step(DESTRUCTIONS, request, **step, principal=confirmed_by, final=True)
            )
    if refused is not None:  # committed above: the refusal stays on record
        log.warning("destruction confirmation refused", extra={"request_id": str(destruction_id)})
        raise refused
    for batch_id, carrier_id in letters:  # shredded with the cards
        deps.inserter.discard(batch_id, carrier_id)
    return {
        "destruction_id": str(destruction_id),
        "state": "confirmed",
        "destroyed": [str(c) for c in card_ids],
        "witnesses": list(witnesses),
    }


async def _pending(repo: FulfillmentRepository, destruction_id: UUID) -> dict[str, Any]:
    request = await repo.destruction_request(destruction_id, for_update=True)
    if request is None:
        raise DestructionNotFound(f"no destruction request {destruction_id}")
    if request["state"] != "pending":
        raise DestructionNotPending(
            f"destruction {destruction_id} is already {request['state']}"
            f" (by {request['confirmed_by']})"
        )
    return request


async def _destroy(
    uow: UnitOfWork[FulfillmentRepository], card_ids: list[UUID], witnesses: tuple[str, str]
) -> list[tuple[UUID, str]]:
    repo = uow.repo
    cards = await repo.cards_for_update(card_ids)
    check_destruction(card_ids, {c: row.state for c, row in cards.items()})
    letters = await repo.carriers_of(card_ids)
    await repo.mark_destroyed(card_ids, witnesses, witnesses[1])
    for card_id in card_ids:
        row = cards[card_id]
        await uow.emit(
            CardDestroyed(
                issuer_id=row.issuer_id,
                actor=witnesses[1],
                card_id=card_id,
                batch_id=row.batch_id,
                reason=row.reason or "rejected",
                witnesses=witnesses,
            )
        )
    return letters


@router.get("/destructions/{destruction_id}", summary="A destruction request and its refusals")
async def get_destruction(destruction_id: UUID, _: Operator, runtime: RuntimeDep) -> dict[str, Any]:
    async with runtime.unit_of_work() as uow:
        return await request_view(uow, DESTRUCTIONS, destruction_id)


@router.get("/batches/{batch_id}", summary="A batch's cards: packed, awaiting destruction, ...")
async def get_batch(batch_id: UUID, _: Operator, runtime: RuntimeDep) -> dict[str, Any]:
    async with runtime.unit_of_work() as uow:
        view: dict[str, Any] | None = await uow.repo.batch_view(batch_id)
    if view is None:
        raise NotFound(f"no cards of batch {batch_id} here")
    return view
