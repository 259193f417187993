"""The ICC key pool's refill: pairs generated in the HSM (card_oda.generate_pool_pairs, a few per
HSM-worker call so card preparation and stations interleave), stored wrapped and counted in
icc_key_pool. ``PoolRefiller`` is a runtime worker keeping at least ``low`` free pairs; the
refill endpoint (keys/oda_api.py) adds a given number at once.

Every pool change is audited through the outbox in its own transaction: `icc_key_pool.refilled`
per stored step (pool ids and public-modulus fingerprints) and `icc_key_pair.drawn` per card that
takes a pair (preparation.py), so audit's log shows each pair's origin and the card it went to.
The free count is the `bureau_icc_key_pool_free` gauge."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from services.keymgmt.emv.card_oda import ICC_BITS, generate_pool_pairs
from services.keymgmt.hsm.gate import HsmGate
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.hsm.storage import ICC_POOL_KEY
from shared.events import Event, IccKeyPairDrawn, IccKeyPoolRefilled
from shared.metrics import set_icc_pool_free
from shared.service import ServiceRuntime

log = logging.getLogger(__name__)
PAIRS_PER_CALL = 10
POOL_ISSUER = "bureau"  # the pool serves every issuer; its refills are the bureau's own


class Emitter(Protocol):
    """A unit of work's outbox (shared.outbox.UnitOfWork)."""

    async def emit(self, event: Event, topic: str | None = None) -> None: ...


def fingerprint(modulus: bytes) -> str:
    """How events name a pool pair: SHA-256 of its public modulus, hex."""
    return hashlib.sha256(modulus).hexdigest()


async def emit_draws(
    uow: Emitter, draws: Iterable[tuple[UUID, str, int, bytes]], actor: str
) -> None:
    """One `icc_key_pair.drawn` per (card id, issuer, pool id, modulus), in the draw's
    transaction."""
    for card_id, issuer_id, pool_id, modulus in draws:
        await uow.emit(
            IccKeyPairDrawn(
                issuer_id=issuer_id,
                actor=actor,
                card_id=card_id,
                pool_id=pool_id,
                pool_key_label=ICC_POOL_KEY,
                fingerprint=fingerprint(modulus),
            )
        )


async def refill_pool(runtime: ServiceRuntime, hsm: Hsm, count: int, actor: str = "keymgmt") -> int:
    """Add ``count`` pairs to the pool (one transaction per HSM call, each with its audited
    `icc_key_pool.refilled`); the free count after."""
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
            ids = await uow.repo.oda.add_pool_pairs(rows)
            free = await uow.repo.oda.free_pool_pairs()
            await uow.emit(
                IccKeyPoolRefilled(
                    issuer_id=POOL_ISSUER,
                    actor=actor,
                    pool_key_label=ICC_POOL_KEY,
                    bits=ICC_BITS,
                    count=len(ids),
                    pool_ids=ids,
                    fingerprints=[fingerprint(p.public.modulus) for p in pairs],
                    pool_size=free,
                )
            )
        set_icc_pool_free(free)
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
                async with runtime.unit_of_work() as uow:
                    free = await uow.repo.oda.free_pool_pairs()
                set_icc_pool_free(free)
                hsm = self.gate.hsm
                if hsm is not None and self.target > 0 and free < self.low:
                    await refill_pool(runtime, hsm, self.target - free)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("icc key pool refill failed; retrying")
            await asyncio.sleep(self.period)
