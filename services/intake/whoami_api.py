"""`GET /v1/whoami`: the issuer an API token speaks for, so other services can accept issuer
tokens without holding credentials themselves (shared/issuer_tokens.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from shared.auth import Principal, require

router = APIRouter()
Issuer = Annotated[Principal, Depends(require("issuer"))]


@router.get("/v1/whoami", tags=["credentials"], summary="The issuer this token speaks for")
async def whoami(who: Issuer) -> dict[str, str | None]:
    return {"role": who.role, "issuer_id": who.issuer_id}
