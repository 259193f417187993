"""Retention per PCI Card Production: nothing of a card is kept longer than its use.

- Sensitive authentication data (the sealed CVV and iCVV, the encrypted PIN blocks, the offline
  PIN wrapped for the chip) is deleted once the card is personalized (QA passed) and its PIN
  mailer printed, or at once when it is destroyed or cancelled. CVV2 is never stored: the
  card face's print computes it again in the HSM under the product's CVK pair
  (emv/card_rows.print_cvk), a reprint after this purge too.
- Cardholder data (the vault record: PAN, name, address) is deleted a per-issuer number of days
  after dispatch (`retention_policies`, else `KeymgmtSettings.cardholder_retention_days`), or
  at once for a card destroyed or cancelled without being dispatched.
- Each purge is audited: a `card.data_purged` event per card (audit logs every event), in the
  same transaction as the deletion.

The milestones come from the other services' events (handlers.py): qa's card.qa_passed,
fulfillment's card.destroyed and shipment.dispatched, intake's card.cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from services.keymgmt.repository import KeymgmtRepository
from shared.events import CardDataPurged
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime

log = logging.getLogger(__name__)

PURGE_CHUNK = 500  # cards per transaction
Kind = Literal["sensitive-authentication-data", "cardholder-data"]


@dataclass
class PurgeReport:
    sensitive_authentication_data: int = 0
    cardholder_data: int = 0

    @property
    def total(self) -> int:
        return self.sensitive_authentication_data + self.cardholder_data


async def purge_chunk(
    uow: UnitOfWork[KeymgmtRepository], now: datetime, default_days: int, actor: str
) -> PurgeReport:
    """One transaction's worth of due deletions, each with its audit event."""
    repo = uow.repo.retention
    report = PurgeReport()
    sad = await repo.sad_due(PURGE_CHUNK)
    if sad:
        await repo.delete_sad([r["card_id"] for r in sad], now)
        await _audit(uow, sad, "sensitive-authentication-data", actor, "personalized or ended")
        report.sensitive_authentication_data = len(sad)
    held = await repo.cardholder_due(now, default_days, PURGE_CHUNK)
    if held:
        await repo.delete_cardholder([r["card_id"] for r in held], now)
        await _audit(uow, held, "cardholder-data", actor, "retention window after dispatch")
        report.cardholder_data = len(held)
        # The SAD left with the PAN (a PIN block is nothing without it) counts too.
        report.sensitive_authentication_data += sum(r["sad_purged_at"] is None for r in held)
    return report


async def _audit(
    uow: UnitOfWork[KeymgmtRepository],
    rows: list[dict[str, Any]],
    kind: Kind,
    actor: str,
    reason: str,
) -> None:
    for row in rows:
        kinds: list[Kind] = [kind]
        if kind == "cardholder-data" and row.get("sad_purged_at", True) is None:
            kinds.insert(0, "sensitive-authentication-data")  # deleted with the record
        await uow.emit(
            CardDataPurged(
                issuer_id=row["issuer_id"],
                actor=actor,
                card_id=row["card_id"],
                purged=kinds,
                reason=reason,
            )
        )


async def purge_due(runtime: ServiceRuntime, default_days: int, actor: str) -> PurgeReport:
    """Every due deletion, a chunk per transaction, until none is left."""
    total = PurgeReport()
    while True:
        async with runtime.unit_of_work() as uow:
            report = await purge_chunk(uow, datetime.now(UTC), default_days, actor)
        total.sensitive_authentication_data += report.sensitive_authentication_data
        total.cardholder_data += report.cardholder_data
        if report.total == 0:
            break
    if total.total:
        log.info(
            "retention purge",
            extra={
                "sensitive_authentication_data": total.sensitive_authentication_data,
                "cardholder_data": total.cardholder_data,
            },
        )
    return total


class RetentionPurger:
    """The purge job, a worker of keymgmt's runtime: a pass every `interval_s` seconds."""

    __name__ = "retention-purge"

    def __init__(self, default_days: int, interval_s: float, actor: str = "keymgmt") -> None:
        self.default_days, self.interval_s, self.actor = default_days, interval_s, actor

    async def __call__(self, runtime: ServiceRuntime) -> None:
        while True:
            try:
                await purge_due(runtime, self.default_days, self.actor)
            except asyncio.CancelledError:
                raise
            except Exception:  # the next pass retries; the rows stay until deleted
                log.exception("retention purge pass failed")
            await asyncio.sleep(self.interval_s)
