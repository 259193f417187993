"""Event handlers: every event is logged; batch and card events also move the projections and
re-check their batch, which may then be reconciled or closed (in the same transaction)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any, get_args

from services.audit.deps import AuditDeps
from services.audit.projection import (
    CARD_EVENTS,
    CardRecord,
    apply_batch_event,
    apply_card_event,
)
from services.audit.repository import AuditRepository, BatchRow
from services.audit.service import Decision, Reconciliation, decide, worth_evaluating
from services.audit.store import AuditStore
from shared.events import (
    AnyEvent,
    BatchClosed,
    BatchDiscrepancy,
    BatchReconciled,
    ControlRecorded,
    DeadLetterRecorded,
    Event,
    OrderAccepted,
    ShipmentDispatched,
    StockIssued,
    StockReturned,
)
from shared.events.producers import parse_forgery
from shared.handlers import DepsHandler, HandlerSpec
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)

ACTOR = "audit"
# Deterministic ids: however often a decision is replayed, consumers apply it once.
_DECISION_NAMESPACE = uuid.UUID("0b6f1c0e-6c3e-4d7e-9a51-a0d17c0ffee1")


async def append_to_log(uow: UnitOfWork[AuditStore], event: Event, deps: AuditDeps) -> None:
    seq = await uow.repo.log.append_event(event)
    log.debug("event logged", extra={"seq": seq, "event_type": event.type})


async def raise_security_event(
    uow: UnitOfWork[AuditStore], event: DeadLetterRecorded, deps: AuditDeps
) -> None:
    """A notice of a record dead-lettered as forged is a security event: logged (the entry,
    by append_to_log) and raised in the service log for whoever watches it; auditors list
    them at GET /v1/security-events (security_api.py)."""
    forged = parse_forgery(event.reason)
    if forged is not None:
        log.error(
            "security event: forged record dead-lettered",
            extra={"detected_by": event.consumer, "source_topic": event.source_topic, **forged},
        )


async def note_control_step(
    uow: UnitOfWork[AuditStore], event: ControlRecorded, deps: AuditDeps
) -> None:
    """A refused step of a dual-control act (the same person twice, a custodian at another's
    step, a ceremony refused): logged (the entry, by append_to_log) and raised in the service
    log; auditors list every step at GET /v1/control-events (control_api.py)."""
    if event.outcome == "refused":
        log.warning(
            "dual control: %s %s refused",
            event.act,
            event.step,
            extra={"subject_id": str(event.subject_id), "principal": event.principal},
        )


async def project_batch_event(
    uow: UnitOfWork[AuditStore],
    event: OrderAccepted | StockIssued | StockReturned,
    deps: AuditDeps,
) -> None:
    repo = uow.repo.batches
    batch = await repo.lock_batch(event.batch_id, event.issuer_id, touch=True)
    facts = apply_batch_event(batch.facts, event)
    order_id = event.order_id if isinstance(event, OrderAccepted) else None
    await repo.save_batch_facts(facts, order_id, event.product_id)
    await recheck_batch(uow, repo, replace(batch, facts=facts))


async def project_card_event(uow: UnitOfWork[AuditStore], event: Any, deps: AuditDeps) -> None:
    """A card's event, or a shipment naming many cards: update each card and the batch counters
    that gate the full evaluation."""
    repo = uow.repo.batches
    batch_id = event.batch_id
    batch = await repo.lock_batch(batch_id, event.issuer_id, touch=True)
    if isinstance(event, ShipmentDispatched):
        # A PIN-mailer shipment says nothing about where the cards are.
        card_ids = list(event.card_ids) if event.kind == "cards" else []
    else:
        card_ids = [event.card_id]
    cards, new = await repo.lock_cards(card_ids, batch_id, batch.facts.issuer_id)
    changed: list[CardRecord] = []
    ended = settled = 0
    for card_id in card_ids:
        before = cards[card_id]
        if before.batch_id != batch_id:
            log.warning(
                "card named under two batches; kept under its first",
                extra={"card_id": str(card_id), "batch_id": str(batch_id)},
            )
            continue
        after = apply_card_event(before, event)
        if after != before:
            changed.append(after)
            cards[card_id] = after
            ended += int(after.ended) - int(before.ended)
            settled += int(after.settled) - int(before.settled)
    await repo.save_cards(changed)
    batch = await repo.count_cards(batch_id, new, ended, settled)
    await recheck_batch(uow, repo, batch)


async def recheck_batch(
    uow: UnitOfWork[AuditStore], repo: AuditRepository, batch: BatchRow
) -> None:
    """After an event: reconcile or close the batch if it is now complete. Never reports a
    discrepancy by itself (that is for requests and the stale-batch sweep)."""
    if not worth_evaluating(
        batch.status,
        batch.facts.card_count,
        batch.cards_known,
        batch.cards_ended,
        batch.cards_settled,
    ):
        return
    await evaluate_batch(uow, repo, batch, report_discrepancy=False, actor=ACTOR)


async def evaluate_batch(
    uow: UnitOfWork[AuditStore],
    repo: AuditRepository,
    batch: BatchRow,
    *,
    report_discrepancy: bool,
    actor: str,
) -> Decision:
    """Evaluate a locked batch in full and emit what the decision says, once."""
    cards = await repo.batch_cards(batch.facts.batch_id)
    decision = decide(
        batch.status,
        batch.discrepancy_digest,
        batch.facts,
        cards,
        report_discrepancy=report_discrepancy,
    )
    if decision.changed or report_discrepancy:
        await repo.record_decision(batch.facts.batch_id, decision, checked=report_discrepancy)
    for event in decision_events(batch, decision, actor):
        await uow.emit(event)
        log.info("batch %s", event.type, extra={"batch_id": str(batch.facts.batch_id)})
    return decision


def decision_events(batch: BatchRow, decision: Decision, actor: str) -> list[Event]:
    batch_id = batch.facts.batch_id
    common: dict[str, Any] = {
        "issuer_id": batch.facts.issuer_id,
        "actor": actor,
        "batch_id": batch_id,
    }
    events: list[Event] = []
    if decision.reconciled is not None:
        events.append(
            BatchReconciled(
                **common,
                event_id=uuid.uuid5(_DECISION_NAMESPACE, f"batch.reconciled/{batch_id}"),
                counts=decision.reconciled.counts,
            )
        )
    if decision.closed is not None:
        events.append(
            BatchClosed(
                **common,
                event_id=uuid.uuid5(_DECISION_NAMESPACE, f"batch.closed/{batch_id}"),
                dispatched=decision.closed.counts["dispatched"],
                destroyed=decision.closed.counts["destroyed"],
            )
        )
    if decision.discrepancy is not None:
        events.append(_discrepancy_event(common, decision.discrepancy))
    return events


def _discrepancy_event(common: dict[str, Any], report: Reconciliation) -> BatchDiscrepancy:
    return BatchDiscrepancy(
        **common, counts=report.counts, missing=report.missing, problems=report.problems
    )


# Every contract is logged; batch and card events also project.
_PROJECTIONS: dict[type[Event], list[DepsHandler[AuditDeps]]] = {
    OrderAccepted: [project_batch_event],
    StockIssued: [project_batch_event],
    StockReturned: [project_batch_event],
    ShipmentDispatched: [project_card_event],
    DeadLetterRecorded: [raise_security_event],
    ControlRecorded: [note_control_step],
    **{event_type: [project_card_event] for event_type in CARD_EVENTS},
}
HANDLERS: HandlerSpec[AuditDeps] = {
    event_type: [append_to_log, *_PROJECTIONS.get(event_type, [])]
    for event_type in get_args(get_args(AnyEvent)[0])
}
