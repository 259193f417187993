"""The stale-batch sweep: a background worker that looks at batches with no event for a while,
reconciles those that are complete and reports each distinct discrepancy of the others once."""

from __future__ import annotations

import asyncio
import logging

from services.audit.deps import AuditDeps
from services.audit.handlers import ACTOR, evaluate_batch
from services.audit.repository import AuditRepository
from services.audit.settings import AuditSettings
from shared.service import ServiceRuntime

log = logging.getLogger(__name__)


async def sweep_once(runtime: ServiceRuntime, settings: AuditSettings) -> int:
    """One round. Returns how many batches emitted something."""
    async with runtime.unit_of_work() as uow:
        stale = await uow.repo.batches.stale_batches(
            settings.stale_after_seconds, settings.sweep_batch_limit
        )
    acted = 0
    for batch_id in stale:
        # One transaction per batch: a failure leaves the others swept.
        async with runtime.unit_of_work() as uow:
            repo: AuditRepository = uow.repo.batches
            batch = await repo.existing_batch(batch_id, lock=True)
            if batch is None:
                continue
            decision = await evaluate_batch(uow, repo, batch, report_discrepancy=True, actor=ACTOR)
        if decision.changed:
            acted += 1
    return acted


async def sweep_stale_batches(runtime: ServiceRuntime) -> None:
    deps: AuditDeps = runtime.deps
    settings = deps.settings
    while True:
        await asyncio.sleep(settings.sweep_interval_seconds)
        try:
            acted = await sweep_once(runtime, settings)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The next round retries; a dead sweep would hide discrepancies.
            log.exception("stale-batch sweep failed")
            continue
        if acted:
            log.info("stale-batch sweep acted", extra={"batches": acted})
