"""`python -m services.audit.witness`: serve the witness on 127.0.0.1:8108 (its own process)."""

import uvicorn

from services.audit.witness.app import build_app, build_witness
from services.audit.witness.settings import WitnessSettings
from shared.logs import configure_logging

settings = WitnessSettings()
configure_logging("witness", settings.log_level)
if not settings.logs():
    raise SystemExit("set BUREAU_WITNESS_LOG_VKEYS: the vkey of each log to witness")
uvicorn.run(
    build_app(build_witness(settings)),
    host=settings.host,
    port=settings.port,
    log_config=None,
    access_log=False,
)
