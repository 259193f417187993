"""The ICC key pool's refill: pairs generated in the HSM (card_oda.generate_pool_pairs, a few per
HSM-worker call so card preparation and stations interleave), stored wrapped and counted in
icc_key_pool. ``PoolRefiller`` is a runtime worker keeping at least ``low`` free pairs; the
refill endpoint (keys/oda_api.py) adds a given number at once."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from services.keymgmt.emv.card_oda import ICC_BITS, generate_pool_pairs
from services.keymgmt.hsm.gate import HsmGate
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.hsm.storage import ICC_POOL_KEY
from shared.service import ServiceRuntime

log = logging.getLogger(__name__)
PAIRS_PER_CALL = 10


async def refill_pool(runtime: ServiceRuntime, hsm: Hsm, count: int) -> int:
    """Add ``count`` pairs to the pool (one transaction per HSM call); the free count after."""
    added, free = 0, 0
    while added < count:
        step = min(PAIRS_PER_CALL, count - added)
        pairs = await hsm.call(generate_pool_pairs, step)
        rows = [
            {
                "pool_key_label": ICC_POOL_KEY,
                "bits": ICC_BITS,
                "modulus": p.public.modulus,
                "exponent": p.public.exponent,
                "wrapped": p.wrapped,
            }
            for p in pairs
        ]
        async with runtime.unit_of_work() as uow:
            await uow.repo.oda.add_pool_pairs(rows)
            free = await uow.repo.oda.free_pool_pairs()
        added += step
    log.info("icc key pool refilled", extra={"added": added, "free": free})
    return free


@dataclass
class PoolRefiller:
    """A runtime worker: every ``period`` seconds, tops the pool up to ``target`` free pairs
    when it has fallen under ``low``."""

    gate: HsmGate
    low: int
    target: int
    period: float = 2.0
    __name__ = "refill_icc_key_pool"

    async def __call__(self, runtime: ServiceRuntime) -> None:
        while True:
            try:
                hsm = self.gate.hsm
                if hsm is not None and self.target > 0:
                    async with runtime.unit_of_work() as uow:
                        free = await uow.repo.oda.free_pool_pairs()
                    if free < self.low:
                        await refill_pool(runtime, hsm, self.target - free)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("icc key pool refill failed; retrying")
            await asyncio.sleep(self.period)
