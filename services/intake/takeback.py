"""Taking vaulted cardholder records back out of keymgmt when their order did not commit.

Before each vault call intake commits a take-back row naming the call's card ids (card ids
only, no cardholder data; `vault_takebacks`), and the order's transaction deletes it
(orders.Vaulted.pledge). An order that commits takes its rows with it; an order that fails
leaves them, however it fails: refused after vaulting, a database error, a lost commit, a
cancelled request, the process killed. The failing request asks keymgmt to forget at once and
closes its rows when it confirms (orders.forgotten_unless_committed); what keymgmt could not
take then stays, and `TakeBackWorker` retries each row, with a capped backoff, until keymgmt
confirms (POST /v1/vault/cards/forget, idempotent). A row an order in flight holds is locked by
its transaction and skipped.
"""

from __future__ import annotations

import asyncio
import logging

from services.intake.orders import PanVault
from shared.keymgmt.contract import VaultForget
from shared.service import ServiceRuntime

log = logging.getLogger(__name__)


class TakeBackWorker:
    """A runtime worker: one due take-back row per transaction, until none is due, then a
    nap of `period_s`."""

    __name__ = "vault-take-back"

    def __init__(
        self, vault: PanVault, period_s: float = 1.0, backoff_s: float = 1.0, cap_s: float = 60.0
    ) -> None:
        self.vault = vault
        self.period_s, self.backoff_s, self.cap_s = period_s, backoff_s, cap_s

    async def __call__(self, runtime: ServiceRuntime) -> None:
        while True:
            try:
                worked = await self.take_back_one(runtime)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away: the rows wait for the next pass
                log.exception("vault take-back pass failed")
                worked = False
            if not worked:
                await asyncio.sleep(self.period_s)

    async def take_back_one(self, runtime: ServiceRuntime) -> bool:
        """True when a row was taken back (there may be more)."""
        async with runtime.unit_of_work() as uow:
            row = await uow.repo.due_takeback()
            if row is None:
                return False
            request = VaultForget(issuer_id=row["issuer_id"], card_ids=list(row["card_ids"]))
            extra = {"issuer_id": row["issuer_id"], "cards": len(request.card_ids)}
            try:
                answer = await self.vault.forget_cards(request)
            except Exception as exc:
                delay = min(self.cap_s, self.backoff_s * 2 ** min(row["attempts"], 16))
                problem = f"{exc.__class__.__name__}: {exc}"
                await uow.repo.takeback_failed(row["id"], problem, delay)
                log.warning(
                    "vault take-back failed; retrying",
                    extra=extra | {"attempts": row["attempts"] + 1, "retry_in_s": delay},
                )
                return False
            await uow.repo.close_takebacks([row["id"]])
        log.info(
            "vault records of a failed order taken back",
            extra=extra | {"forgotten": answer.forgotten, "kept": len(answer.kept)},
        )
        return True
