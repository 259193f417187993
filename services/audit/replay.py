"""Batch reconciliation recomputed from the log entries alone (no I/O), for the verifier.

The projection tables (batches, cards) are what the service concluded; an auditor who trusts
only the signed log replays every entry in log order through the same pure rules
(projection.py, service.py) and checks each batch the log says was reconciled or closed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from services.audit.projection import (
    CARD_EVENTS,
    BatchFacts,
    CardRecord,
    apply_batch_event,
    apply_card_event,
)
from services.audit.service import Reconciliation, check_closure, reconcile_batch
from shared.events import (
    BatchClosed,
    BatchReconciled,
    OrderAccepted,
    ShipmentDispatched,
    StockIssued,
    StockReturned,
    UndecodableEvent,
    decode_event,
)

_BATCH_EVENTS = (OrderAccepted, StockIssued, StockReturned)


@dataclass
class Replay:
    batches: dict[UUID, BatchFacts] = field(default_factory=dict)
    cards: dict[UUID, CardRecord] = field(default_factory=dict)
    claims: dict[UUID, BatchReconciled | BatchClosed] = field(default_factory=dict)
    undecodable: int = 0

    def add(self, payload: dict[str, Any]) -> None:
        try:
            event = decode_event(json.dumps(payload))
        except UndecodableEvent:
            self.undecodable += 1  # logged as received; it moves no count
            return
        if isinstance(event, _BATCH_EVENTS):
            facts = self.batches.get(event.batch_id) or BatchFacts(event.batch_id, event.issuer_id)
            self.batches[event.batch_id] = apply_batch_event(facts, event)
        elif isinstance(event, ShipmentDispatched):
            if event.kind == "cards":
                self._cards(event, list(event.card_ids))
        elif isinstance(event, CARD_EVENTS):
            self._cards(event, [event.card_id])  # type: ignore[attr-defined]
        elif isinstance(event, BatchClosed) or (
            isinstance(event, BatchReconciled) and event.batch_id not in self.claims
        ):
            self.claims[event.batch_id] = event

    def _cards(self, event: Any, card_ids: list[UUID]) -> None:
        self.batches.setdefault(event.batch_id, BatchFacts(event.batch_id, event.issuer_id))
        for card_id in card_ids:
            card = self.cards.get(card_id) or CardRecord(card_id, event.batch_id, event.issuer_id)
            if card.batch_id == event.batch_id:  # a card stays under its first batch
                self.cards[card_id] = apply_card_event(card, event)

    def verdicts(self) -> tuple[list[str], list[str]]:
        """(checks, problems): every batch the log calls reconciled or closed, recomputed."""
        by_batch: dict[UUID, list[CardRecord]] = {}
        for card in self.cards.values():
            by_batch.setdefault(card.batch_id, []).append(card)
        checks: list[str] = []
        problems: list[str] = []
        for batch_id, claim in self.claims.items():
            facts = self.batches.get(batch_id) or BatchFacts(batch_id, claim.issuer_id)
            cards = by_batch.get(batch_id, [])
            closed = isinstance(claim, BatchClosed)
            report = (check_closure if closed else reconcile_batch)(facts, cards)
            word = "closed" if closed else "reconciled"
            problem = _disagreement(claim, report)
            if problem:
                problems.append(f"batch {batch_id} is logged {word}, but {problem}")
            else:
                checks.append(f"batch {batch_id}: {word}, recomputed from {len(cards)} cards")
        return checks, problems


def _disagreement(claim: BatchReconciled | BatchClosed, report: Reconciliation) -> str:
    if not report.complete:
        missing = {stage: len(ids) for stage, ids in report.missing.items()}
        return f"its entries do not reconcile: missing {missing}, problems {report.problems}"
    if isinstance(claim, BatchReconciled):
        # A packed card may still be destroyed after the batch reconciled: only that moves.
        differ = {k: (v, report.counts.get(k)) for k, v in claim.counts.items() if k != "destroyed"}
        differ = {k: pair for k, pair in differ.items() if pair[0] != pair[1]}
        if differ:
            return f"its counts (logged, recomputed) differ: {differ}"
    else:
        counts = report.counts
        if (claim.dispatched, claim.destroyed) != (counts["dispatched"], counts["destroyed"]):
            return (
                f"it logged {claim.dispatched} dispatched and {claim.destroyed} destroyed,"
                f" the entries say {counts['dispatched']} and {counts['destroyed']}"
            )
    return ""
