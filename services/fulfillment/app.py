"""The fulfillment service: wiring (bootstrap) and its HTTP API (destructions, batch view)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from pydantic import BaseModel, Field

from services.fulfillment.handlers import FulfillmentDeps, MailingSource, build_handlers
from services.fulfillment.inserter import Inserter
from services.fulfillment.manifests import ManifestWriter
from services.fulfillment.repository import FulfillmentRepository
from services.fulfillment.service import DestructionRefused, check_destruction, check_witnesses
from services.fulfillment.settings import FulfillmentSettings
from shared.auth import Principal, require
from shared.events import CardDestroyed
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime, create_app, runtime_of

NAME = "fulfillment"
MIGRATIONS = Path(__file__).parent / "migrations"
SUBSCRIBE = ("qa", "electrical", "graphical", "audit")


def bootstrap(
    settings: FulfillmentSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    keymgmt: MailingSource | None = None,
) -> ServiceRuntime:
    """Wire keymgmt and the manifest writer into the runtime. Tests pass their own schema."""
    owned: KeymgmtClient | None = None
    if keymgmt is None:
        client = KeymgmtClient(
            settings.keymgmt_url,
            settings.token_for(NAME),
            timeout_s=settings.keymgmt_timeout_s,
            policy=RetryPolicy(max_attempts=settings.keymgmt_attempts),
        )
        keymgmt = owned = client
    deps = FulfillmentDeps(
        keymgmt=keymgmt,
        manifests=ManifestWriter(settings.manifest_dir),
        inserter=Inserter(settings.inserter_dir),
        courier=settings.fulfillment_courier,
        actor=NAME,
    )
    runtime = ServiceRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        handlers=build_handlers(deps),
        subscribe=SUBSCRIBE,
        schema=schema,
        consumer_group=consumer_group,
    )
    if owned is not None:
        runtime.on_stop(owned.aclose)
    runtime.state["deps"] = deps
    return runtime


def build_app(runtime: ServiceRuntime) -> FastAPI:
    app = create_app(
        runtime,
        title="cardbureau fulfillment",
        description="Carriers, witnessed destruction of rejects, dispatch after reconciliation.",
    )
    app.include_router(router)
    return app


router = APIRouter(prefix="/v1", tags=["fulfillment"])
Operator = Annotated[Principal, Depends(require("operator"))]


class DestructionRequest(BaseModel):
    card_ids: list[UUID] = Field(min_length=1, max_length=10_000)
    witnesses: list[str] = Field(description="two different people who saw the cards destroyed")


@router.post(
    "/destructions",
    status_code=status.HTTP_201_CREATED,
    summary="Record the witnessed destruction of cards awaiting it (all or nothing)",
)
async def destroy_cards(
    body: DestructionRequest, principal: Operator, request: Request
) -> dict[str, Any]:
    try:
        witnesses = check_witnesses(body.witnesses)
    except DestructionRefused as exc:
        raise HTTPException(422, detail=exc.problems) from exc
    runtime = runtime_of(request)
    async with runtime.engine.begin() as conn:
        uow = UnitOfWork(conn, runtime.schema, runtime.emit_topic)
        repo = FulfillmentRepository(conn, runtime.schema)
        cards = await repo.cards_for_update(body.card_ids)
        try:
            check_destruction(body.card_ids, {c: row.state for c, row in cards.items()})
        except DestructionRefused as exc:
            code = status.HTTP_409_CONFLICT if exc.conflict else 422
            raise HTTPException(code, detail=exc.problems) from exc
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
    runtime.relay.wake()
    deps: FulfillmentDeps = runtime.state["deps"]
    for batch_id, carrier_id in letters:  # shredded with the cards
        deps.inserter.discard(batch_id, carrier_id)
    return {"destroyed": [str(c) for c in body.card_ids], "witnesses": list(witnesses)}


@router.get("/batches/{batch_id}", summary="A batch's cards: packed, awaiting destruction, ...")
async def get_batch(batch_id: UUID, _: Operator, request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        view = await FulfillmentRepository(conn, runtime.schema).batch_view(batch_id)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no cards of batch {batch_id} here")
    return view
