"""The auditor web page: static HTML and JavaScript calling the audit API with the auditor's
own bearer token (the page itself holds no data, so it is served without one)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"
router = APIRouter(tags=["auditor page"])
# The page loads nothing from elsewhere and is never framed.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@router.get("/auditor", include_in_schema=False)
async def auditor_page() -> FileResponse:
    return FileResponse(STATIC / "auditor.html", media_type="text/html", headers=_HEADERS)


@router.get("/auditor/app.js", include_in_schema=False)
async def auditor_script() -> FileResponse:
    return FileResponse(STATIC / "app.js", media_type="text/javascript", headers=_HEADERS)
