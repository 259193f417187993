"""What every accepted order writes, whether it came as JSON or as a bulk file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import IO, Any, Protocol
from uuid import UUID

import httpx
from pydantic import ValidationError

from services.intake.repository import IntakeRepository
from services.intake.schemas import OrderSummary
from services.intake.webhooks import delivery
from shared import events
from shared.errors import Conflict, Unavailable
from shared.keymgmt.client import RetryPolicy
from shared.keymgmt.contract import (
    VaultedCard,
    VaultForget,
    VaultForgotten,
    VaultStored,
    vault_store_json,
)
from shared.keymgmt.errors import KeymgmtBadResponse, KeymgmtRefused, KeymgmtUnavailable
from shared.outbox import UnitOfWork
from shared.telemetry import new_card_trace

log = logging.getLogger(__name__)

# An order waits on the vault: a few tries, then the issuer is told to retry (503). Sealing a
# large chunk of cards in the HSM takes long, reaching keymgmt must not.
VAULT_RETRY = RetryPolicy(max_attempts=3, backoff_s=0.5)
VAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
VAULT_UNAVAILABLE = "the PAN vault (keymgmt) is unavailable; retry the order later"


class PanVault(Protocol):
    """keymgmt's PAN vault (shared/keymgmt/client.py): the clear PAN leaves intake here."""

    async def store_cards_json(self, body: bytes) -> VaultStored:
        """POST /v1/vault/cards with a body written by contract.vault_store_json."""
        ...

    async def forget_cards(self, request: VaultForget) -> VaultForgotten:
        """POST /v1/vault/cards/forget: the records of an order that did not go through."""
        ...

    async def aclose(self) -> None: ...


# The service's own transactions (ServiceRuntime.unit_of_work), beside the order's.
Transactions = Callable[[], AbstractAsyncContextManager[UnitOfWork[IntakeRepository]]]


class Vaulted:
    """Card ids handed to the vault, spooled to an unlinked temporary file (16 bytes each): a
    100,000-card file's ids are not held in memory while it is written. Card ids are not
    cardholder data; the file goes with the request. With `transactions`, each vault call's
    ids are also a take-back row (takeback.py): committed before the call, deleted by the
    order's transaction, so an order that fails, however it fails, leaves its row behind."""

    def __init__(
        self,
        directory: str | None = None,
        issuer_id: str = "",
        transactions: Transactions | None = None,
    ) -> None:
        self._directory = directory
        self._file: IO[bytes] | None = None
        self._count = 0
        self._issuer_id = issuer_id
        self.transactions = transactions
        self.rows: list[int] = []  # the take-back rows of this order

    async def pledge(self, uow: UnitOfWork[IntakeRepository], card_ids: Sequence[UUID]) -> None:
        """Before a vault call: the ids join the spool and, durably, a take-back row that the
        order's transaction deletes (restored if it rolls back, locked until it ends)."""
        self.extend(card_ids)
        if self.transactions is None:
            return
        async with self.transactions() as own:
            row = await own.repo.open_takeback(self._issuer_id, list(card_ids))
        self.rows.append(row)
        await uow.repo.close_takebacks([row])

    def extend(self, card_ids: Sequence[UUID]) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._directory)  # unlinked at once
        self._file.seek(0, os.SEEK_END)
        self._file.write(b"".join(card_id.bytes for card_id in card_ids))
        self._count += len(card_ids)

    def __len__(self) -> int:
        return self._count

    def chunks(self, size: int) -> Iterator[list[UUID]]:
        if self._file is None:
            return
        self._file.seek(0)
        while block := self._file.read(16 * size):
            yield [UUID(bytes=block[i : i + 16]) for i in range(0, len(block), 16)]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# Card ids per forget call when a failed order's records leave the vault again.
FORGET_CHUNK = 10_000


@contextlib.asynccontextmanager
async def forgotten_unless_committed(
    vault: PanVault,
    issuer_id: str,
    spool_dir: str | None = None,
    transactions: Transactions | None = None,
) -> AsyncIterator[Vaulted]:
    """The order's vaulted card ids go in the yielded Vaulted as the vault takes them (pledge);
    if the block fails (a refusal after vaulting, a database error, a lost commit, a cancelled
    request), those records are deleted from the vault again, so a refused or failed order
    leaves nothing there. Wrap the unit of work, so the commit is inside. With `transactions`
    (the service's), what keymgmt cannot delete now stays as take-back rows, retried by the
    take-back worker until it confirms; a process that dies mid-order leaves them too."""
    vaulted = Vaulted(spool_dir, issuer_id, transactions)
    try:
        yield vaulted
    except BaseException:
        if vaulted:
            # Shielded: a cancelled request still takes its records back out of the vault.
            await asyncio.shield(_take_back(vault, issuer_id, vaulted))
        raise
    finally:
        vaulted.close()


async def _take_back(vault: PanVault, issuer_id: str, vaulted: Vaulted) -> None:
    if not await _forget(vault, issuer_id, vaulted) or vaulted.transactions is None:
        return
    try:
        async with vaulted.transactions() as uow:
            await uow.repo.close_takebacks(vaulted.rows)
    except Exception as exc:  # the worker asks keymgmt again: forgetting twice does nothing
        log.warning("take-back rows not closed", extra={"error": exc.__class__.__name__})


async def _forget(vault: PanVault, issuer_id: str, vaulted: Vaulted) -> bool:
    """Every chunk deleted from the vault (True), or the failures logged."""
    done = True
    for chunk in vaulted.chunks(FORGET_CHUNK):
        try:
            await vault.forget_cards(VaultForget(issuer_id=issuer_id, card_ids=chunk))
        except Exception as exc:
            done = False
            extra = {"issuer_id": issuer_id, "cards": len(chunk)}
            if vaulted.rows:  # durable: the take-back worker retries them
                log.warning(
                    "vault records of a failed order not deleted yet; the take-back worker retries",
                    extra=extra | {"error": exc.__class__.__name__},
                )
            else:  # the retention purge does not see these (no card refers to them)
                log.exception("vault records of a failed order could not be deleted", extra=extra)
    return done


async def vault_cards(
    vault: PanVault, issuer_id: str, cards: list[dict[str, Any]]
) -> dict[UUID, VaultedCard]:
    """Vault the records: card_id -> its pan_token and masked_pan. Unavailable (503) when the
    vault cannot take them, and nothing is written."""
    try:
        # One card's model at a time, straight to JSON: bulk uploads run in bounded memory.
        body = vault_store_json(issuer_id, cards)
    except ValidationError:  # keymgmt would refuse them just so; `from None`: the PANs
        raise Unavailable("vault refused the cards: HTTP 422") from None
    # The records are not kept here while keymgmt seals them.
    storing = vault.store_cards_json(body)
    del cards, body
    try:
        stored = await storing
    except KeymgmtUnavailable as exc:
        raise Unavailable(VAULT_UNAVAILABLE) from exc
    except KeymgmtRefused as exc:
        raise Unavailable(f"vault refused the cards: HTTP {exc.status}") from exc
    except KeymgmtBadResponse as exc:
        raise Unavailable(f"the PAN vault answered outside its contract: {exc}") from exc
    return stored.by_card()


async def record_acceptance(
    uow: UnitOfWork[IntakeRepository], order: dict[str, Any], actor: str
) -> None:
    """order.received, order.accepted and stock.issued for the batch, the order's first event
    and the issuer's callback, in the order's transaction (the cards are emitted by the
    caller, chunk by chunk)."""
    issuer_id = order["issuer_id"]
    common = {"issuer_id": issuer_id, "actor": actor}
    await uow.emit(
        events.OrderReceived(
            **common,
            order_id=order["order_id"],
            product_id=order["product_id"],
            card_count=order["card_count"],
            external_ref=order["external_ref"],
        )
    )
    accepted = events.OrderAccepted(
        **common,
        order_id=order["order_id"],
        batch_id=order["batch_id"],
        product_id=order["product_id"],
        card_count=order["card_count"],
    )
    await uow.emit(accepted)
    await uow.emit(
        events.StockIssued(
            **common,
            batch_id=order["batch_id"],
            product_id=order["product_id"],
            quantity=order["card_count"],
        )
    )
    repo = uow.repo
    data = {
        "order_id": str(order["order_id"]),
        "external_ref": order["external_ref"],
        "product_id": order["product_id"],
        "card_count": order["card_count"],
    }
    await repo.add_order_events(
        [
            {
                "order_id": order["order_id"],
                "issuer_id": issuer_id,
                "event_id": accepted.event_id,
                "type": accepted.type,
                "card_id": None,
                "occurred_at": accepted.occurred_at,
                "detail": {"card_count": order["card_count"]},
            }
        ]
    )
    await repo.enqueue_webhooks(
        [
            delivery(
                issuer_id,
                "order.accepted",
                str(order["order_id"]),
                data,
                accepted.occurred_at.isoformat(),
            )
        ]
    )


async def emit_cards_ordered(
    uow: UnitOfWork[IntakeRepository],
    order: dict[str, Any],
    cards: Sequence[dict[str, Any]],
    actor: str,
) -> None:
    for card in cards:
        await uow.emit(
            events.CardOrdered(
                issuer_id=order["issuer_id"],
                actor=actor,
                card_id=card["card_id"],
                order_id=order["order_id"],
                batch_id=order["batch_id"],
                product_id=order["product_id"],
                pan_token=card["pan_token"],
                masked_pan=card["masked_pan"],
                expiry=card["expiry"],
                sequence=card["sequence"],
                trace=new_card_trace(str(card["card_id"])),
            )
        )


async def check_stock(repo: IntakeRepository, issuer_id: str, product_id: str, needed: int) -> None:
    """Refuses an order (a batch) the vault has not enough blanks for. Locks the product's
    stock until the order's transaction ends, so two orders cannot spend the same blanks."""
    await repo.lock_stock(issuer_id, product_id)
    on_hand = await repo.stock_on_hand(issuer_id, product_id)
    if on_hand < needed:
        raise Conflict(
            f"not enough blank stock for {product_id!r}: {on_hand} on hand, {needed} needed"
        )


def summary(order: dict[str, Any], counts: dict[str, int] | None = None) -> OrderSummary:
    return OrderSummary(
        order_id=order["order_id"],
        batch_id=order["batch_id"],
        external_ref=order["external_ref"],
        product_id=order["product_id"],
        status=order["status"],
        card_count=order["card_count"],
        priority=order.get("priority", 0),
        created_at=order.get("created_at"),
        cards_by_status=counts or {},
    )
