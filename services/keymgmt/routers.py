"""keymgmt's HTTP routers beyond app.py's core: product profiles and PIN data
(products_api.py), and key ceremonies run through the API (ceremony_api.py)."""

from fastapi import APIRouter

from services.keymgmt.products_api import router as products_router

router = APIRouter()
router.include_router(products_router)
