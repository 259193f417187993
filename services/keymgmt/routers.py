"""keymgmt's HTTP routers beyond app.py's core: product profiles and PIN data
(products_api.py), SIM products and batches (sim_api.py), SIM QA (sim_qa.py), key
ceremonies through the API (ceremony_api.py)."""

from fastapi import APIRouter

from services.keymgmt.ceremony_api import router as ceremony_router
from services.keymgmt.products_api import router as products_router
from services.keymgmt.sim_api import router as sim_router
from services.keymgmt.sim_qa import router as sim_qa_router

router = APIRouter()
router.include_router(ceremony_router)
router.include_router(products_router)
router.include_router(sim_router)
router.include_router(sim_qa_router)
