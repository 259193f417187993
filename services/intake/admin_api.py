"""Admins register issuers and their products and hand out issuer API tokens."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from services.intake.repository import IntakeRepository
from services.intake.schemas import IssuerCreate, ProductCreate
from shared.auth import Principal, require, token_digest
from shared.errors import Conflict, NotFound
from shared.service import RuntimeDep

router = APIRouter(tags=["admin"])
Admin = Annotated[Principal, Depends(require("admin"))]


@router.post("/v1/admin/issuers", status_code=201)
async def create_issuer(body: IssuerCreate, _: Admin, runtime: RuntimeDep) -> dict[str, str]:
    async with runtime.unit_of_work() as uow:
        if not await uow.repo.add_issuer(body.issuer_id, body.name):
            raise Conflict(f"issuer {body.issuer_id!r} already exists")
    return {"issuer_id": body.issuer_id}


@router.post("/v1/admin/issuers/{issuer_id}/credentials", status_code=201)
async def rotate_credentials(
    issuer_id: str, _: Admin, runtime: RuntimeDep, revoke_existing: bool = False
) -> dict[str, Any]:
    """A new API token for the issuer, shown once; optionally revoke the old ones."""
    token = "iss_" + secrets.token_urlsafe(32)
    async with runtime.unit_of_work() as uow:
        repo: IntakeRepository = uow.repo
        if not await repo.issuer_exists(issuer_id):
            raise NotFound(f"no issuer {issuer_id!r}")
        revoked = await repo.revoke_credentials(issuer_id) if revoke_existing else 0
        await repo.add_credential(issuer_id, token_digest(token))
    return {"issuer_id": issuer_id, "token": token, "revoked": revoked}


@router.post("/v1/admin/issuers/{issuer_id}/products", status_code=201)
async def create_product(
    issuer_id: str, body: ProductCreate, _: Admin, runtime: RuntimeDep
) -> dict[str, str]:
    async with runtime.unit_of_work() as uow:
        repo: IntakeRepository = uow.repo
        if not await repo.issuer_exists(issuer_id):
            raise NotFound(f"no issuer {issuer_id!r}")
        if not await repo.add_product(issuer_id, body.product_id, body.name, body.kind):
            raise Conflict(f"product {body.product_id!r} already exists")
    return {"issuer_id": issuer_id, "product_id": body.product_id}
