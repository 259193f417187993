"""Intake: the issuer-facing API (orders) and the vault's blank-stock counter."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.intake.keymgmt_client import VaultClient, VaultUnavailable
from services.intake.repository import IntakeRepository
from services.intake.schemas import (
    CardSummary,
    IssuerCreate,
    OrderRequest,
    OrderResponse,
    ProductCreate,
    StockReceipt,
)
from services.intake.service import request_mac, validate_order
from services.intake.settings import IntakeSettings
from shared import events
from shared.auth import Principal, require, token_digest
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime, create_app

MIGRATIONS = Path(__file__).parent / "migrations"


def build_runtime(settings: IntakeSettings, schema: str | None = None) -> ServiceRuntime:
    return ServiceRuntime(name="intake", settings=settings, migrations=MIGRATIONS, schema=schema)


def build_app(
    settings: IntakeSettings | None = None,
    schema: str | None = None,
    vault: VaultClient | None = None,
) -> FastAPI:
    """The intake app. Tests pass their own schema, or a vault client bound to another
    transport (the real keymgmt app in-process)."""
    settings = settings or IntakeSettings()
    runtime = build_runtime(settings, schema)
    vault = vault or VaultClient(settings.keymgmt_url, settings.token_for("intake"))

    async def issuer_credentials(token: str) -> Principal | None:
        async with runtime.engine.connect() as conn:
            issuer = await IntakeRepository(conn).issuer_for_digest(token_digest(token))
        return None if issuer is None else Principal("issuer", issuer, issuer)

    app = create_app(
        runtime,
        title="Card bureau intake API",
        description="Issuers post card orders and follow them; operators count blank stock.",
        authenticators=[issuer_credentials],
    )
    runtime.on_stop(vault.close)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Pydantic echoes input values; an order body holds PANs, so only locations go back.
        problems = [
            {"location": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
            for err in exc.errors()
        ]
        return JSONResponse(
            status_code=422, content={"detail": {"message": "invalid request", "errors": problems}}
        )

    issuer_only = Depends(require("issuer"))
    admin_only = Depends(require("admin"))
    operator = Depends(require("operator", "admin"))

    @app.post("/v1/admin/issuers", status_code=201, tags=["admin"])
    async def create_issuer(body: IssuerCreate, _: Principal = admin_only) -> dict[str, str]:
        async with runtime.engine.begin() as conn:
            if not await IntakeRepository(conn).add_issuer(body.issuer_id, body.name):
                raise HTTPException(409, f"issuer {body.issuer_id!r} already exists")
        return {"issuer_id": body.issuer_id}

    @app.post("/v1/admin/issuers/{issuer_id}/credentials", status_code=201, tags=["admin"])
    async def rotate_credentials(
        issuer_id: str, revoke_existing: bool = False, _: Principal = admin_only
    ) -> dict[str, Any]:
        """A new API token for the issuer, shown once; optionally revoke the old ones."""
        token = "iss_" + secrets.token_urlsafe(32)
        async with runtime.engine.begin() as conn:
            repo = IntakeRepository(conn)
            if not await repo.issuer_exists(issuer_id):
                raise HTTPException(404, f"no issuer {issuer_id!r}")
            revoked = await repo.revoke_credentials(issuer_id) if revoke_existing else 0
            await repo.add_credential(issuer_id, token_digest(token))
        return {"issuer_id": issuer_id, "token": token, "revoked": revoked}

    @app.post("/v1/admin/issuers/{issuer_id}/products", status_code=201, tags=["admin"])
    async def create_product(
        issuer_id: str, body: ProductCreate, _: Principal = admin_only
    ) -> dict[str, str]:
        async with runtime.engine.begin() as conn:
            repo = IntakeRepository(conn)
            if not await repo.issuer_exists(issuer_id):
                raise HTTPException(404, f"no issuer {issuer_id!r}")
            if not await repo.add_product(issuer_id, body.product_id, body.name, body.kind):
                raise HTTPException(409, f"product {body.product_id!r} already exists")
        return {"issuer_id": issuer_id, "product_id": body.product_id}

    @app.post("/v1/stock/receipts", status_code=201, tags=["stock"])
    async def receive_stock(body: StockReceipt, who: Principal = operator) -> dict[str, Any]:
        """Blank cards counted into the vault from the loading dock."""
        async with runtime.engine.begin() as conn:
            repo = IntakeRepository(conn)
            if await repo.product_kind(body.issuer_id, body.product_id) is None:
                raise HTTPException(404, f"no product {body.product_id!r} for that issuer")
            added = await repo.add_stock_movement(
                issuer_id=body.issuer_id,
                product_id=body.product_id,
                kind="received",
                quantity=body.quantity,
                lot_id=body.lot_id,
                actor=f"{who.role}:{who.name}",
            )
            if not added:
                raise HTTPException(409, f"lot {body.lot_id!r} was already received")
            uow = UnitOfWork(conn, runtime.schema, runtime.emit_topic)
            await uow.emit(
                events.StockReceived(
                    issuer_id=body.issuer_id,
                    actor=f"{who.role}:{who.name}",
                    lot_id=body.lot_id,
                    product_id=body.product_id,
                    quantity=body.quantity,
                )
            )
        runtime.relay.wake()
        return {"lot_id": body.lot_id, "quantity": body.quantity}

    @app.get("/v1/stock", tags=["stock"])
    async def stock_levels(who: Principal = operator) -> list[dict[str, Any]]:
        async with runtime.engine.connect() as conn:
            return await IntakeRepository(conn).stock_levels(None)

    @app.post(
        "/v1/orders",
        tags=["orders"],
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
    async def submit_order(
        body: OrderRequest,
        idempotency_key: Annotated[str, Header(min_length=8, max_length=128)],
        who: Principal = issuer_only,
    ) -> Any:
        """Submit an order: all of it is accepted, or none of it."""
        issuer_id = str(who.issuer_id)
        mac = request_mac(settings.idempotency_secret, issuer_id, body)
        async with runtime.engine.connect() as conn:
            repo = IntakeRepository(conn)
            earlier = await repo.order_by_key(issuer_id, idempotency_key)
            if earlier is not None:
                return await _replay(repo, earlier, mac)
            kind = await repo.product_kind(issuer_id, body.product_id)
        if kind is None:
            raise HTTPException(404, f"unknown product {body.product_id!r} for this issuer")
        errors = validate_order(body, datetime.now(UTC).date(), settings.max_cards_per_order)
        if errors:
            raise HTTPException(
                422,
                {
                    "message": f"{len(errors)} problem(s); nothing was accepted",
                    "errors": [e.model_dump() for e in errors],
                },
            )
        order_id, batch_id = uuid.uuid4(), uuid.uuid4()
        card_ids = [uuid.uuid4() for _ in body.cards]
        try:
            vaulted = await vault.store_cards(
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
        except VaultUnavailable as exc:
            raise HTTPException(503, str(exc)) from exc
        actor = f"issuer:{issuer_id}"
        cards = [
            {
                "card_id": cid,
                "order_id": order_id,
                "issuer_id": issuer_id,
                "batch_id": batch_id,
                "sequence": seq,
                "masked_pan": vaulted[str(cid)]["masked_pan"],
                "pan_token": vaulted[str(cid)]["pan_token"],
                "expiry": c.expiry,
            }
            for seq, (cid, c) in enumerate(zip(card_ids, body.cards, strict=True))
        ]
        async with runtime.engine.begin() as conn:
            repo = IntakeRepository(conn)
            await repo.lock_stock(issuer_id, body.product_id)
            on_hand = await repo.stock_on_hand(issuer_id, body.product_id)
            if on_hand < len(cards):
                raise HTTPException(
                    409,
                    f"not enough blank stock for {body.product_id!r}: "
                    f"{on_hand} on hand, {len(cards)} needed",
                )
            if await repo.order_by_key(issuer_id, idempotency_key) is not None:
                raise HTTPException(409, "a concurrent request with this Idempotency-Key won")
            await repo.add_order(
                {
                    "order_id": order_id,
                    "issuer_id": issuer_id,
                    "external_ref": body.external_ref,
                    "idempotency_key": idempotency_key,
                    "request_mac": mac,
                    "product_id": body.product_id,
                    "card_count": len(cards),
                    "batch_id": batch_id,
                    "status": "accepted",
                },
                cards,
            )
            await repo.add_stock_movement(
                issuer_id=issuer_id,
                product_id=body.product_id,
                kind="issued",
                quantity=len(cards),
                batch_id=batch_id,
                actor=actor,
            )
            uow = UnitOfWork(conn, runtime.schema, runtime.emit_topic, buffered=True)
            common = {"issuer_id": issuer_id, "actor": actor}
            await uow.emit(
                events.OrderReceived(
                    **common,
                    order_id=order_id,
                    product_id=body.product_id,
                    card_count=len(cards),
                    external_ref=body.external_ref,
                )
            )
            await uow.emit(
                events.OrderAccepted(
                    **common,
                    order_id=order_id,
                    batch_id=batch_id,
                    product_id=body.product_id,
                    card_count=len(cards),
                )
            )
            await uow.emit(
                events.StockIssued(
                    **common, batch_id=batch_id, product_id=body.product_id, quantity=len(cards)
                )
            )
            for card in cards:
                await uow.emit(
                    events.CardOrdered(
                        **common,
                        card_id=card["card_id"],
                        order_id=order_id,
                        batch_id=batch_id,
                        product_id=body.product_id,
                        pan_token=card["pan_token"],
                        masked_pan=card["masked_pan"],
                        expiry=card["expiry"],
                        sequence=card["sequence"],
                    )
                )
            await uow.flush()
        runtime.relay.wake()
        return _order_response(
            {
                "order_id": order_id,
                "batch_id": batch_id,
                "external_ref": body.external_ref,
                "product_id": body.product_id,
                "status": "accepted",
                "card_count": len(cards),
            },
            cards,
        )

    async def _replay(repo: IntakeRepository, earlier: dict[str, Any], mac: str) -> JSONResponse:
        if earlier["request_mac"] != mac:
            raise HTTPException(
                409, "this Idempotency-Key was already used for a different order body"
            )
        response = _order_response(earlier, await repo.cards_of(earlier["order_id"]))
        return JSONResponse(status_code=200, content=response.model_dump(mode="json"))

    @app.get("/v1/orders/{order_id}", tags=["orders"], response_model=OrderResponse)
    async def get_order(order_id: uuid.UUID, who: Principal = issuer_only) -> OrderResponse:
        async with runtime.engine.connect() as conn:
            repo = IntakeRepository(conn)
            order = await repo.order(str(who.issuer_id), order_id)
            if order is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "no such order")
            return _order_response(order, await repo.cards_of(order_id))

    return app


def _order_response(order: dict[str, Any], cards: list[dict[str, Any]]) -> OrderResponse:
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
