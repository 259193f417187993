"""The HSM keeper: a worker that opens the HSM session (retrying until it opens), surveys which
secret-handling operations the token runs (hsm/mechanisms.py: logged, in /ready, and refused in
production when any is missing), makes sure the bureau keys exist, and holds the session open in
the gate until shutdown. Readiness reports every failure on the way (hsm/gate.py)."""

from __future__ import annotations

import asyncio
import logging

from services.keymgmt.hsm.gate import HsmGate
from services.keymgmt.hsm.process import process_hsm, survey_mechanisms
from services.keymgmt.keys.service import ensure_bureau_keys
from services.keymgmt.settings import KeymgmtSettings
from shared.service import ServiceRuntime

log = logging.getLogger(__name__)


class HsmKeeper:
    """A runtime worker (shared.service.Worker) keeping `gate` filled."""

    __name__ = "keep_hsm_open"

    def __init__(self, settings: KeymgmtSettings, gate: HsmGate) -> None:
        self.settings, self.gate = settings, gate

    async def __call__(self, runtime: ServiceRuntime) -> None:
        settings, gate = self.settings, self.gate
        while True:
            try:
                async with process_hsm(settings) as hsm:
                    gate.inventory = await survey_mechanisms(hsm, settings)
                    log.info(
                        "hsm mechanism inventory",
                        extra={"production": settings.hsm_only, **gate.inventory.report()},
                    )
                    async with runtime.unit_of_work() as uow:
                        await ensure_bureau_keys(uow.repo.keys, hsm, settings)
                    gate.hsm, gate.problem = hsm, ""
                    log.info("hsm session ready", extra={"token": settings.hsm_token})
                    try:
                        await asyncio.Event().wait()
                    finally:
                        gate.hsm, gate.problem = None, "HSM session closed"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                gate.problem = f"cannot use the HSM: {exc.__class__.__name__}: {exc}"
                log.error("hsm unavailable; retrying", extra={"problem": gate.problem})
                await asyncio.sleep(settings.hsm_retry_seconds)
