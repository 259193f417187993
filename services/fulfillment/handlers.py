"""Event handlers of the fulfillment service.

qa_passed -> carrier letter printed, fed and scanned: barcode matches the card -> card.packed
and its PIN mailer printed by keymgmt (pin_mailer.printed); no match -> awaiting destruction.
qa_failed / spoiled -> awaiting destruction; batch.reconciled -> the cards' shipment and, apart,
the PIN mailers' shipment (shipment.dispatched each); batch.discrepancy -> batch held.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from services.fulfillment.barcode import BarcodeError
from services.fulfillment.carrier import (
    CarrierLetter,
    parse_barcode,
    render_carrier,
    scan_carrier,
)
from services.fulfillment.deps import FulfillmentDeps
from services.fulfillment.dispatch import dispatch_packed_cards
from services.fulfillment.inserter import Inserter
from services.fulfillment.repository import FulfillmentRepository
from services.fulfillment.service import (
    carrier_id_for,
    state_after_packing,
    state_after_rejection,
)
from shared.events import (
    BatchDiscrepancy,
    BatchReconciled,
    CardPacked,
    CardQaFailed,
    CardQaPassed,
    CardSpoiled,
    PinMailerPrinted,
)
from shared.handlers import Batch, HandlerSpec, PoisonEvent
from shared.keymgmt.contract import MailingData, PinMailerRequest, PinMailerState
from shared.keymgmt.errors import KeymgmtBadResponse, KeymgmtRefused, KeymgmtUnavailable
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)


def carrier_problem(letter: CarrierLetter, fed: bytes) -> tuple[str, str | None]:
    """What the scanner read on the fed letter, and why it does not match the card (None:
    it does). The scan reads the barcode from the letter's rendered pixels."""
    try:
        scanned = scan_carrier(fed)
        chip, card_id = parse_barcode(scanned)
    except BarcodeError as exc:
        return "", f"carrier unreadable: {exc}"
    if card_id != letter.card_id:
        return scanned, f"carrier mismatch: the letter fed is for card {card_id}"
    if chip != letter.chip_serial.upper():
        return scanned, f"carrier mismatch: the letter names chip {chip}, not {letter.chip_serial}"
    return scanned, None


def letter_for(event: CardQaPassed, carrier_id: str, mailing: MailingData) -> CarrierLetter:
    address = mailing.address
    return CarrierLetter(
        card_id=event.card_id,
        chip_serial=event.chip_serial,
        carrier_id=carrier_id,
        cardholder_name=mailing.cardholder_name,
        address_lines=(*address.lines, f"{address.postcode} {address.city}", address.country),
        issuer_name=event.issuer_id,
    )


@dataclass(frozen=True)
class CarrierCheck:
    """A card's letter printed, fed and scanned: what was read and why it fails (None: ok)."""

    carrier_id: str
    mailing: MailingData
    scanned: str
    problem: str | None


async def pack_cards(
    uow: UnitOfWork[FulfillmentRepository], events: Sequence[CardQaPassed], deps: FulfillmentDeps
) -> None:
    """A run of qa_passed: the cards' letters (address from keymgmt, render, inserter, scan)
    and then their PIN mailers (keymgmt prints each, following its job) are waited for
    together, so the floor's packing is not one card's round trips after another's; the
    database writes stay one card at a time, in the run's transaction."""
    todo = [event for event in events if await _to_pack(uow.repo, event)]
    checks = await asyncio.gather(*(_carrier_check(event, deps) for event in todo))
    passed = [(e, c) for e, c in zip(todo, checks, strict=True) if c.problem is None]
    mailers = await asyncio.gather(*(_pin_mailer(event, deps) for event, _ in passed))
    printed = dict(zip([e.card_id for e, _ in passed], mailers, strict=True))
    for event, check in zip(todo, checks, strict=True):
        await _pack_checked(uow, event, deps, check, printed.get(event.card_id))


async def _to_pack(repo: FulfillmentRepository, event: CardQaPassed) -> bool:
    await repo.lock("card", event.card_id)
    current = await repo.card_state(event.card_id)
    if state_after_packing(current) is None:
        log.warning(
            "qa_passed for a card already handled; not packing it",
            extra={"card_id": str(event.card_id), "state": current},
        )
        return False
    return True


async def _carrier_check(event: CardQaPassed, deps: FulfillmentDeps) -> CarrierCheck:
    try:
        mailing = await deps.keymgmt.mailing(event.card_id)
    except KeymgmtRefused as exc:
        if exc.not_found:
            raise PoisonEvent(f"keymgmt holds no card {event.card_id}") from exc
        raise
    carrier_id = carrier_id_for(event.card_id)
    letter = letter_for(event, carrier_id, mailing)
    scanned, problem = await asyncio.to_thread(_carrier_line, deps.inserter, event, letter)
    return CarrierCheck(carrier_id, mailing, scanned, problem)


# PDFium (the scanner's rasteriser) is not thread-safe: two letters scanned at once crashed the
# process (SIGSEGV). The carrier line takes one letter at a time; a run overlaps only its waits.
_CARRIER_LINE = threading.Lock()


def _carrier_line(
    inserter: Inserter, event: CardQaPassed, letter: CarrierLetter
) -> tuple[str, str | None]:
    """Print the letter, feed it and scan it: what was read, and why it fails (None: ok)."""
    with _CARRIER_LINE:
        pdf = render_carrier(letter)
        inserter.print_letter(event.batch_id, letter.carrier_id, pdf)
        fed = inserter.feed(event.batch_id, letter.carrier_id)
        return carrier_problem(letter, fed)


async def _pack_checked(
    uow: UnitOfWork[FulfillmentRepository],
    event: CardQaPassed,
    deps: FulfillmentDeps,
    check: CarrierCheck,
    mailer: PinMailerState | None,
) -> None:
    repo = uow.repo
    if check.problem is not None:
        # The match check failed: the card never goes into an envelope; it is destroyed.
        await asyncio.to_thread(deps.inserter.discard, event.batch_id, check.carrier_id)
        await _set_aside(
            uow,
            event.card_id,
            event.batch_id,
            event.issuer_id,
            event.chip_serial,
            f"fulfillment: {check.problem}",
        )
        return
    await repo.lock("batch", event.batch_id)
    await repo.pack_card(
        batch_id=event.batch_id,
        issuer_id=event.issuer_id,
        chip_serial=event.chip_serial,
        carrier_id=check.carrier_id,
        mailing=check.mailing,
    )
    await repo.set_carrier_scan(event.card_id, check.scanned)
    if mailer is not None:
        await record_pin_mailer(uow, event, deps, mailer)
    await uow.emit(
        CardPacked(
            issuer_id=event.issuer_id,
            actor=deps.actor,
            card_id=event.card_id,
            batch_id=event.batch_id,
            carrier_id=check.carrier_id,
        )
    )
    if await repo.batch_status(event.batch_id) == "reconciled":
        # The qa topic ran behind the audit topic: ship this card after its batch.
        log.warning("card packed after its batch was reconciled; shipping it on its own")
        await dispatch_packed_cards(uow, event.batch_id, event.issuer_id, event, deps)


async def _pin_mailer(event: CardQaPassed, deps: FulfillmentDeps) -> PinMailerState | None:
    """keymgmt prints the mailer; a job still running raises, and the event is retried
    (the whole packing with it: keymgmt answers the same mailer again). None: no PIN."""
    request = PinMailerRequest(card_id=event.card_id, batch_id=event.batch_id)
    try:
        mailer = await deps.keymgmt.pin_mailer(request)
    except (KeymgmtRefused, KeymgmtBadResponse) as exc:
        raise PoisonEvent(f"PIN mailer: {exc}") from exc
    if mailer is not None and mailer.status not in ("printed", "spoiled"):
        raise KeymgmtUnavailable(f"PIN mailer {mailer.mailer_id} is still {mailer.status}")
    return mailer


async def record_pin_mailer(
    uow: UnitOfWork[FulfillmentRepository],
    event: CardQaPassed,
    deps: FulfillmentDeps,
    mailer: PinMailerState,
) -> None:
    state = "printed" if mailer.status == "printed" else "spoiled"
    fresh = await uow.repo.record_pin_mailer(
        event.card_id, mailer.mailer_id, event.batch_id, event.issuer_id, state
    )
    if fresh and state == "printed":
        await uow.emit(
            PinMailerPrinted(
                issuer_id=event.issuer_id,
                actor=deps.actor,
                card_id=event.card_id,
                batch_id=event.batch_id,
                mailer_id=str(mailer.mailer_id),
            )
        )
    elif state == "spoiled":
        log.warning("PIN mailer spoiled at the PIN printer", extra={"card_id": str(event.card_id)})


async def set_aside_qa_reject(
    uow: UnitOfWork[FulfillmentRepository], event: CardQaFailed, deps: FulfillmentDeps
) -> None:
    await _set_aside(
        uow,
        event.card_id,
        event.batch_id,
        event.issuer_id,
        event.chip_serial,
        f"qa: {event.reason}",
    )


async def set_aside_spoiled(
    uow: UnitOfWork[FulfillmentRepository], event: CardSpoiled, deps: FulfillmentDeps
) -> None:
    await _set_aside(
        uow,
        event.card_id,
        event.batch_id,
        event.issuer_id,
        event.chip_serial,
        f"{event.stage}: {event.reason}",
    )


async def release_batch(
    uow: UnitOfWork[FulfillmentRepository], event: BatchReconciled, deps: FulfillmentDeps
) -> None:
    repo = uow.repo
    await repo.lock("batch", event.batch_id)
    await repo.set_batch_status(event.batch_id, event.issuer_id, "reconciled", event.counts)
    await dispatch_packed_cards(uow, event.batch_id, event.issuer_id, event, deps)


async def hold_batch(
    uow: UnitOfWork[FulfillmentRepository], event: BatchDiscrepancy, deps: FulfillmentDeps
) -> None:
    repo = uow.repo
    await repo.lock("batch", event.batch_id)
    await repo.set_batch_status(
        event.batch_id, event.issuer_id, "held", event.counts, event.problems
    )
    log.warning("batch held by audit: nothing dispatched", extra={"batch_id": str(event.batch_id)})


HANDLERS: HandlerSpec[FulfillmentDeps] = {
    CardQaPassed: [Batch(pack_cards)],
    CardQaFailed: [set_aside_qa_reject],
    CardSpoiled: [set_aside_spoiled],
    BatchReconciled: [release_batch],
    BatchDiscrepancy: [hold_batch],
}


async def _set_aside(
    uow: UnitOfWork[FulfillmentRepository],
    card_id: UUID,
    batch_id: UUID,
    issuer_id: str,
    chip_serial: str | None,
    reason: str,
) -> None:
    """A rejected or spoiled card goes on its batch's list awaiting witnessed destruction."""
    repo = uow.repo
    await repo.lock("card", card_id)
    current = await repo.card_state(card_id)
    if state_after_rejection(current) is None:
        log.warning(
            "reject for a card already %s; left as it is",
            current,
            extra={"card_id": str(card_id), "reason": reason},
        )
        return
    await repo.await_destruction(
        card_id=card_id,
        batch_id=batch_id,
        issuer_id=issuer_id,
        chip_serial=chip_serial,
        reason=reason,
    )
    log.info("card awaits destruction", extra={"card_id": str(card_id), "reason": reason})
