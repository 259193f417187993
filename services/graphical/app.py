"""The graphical service: wiring (bootstrap) and its HTTP API (designs, print jobs)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, status
from PIL import Image, ImageDraw

from services.graphical.handlers import GraphicalDeps, PrintDataSource, build_handlers
from services.graphical.printer import IppPrinter, Printer
from services.graphical.printing import PrintSpooler
from services.graphical.render import FaceRenderer, RenderError, check_photo
from services.graphical.repository import GraphicalRepository
from services.graphical.service import CardDesign, FaceData, default_design
from services.graphical.settings import GraphicalSettings
from shared.auth import Principal, require
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.service import ServiceRuntime, create_app, runtime_of

NAME = "graphical"
MIGRATIONS = Path(__file__).parent / "migrations"
SUBSCRIBE = ("electrical",)


def sample_photo() -> bytes:
    """A neutral silhouette: what previews and design checks show in a photo box."""
    image = Image.new("RGB", (300, 400), "#c8ccd2")
    draw = ImageDraw.Draw(image)
    draw.ellipse((95, 60, 205, 190), fill="#8a929c")
    draw.ellipse((40, 210, 260, 460), fill="#8a929c")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


SAMPLE_FACE = FaceData("JANE Q SAMPLE", "400000******0002", "3012", sample_photo())


def bootstrap(
    settings: GraphicalSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    keymgmt: PrintDataSource | None = None,
    printer: Printer | None = None,
) -> ServiceRuntime:
    """Wire keymgmt, renderer, printer and print spooler. Tests pass their own schema."""
    owned: KeymgmtClient | None = None
    if keymgmt is None:
        client = KeymgmtClient(
            settings.keymgmt_url,
            settings.token_for(NAME),
            timeout_s=settings.keymgmt_timeout_s,
            policy=RetryPolicy(max_attempts=settings.keymgmt_attempts),
        )
        keymgmt = owned = client
    owned_printer = printer is None
    printer = printer or IppPrinter(
        settings.graphical_printer, settings.card_printer_uri, timeout_s=settings.printer_timeout_s
    )
    spooler = PrintSpooler(
        printer,
        actor=NAME,
        poll_s=settings.print_poll_s,
        backoff_s=settings.print_backoff_s,
        backoff_max_s=settings.print_backoff_max_s,
        max_rejections=settings.print_max_rejections,
    )
    deps = GraphicalDeps(
        keymgmt=keymgmt,
        renderer=FaceRenderer(settings.graphical_font),
        printer_name=printer.name,
        wake_spooler=spooler.wake,
        actor=NAME,
    )
    runtime = ServiceRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        handlers=build_handlers(deps),
        subscribe=SUBSCRIBE,
        workers=[spooler.run],
        schema=schema,
        consumer_group=consumer_group,
    )
    if owned is not None:
        runtime.on_stop(owned.aclose)
    if owned_printer:
        runtime.on_stop(printer.aclose)
    runtime.state["deps"] = deps
    runtime.state["spooler"] = spooler
    return runtime


def build_app(runtime: ServiceRuntime) -> FastAPI:
    app = create_app(
        runtime,
        title="cardbureau graphical",
        description="Card faces from issuer designs, printed on an IPP printer.",
    )
    app.include_router(router)
    return app


router = APIRouter(prefix="/v1", tags=["graphical"])
DesignReader = Annotated[Principal, Depends(require("operator", "admin", "issuer"))]
Operator = Annotated[Principal, Depends(require("operator", "auditor", "admin"))]
PrintChecker = Annotated[Principal, Depends(require("service", "operator", "admin"))]


def _check_tenant(principal: Principal, issuer_id: str) -> None:
    if principal.role == "issuer" and principal.issuer_id != issuer_id:
        # Another issuer's design does not exist as far as this caller can tell.
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such issuer")


@router.get("/designs/{issuer_id}", summary="The issuer's card design (or the default)")
async def get_design(issuer_id: str, principal: DesignReader, request: Request) -> dict[str, Any]:
    _check_tenant(principal, issuer_id)
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        design = await GraphicalRepository(conn, runtime.schema).design_for(issuer_id)
    source = "issuer" if design is not None else "default"
    design = design or default_design(issuer_id)
    return {"issuer_id": issuer_id, "source": source, "design": design.model_dump(mode="json")}


@router.put("/designs/{issuer_id}", summary="Store the issuer's card design")
async def put_design(
    issuer_id: str, design: CardDesign, principal: DesignReader, request: Request
) -> dict[str, Any]:
    _check_tenant(principal, issuer_id)
    try:
        await asyncio.to_thread(_renderer(request).render, design, SAMPLE_FACE)
    except RenderError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    runtime = runtime_of(request)
    async with runtime.engine.begin() as conn:
        await GraphicalRepository(conn, runtime.schema).save_design(
            issuer_id, design, f"{principal.role}:{principal.name}"
        )
    return {"issuer_id": issuer_id, "source": "issuer", "design": design.model_dump(mode="json")}


@router.post(
    "/designs/{issuer_id}/preview",
    summary="Render the issuer's design with sample data (PNG)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def preview_design(issuer_id: str, principal: DesignReader, request: Request) -> Response:
    _check_tenant(principal, issuer_id)
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        design = await GraphicalRepository(conn, runtime.schema).design_for(issuer_id)
    design = design or default_design(issuer_id)
    try:
        png = await asyncio.to_thread(_renderer(request).render, design, SAMPLE_FACE)
    except RenderError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return Response(content=png, media_type="image/png")


PHOTO_TYPES = {"image/png", "image/jpeg"}


@router.put(
    "/photos/{issuer_id}/{card_id}",
    summary="The cardholder's photo for a card (PNG or JPEG body), for designs with a photo box",
)
async def put_photo(
    issuer_id: str, card_id: UUID, principal: DesignReader, request: Request
) -> dict[str, Any]:
    _check_tenant(principal, issuer_id)
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind not in PHOTO_TYPES:
        raise HTTPException(415, detail=f"send the photo as {' or '.join(sorted(PHOTO_TYPES))}")
    body = await request.body()
    try:
        await asyncio.to_thread(check_photo, body)
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    digest = hashlib.sha256(body).hexdigest()
    runtime = runtime_of(request)
    async with runtime.engine.begin() as conn:
        saved = await GraphicalRepository(conn, runtime.schema).save_photo(
            card_id, issuer_id, body, digest, f"{principal.role}:{principal.name}"
        )
    if not saved:  # another issuer's card: as if it did not exist
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such card")
    return {"card_id": str(card_id), "sha256": digest, "bytes": len(body)}


@router.get("/print-jobs/{card_id}", summary="The print job of one card")
async def get_print_job(card_id: UUID, _: Operator, request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        job = await GraphicalRepository(conn, runtime.schema).job_for_card(card_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no print job for card {card_id}")
    return {
        "job_id": str(job.job_id),
        "card_id": str(job.card_id),
        "batch_id": str(job.batch_id),
        "issuer_id": job.issuer_id,
        "status": job.status,
        "printer": job.printer,
        "design_id": job.design_id,
        "image_sha256": job.image_sha256,
        "job_name": job.job_name,
        "ipp_job_id": job.ipp_job_id,
        "attempts": job.attempts,
        "rejections": job.rejections,
        "last_problem": job.last_problem,
        "reason": job.reason,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "updated_at": job.updated_at.isoformat() if job.updated_at else None,
    }


@router.get(
    "/print-jobs/{card_id}/render",
    summary="The rendered face of a job waiting for the printer (PNG); dropped once printed",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def get_expected_render(card_id: UUID, who: PrintChecker, request: Request) -> Response:
    if who.role == "service" and who.name != "qa":
        raise HTTPException(403, detail=f"service {who.name!r} may not read card faces")
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        found = await GraphicalRepository(conn, runtime.schema).document_of_card(card_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rendered face for {card_id}")
    digest, png = found
    return Response(content=png, media_type="image/png", headers={"X-Image-Sha256": digest})


@router.get("/printer", summary="The card printer and its waiting jobs, as the operator sees it")
async def get_printer(_: Operator, request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    spooler: PrintSpooler = runtime.state["spooler"]
    await spooler.refresh_status(runtime)
    async with runtime.engine.connect() as conn:
        repo = GraphicalRepository(conn, runtime.schema)
        counts = await repo.job_counts()
        waiting = await repo.waiting_jobs()
    return spooler.view.as_dict() | {
        "jobs": counts,
        "waiting": [
            {
                "card_id": str(j.card_id),
                "status": j.status,
                "attempts": j.attempts,
                "ipp_job_id": j.ipp_job_id,
                "last_problem": j.last_problem,
            }
            for j in waiting
        ],
    }


def _renderer(request: Request) -> FaceRenderer:
    deps: GraphicalDeps = runtime_of(request).state["deps"]
    return deps.renderer
