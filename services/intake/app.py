"""Intake: the issuer-facing API (orders) and the vault's blank-stock counter."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.intake.bulk_api import bulk_router
from services.intake.handlers import HANDLERS
from services.intake.orders import (
    VAULT_RETRY,
    VAULT_TIMEOUT,
    IntakeContext,
    check_stock,
    emit_cards_ordered,
    record_acceptance,
    vault_cards,
)
from services.intake.repository import IntakeRepository
from services.intake.schemas import (
    CardSummary,
    IssuerCreate,
    OrderRequest,
    OrderResponse,
    ProductCreate,
    StockLevel,
    StockReceipt,
)
from services.intake.service import request_mac, validate_order
from services.intake.settings import IntakeSettings
from services.intake.stock_api import stock_router
from services.intake.tracking_api import tracking_router
from services.intake.webhooks import Deliverer, SecretBox
from shared import events
from shared.auth import Principal, require, token_digest
from shared.keymgmt.client import KeymgmtClient
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime, create_app

API_DESCRIPTION = """Issuers post card orders and follow them; operators count blank stock.

Every call sends `Authorization: Bearer <token>`. An issuer's token (made by an admin with
`POST /v1/admin/issuers/{issuer_id}/credentials`, shown once) sees only that issuer's orders,
cards and webhook: anything else answers 404. A walk-through with examples is in
docs/intake-api.md.
"""

MIGRATIONS = Path(__file__).parent / "migrations"


def build_runtime(settings: IntakeSettings, schema: str | None = None) -> ServiceRuntime:
    return ServiceRuntime(
        name="intake",
        settings=settings,
        migrations=MIGRATIONS,
        schema=schema,
        handlers=HANDLERS,
        subscribe=settings.follow,
    )


def build_app(
    settings: IntakeSettings | None = None,
    schema: str | None = None,
    vault: KeymgmtClient | None = None,
) -> FastAPI:
    """The intake app. Tests pass their own schema, or a vault client bound to another
    transport (the real keymgmt app in-process)."""
    settings = settings or IntakeSettings()
    runtime = build_runtime(settings, schema)
    vault = vault or KeymgmtClient(
        settings.keymgmt_url,
        settings.token_for("intake"),
        timeout_s=VAULT_TIMEOUT,
        policy=VAULT_RETRY,
    )

    async def issuer_credentials(token: str) -> Principal | None:
        async with runtime.engine.connect() as conn:
            issuer = await IntakeRepository(conn).issuer_for_digest(token_digest(token))
        return None if issuer is None else Principal("issuer", issuer, issuer)

    app = create_app(
        runtime,
        title="Card bureau intake API",
        description=API_DESCRIPTION,
        authenticators=[issuer_credentials],
    )
    deliverer = Deliverer(settings, SecretBox(settings.webhook_key), runtime.engine.begin)

    async def deliver_webhooks(_: ServiceRuntime) -> None:
        await deliverer.run()

    runtime.workers.append(deliver_webhooks)
    runtime.on_stop(vault.aclose)
    runtime.on_stop(deliverer.close)
    ctx = IntakeContext(runtime, settings, vault, deliverer)
    app.state.intake = ctx

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

    @app.get("/v1/stock", tags=["stock"], response_model=list[StockLevel])
    async def stock_levels(who: Principal = operator) -> list[dict[str, Any]]:
        """Counts per issuer and product: received, issued, returned, destroyed, on hand."""
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
        vaulted = await vault_cards(
            vault,
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
        actor = f"issuer:{issuer_id}"
        cards = [
            {
                "card_id": cid,
                "order_id": order_id,
                "issuer_id": issuer_id,
                "batch_id": batch_id,
                "sequence": seq,
                "masked_pan": vaulted[cid].masked_pan,
                "pan_token": vaulted[cid].pan_token,
                "expiry": c.expiry,
            }
            for seq, (cid, c) in enumerate(zip(card_ids, body.cards, strict=True))
        ]
        async with runtime.engine.begin() as conn:
            repo = IntakeRepository(conn)
            await check_stock(repo, issuer_id, body.product_id, len(cards))
            if await repo.order_by_key(issuer_id, idempotency_key) is not None:
                raise HTTPException(409, "a concurrent request with this Idempotency-Key won")
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
            uow = UnitOfWork(conn, runtime.schema, runtime.emit_topic, buffered=True)
            await record_acceptance(uow, order, actor)
            await emit_cards_ordered(uow, order, cards, actor)
            await uow.flush()
        ctx.committed()
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

    app.include_router(bulk_router(ctx))
    app.include_router(tracking_router(ctx))
    app.include_router(stock_router(ctx))
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
