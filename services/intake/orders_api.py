"""POST /v1/orders: an order of cards as one JSON body, accepted whole or refused whole."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse

from services.intake.deps import IntakeDeps, IntakeDepsDep
from services.intake.orders import (
    Vaulted,
    check_stock,
    emit_cards_ordered,
    forgotten_unless_committed,
    record_acceptance,
    vault_cards,
)
from services.intake.repository import IntakeRepository
from services.intake.schemas import CardSummary, OrderRequest, OrderResponse
from services.intake.service import request_mac, validate_order
from shared.auth import Principal, require
from shared.errors import Conflict, Invalid, NotFound
from shared.limits import body_limit
from shared.outbox import UnitOfWork
from shared.service import RuntimeDep

router = APIRouter(tags=["orders"])
Issuer = Annotated[Principal, Depends(require("issuer"))]
IdempotencyKey = Annotated[str, Header(min_length=8, max_length=128)]


@router.post(
    "/v1/orders",
    response_model=OrderResponse,
    status_code=201,
    responses={
        200: {"description": "a replay of an earlier order with the same Idempotency-Key"},
        404: {"description": "unknown product"},
        409: {"description": "not enough blank stock, or the key was used for another body"},
        422: {"description": "invalid cards: every bad line is named"},
        503: {"description": "the PAN vault is unavailable; nothing was written"},
    },
)
@body_limit(setting="order_max_bytes")
async def submit_order(
    body: OrderRequest,
    idempotency_key: IdempotencyKey,
    who: Issuer,
    runtime: RuntimeDep,
    deps: IntakeDepsDep,
) -> Any:
    """Submit an order: all of it is accepted, or none of it. The cardholder data goes to the
    vault only once the order passed every check (product, cards, stock, idempotency), and
    comes out of it again if the order still fails before it is committed."""
    issuer_id = str(who.issuer_id)
    mac = request_mac(deps.settings.idempotency_secret, issuer_id, body)
    errors = validate_order(body, datetime.now(UTC).date(), deps.settings.max_cards_per_order)
    actor = f"issuer:{issuer_id}"
    async with (
        forgotten_unless_committed(
            deps.vault, issuer_id, transactions=runtime.unit_of_work
        ) as vaulted,
        runtime.unit_of_work() as uow,
    ):
        repo: IntakeRepository = uow.repo
        earlier = await repo.order_by_key(issuer_id, idempotency_key)
        if earlier is not None:
            return await _replay(repo, earlier, mac)
        if await repo.product_kind(issuer_id, body.product_id) is None:
            raise NotFound(f"unknown product {body.product_id!r} for this issuer")
        if errors:
            raise Invalid(
                {
                    "message": f"{len(errors)} problem(s); nothing was accepted",
                    "errors": [e.model_dump() for e in errors],
                }
            )
        # Locks the product's stock to the commit: a concurrent order with this key waits
        # here, then finds this one and is answered as a replay or a conflict.
        await check_stock(repo, issuer_id, body.product_id, len(body.cards))
        if await repo.order_by_key(issuer_id, idempotency_key) is not None:
            raise Conflict("a concurrent request with this Idempotency-Key won")
        order_id, batch_id = uuid.uuid4(), uuid.uuid4()
        cards = await _vault_cards(deps, uow, body, (issuer_id, order_id, batch_id), vaulted)
        order = {
            "order_id": order_id,
            "issuer_id": issuer_id,
            "external_ref": body.external_ref,
            "idempotency_key": idempotency_key,
            "request_mac": mac,
            "product_id": body.product_id,
            "card_count": len(cards),
            "batch_id": batch_id,
            "status": "accepted",
        }
        await repo.add_order(order, cards)
        await repo.add_stock_movement(
            issuer_id=issuer_id,
            product_id=body.product_id,
            kind="issued",
            quantity=len(cards),
            batch_id=batch_id,
            actor=actor,
        )
        await record_acceptance(uow, order, actor)
        await emit_cards_ordered(uow, order, cards, actor)
    deps.callbacks_queued()
    return order_response(order, cards)


async def _vault_cards(
    deps: IntakeDeps,
    uow: UnitOfWork[IntakeRepository],
    body: OrderRequest,
    ids: tuple[str, uuid.UUID, uuid.UUID],
    vaulted: Vaulted,
) -> list[dict[str, Any]]:
    """The clear PANs go to the vault; the order keeps each card's token and masked PAN.
    The card ids join `vaulted` before the call (issuer, order and batch ids in `ids`): a call
    that stored and then failed to answer is taken back too (forgetting an id never stored
    does nothing)."""
    issuer_id, order_id, batch_id = ids
    card_ids = [uuid.uuid4() for _ in body.cards]
    await vaulted.pledge(uow, card_ids)
    stored = await vault_cards(
        deps.vault,
        issuer_id,
        [
            {
                "card_id": str(cid),
                "pan": c.pan,
                "psn": c.psn,
                "expiry": c.expiry,
                "cardholder_name": c.cardholder_name,
                "address": c.address.model_dump(),
            }
            for cid, c in zip(card_ids, body.cards, strict=True)
        ],
    )
    return [
        {
            "card_id": cid,
            "order_id": order_id,
            "issuer_id": issuer_id,
            "batch_id": batch_id,
            "sequence": seq,
            "masked_pan": stored[cid].masked_pan,
            "pan_token": stored[cid].pan_token,
            "expiry": c.expiry,
        }
        for seq, (cid, c) in enumerate(zip(card_ids, body.cards, strict=True))
    ]


async def _replay(repo: IntakeRepository, earlier: dict[str, Any], mac: str) -> JSONResponse:
    if earlier["request_mac"] != mac:
        raise Conflict("this Idempotency-Key was already used for a different order body")
    response = order_response(earlier, await repo.cards_of(earlier["order_id"]))
    return JSONResponse(status_code=200, content=response.model_dump(mode="json"))


def order_response(order: dict[str, Any], cards: list[dict[str, Any]]) -> OrderResponse:
    return OrderResponse(
        order_id=order["order_id"],
        batch_id=order["batch_id"],
        external_ref=order["external_ref"],
        product_id=order["product_id"],
        status=order["status"],
        card_count=order["card_count"],
        cards=[
            CardSummary(**{k: c[k] for k in ("card_id", "sequence", "masked_pan", "expiry")})
            for c in cards
        ],
    )
