"""Graphical's HTTP API: issuer designs and their previews, cardholder photos, print jobs,
the rendered face QA compares with the printed one, and the printer as the operator sees it."""

from __future__ import annotations

import asyncio
import hashlib
import io
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from PIL import Image, ImageDraw

from services.graphical.deps import GraphicalDepsDep
from services.graphical.render import FACE_FORMAT, MAX_PHOTO_BYTES, RenderError, check_photo
from services.graphical.repository import GraphicalRepository
from services.graphical.service import CardDesign, FaceData, default_design
from shared.auth import Principal, require
from shared.errors import DomainError, Forbidden, Invalid, NotFound
from shared.limits import body_limit
from shared.service import RuntimeDep


class UnsupportedPhoto(DomainError):
    status_code = 415


def sample_photo() -> bytes:
    """A neutral silhouette: what previews and design checks show in a photo box."""
    image = Image.new("RGB", (300, 400), "#c8ccd2")
    draw = ImageDraw.Draw(image)
    draw.ellipse((95, 60, 205, 190), fill="#8a929c")
    draw.ellipse((40, 210, 260, 460), fill="#8a929c")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# A preview shows where a design's cvv2 field prints, with a made-up value.
SAMPLE_FACE = FaceData("JANE Q SAMPLE", "400000******0002", "3012", sample_photo(), "123")


router = APIRouter(prefix="/v1", tags=["graphical"])
DesignReader = Annotated[Principal, Depends(require("operator", "admin", "issuer"))]
Operator = Annotated[Principal, Depends(require("operator", "auditor", "admin"))]
PrintChecker = Annotated[Principal, Depends(require("service", "operator", "admin"))]


def _check_tenant(principal: Principal, issuer_id: str) -> None:
    if principal.role == "issuer" and principal.issuer_id != issuer_id:
        # Another issuer's design does not exist as far as this caller can tell.
        raise NotFound("no such issuer")


@router.get("/designs/{issuer_id}", summary="The issuer's card design (or the default)")
async def get_design(
    issuer_id: str, principal: DesignReader, runtime: RuntimeDep
) -> dict[str, Any]:
    _check_tenant(principal, issuer_id)
    async with runtime.unit_of_work() as uow:
        design = await uow.repo.design_for(issuer_id)
    source = "issuer" if design is not None else "default"
    design = design or default_design(issuer_id)
    return {"issuer_id": issuer_id, "source": source, "design": design.model_dump(mode="json")}


@router.put("/designs/{issuer_id}", summary="Store the issuer's card design")
async def put_design(
    issuer_id: str,
    design: CardDesign,
    principal: DesignReader,
    runtime: RuntimeDep,
    deps: GraphicalDepsDep,
) -> dict[str, Any]:
    _check_tenant(principal, issuer_id)
    try:
        await asyncio.to_thread(deps.renderer.render, design, SAMPLE_FACE)
    except RenderError as exc:
        raise Invalid(str(exc)) from exc
    async with runtime.unit_of_work() as uow:
        await uow.repo.save_design(issuer_id, design, f"{principal.role}:{principal.name}")
    return {"issuer_id": issuer_id, "source": "issuer", "design": design.model_dump(mode="json")}


@router.post(
    "/designs/{issuer_id}/preview",
    summary="Render the issuer's design with sample data (JPEG, as it goes to the printer)",
    response_class=Response,
    responses={200: {"content": {FACE_FORMAT: {}}}},
)
async def preview_design(
    issuer_id: str, principal: DesignReader, runtime: RuntimeDep, deps: GraphicalDepsDep
) -> Response:
    _check_tenant(principal, issuer_id)
    async with runtime.unit_of_work() as uow:
        design = await uow.repo.design_for(issuer_id)
    design = design or default_design(issuer_id)
    try:
        face = await asyncio.to_thread(deps.renderer.render, design, SAMPLE_FACE)
    except RenderError as exc:
        raise Invalid(str(exc)) from exc
    return Response(content=face, media_type=FACE_FORMAT)


PHOTO_TYPES = {"image/png", "image/jpeg"}


@router.put(
    "/photos/{issuer_id}/{card_id}",
    summary="The cardholder's photo for a card (PNG or JPEG body), for designs with a photo box",
)
@body_limit(MAX_PHOTO_BYTES)  # refused while it streams, before it is held whole
async def put_photo(
    issuer_id: str, card_id: UUID, principal: DesignReader, request: Request, runtime: RuntimeDep
) -> dict[str, Any]:
    _check_tenant(principal, issuer_id)
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind not in PHOTO_TYPES:
        raise UnsupportedPhoto(f"send the photo as {' or '.join(sorted(PHOTO_TYPES))}")
    body = await request.body()
    try:
        await asyncio.to_thread(check_photo, body)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    digest = hashlib.sha256(body).hexdigest()
    async with runtime.unit_of_work() as uow:
        saved = await uow.repo.save_photo(
            card_id, issuer_id, body, digest, f"{principal.role}:{principal.name}"
        )
    if not saved:  # another issuer's card: as if it did not exist
        raise NotFound("no such card")
    return {"card_id": str(card_id), "sha256": digest, "bytes": len(body)}


@router.get("/print-jobs/{card_id}", summary="The print job of one card")
async def get_print_job(card_id: UUID, _: Operator, runtime: RuntimeDep) -> dict[str, Any]:
    async with runtime.unit_of_work() as uow:
        job = await uow.repo.job_for_card(card_id)
    if job is None:
        raise NotFound(f"no print job for card {card_id}")
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
    summary="The rendered face of a job waiting for the printer (JPEG); dropped once printed",
    response_class=Response,
    responses={200: {"content": {FACE_FORMAT: {}}}},
)
async def get_expected_render(card_id: UUID, who: PrintChecker, runtime: RuntimeDep) -> Response:
    if who.role == "service" and who.name != "qa":
        raise Forbidden(f"service {who.name!r} may not read card faces")
    async with runtime.unit_of_work() as uow:
        found = await uow.repo.document_of_card(card_id)
    if found is None:
        raise NotFound(f"no rendered face for {card_id}")
    digest, face = found
    return Response(content=face, media_type=FACE_FORMAT, headers={"X-Image-Sha256": digest})


@router.get("/printer", summary="The card printer and its waiting jobs, as the operator sees it")
async def get_printer(_: Operator, runtime: RuntimeDep, deps: GraphicalDepsDep) -> dict[str, Any]:
    spooler = deps.spooler
    await spooler.refresh_status(runtime)
    async with runtime.unit_of_work() as uow:
        repo: GraphicalRepository = uow.repo
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
