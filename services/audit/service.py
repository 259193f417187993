"""Zero-loss reconciliation of a batch (DOMAIN.md, "Counting"): pure functions, no I/O.

A card passes the production stages in order; at each stage it has a good outcome, a rejected
one (spoiled, failed QA), or none yet:

    ordered -> prepared -> electrical -> graphical -> qa -> packing

A card with no outcome at a stage before the furthest one it reached is missing at that stage
(its event never arrived). A card that is not destroyed is missing at the next stage after its
last good outcome, or at `destruction` after a rejection. A destroyed card with no outcome at
the next stage was pulled from the line there (a QC sample, a card dropped); it balances that
stage. After the production reconciliation, every card must end dispatched or destroyed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from services.audit.projection import BatchFacts, BatchStatus, CardRecord

Outcome = Literal["good", "rejected", "both"] | None

STAGES = ("ordered", "prepared", "electrical", "graphical", "qa", "packing")
DESTRUCTION = "destruction"
DISPATCH = "dispatch"
# For each stage after `ordered`: the names of its good and rejected outcomes in reports.
_LABELS = {
    "prepared": ("prepared", None),
    "electrical": ("encoded", "spoiled"),
    "graphical": ("printed", "spoiled"),
    "qa": ("passed", "failed"),
    "packing": ("packed", None),
}
_COUNT_NAMES = {
    ("ordered", "good"): "ordered",
    ("prepared", "good"): "prepared",
    ("electrical", "good"): "encoded",
    ("electrical", "rejected"): "spoiled_electrical",
    ("graphical", "good"): "printed",
    ("graphical", "rejected"): "spoiled_graphical",
    ("qa", "good"): "qa_passed",
    ("qa", "rejected"): "qa_failed",
    ("packing", "good"): "packed",
}
_LIST_AT_MOST = 10


@dataclass(frozen=True)
class Reconciliation:
    """One evaluation of a batch: counts per stage, cards missing per stage, problems."""

    counts: dict[str, int]
    missing: dict[str, list[UUID]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.problems

    def digest(self) -> str:
        """Identifies a discrepancy, so the same one is reported once."""
        body = {
            "missing": {stage: [str(c) for c in ids] for stage, ids in self.missing.items()},
            "problems": self.problems,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def stage_outcomes(card: CardRecord) -> tuple[Outcome, ...]:
    def outcome(good: bool, rejected: bool) -> Outcome:
        if good and rejected:
            return "both"
        return "good" if good else "rejected" if rejected else None

    return (
        outcome(card.ordered_at is not None, False),
        outcome(card.prepared_at is not None, False),
        outcome(card.encoded_at is not None, card.spoiled_stage == "electrical"),
        outcome(card.printed_at is not None, card.spoiled_stage == "graphical"),
        outcome(card.qa_passed_at is not None, card.qa_failed_at is not None),
        outcome(card.packed_at is not None, False),
    )


def _ids(cards: Sequence[UUID]) -> str:
    shown = ", ".join(str(c) for c in cards[:_LIST_AT_MOST])
    more = len(cards) - _LIST_AT_MOST
    return shown + (f" and {more} more" if more > 0 else "")


def reconcile_batch(batch: BatchFacts, cards: Sequence[CardRecord]) -> Reconciliation:
    """The production reconciliation: complete when every ordered card reached packing or was
    destroyed, every stage balances and the blank stock balances."""
    counts = dict.fromkeys(_COUNT_NAMES.values(), 0)
    pulled = dict.fromkeys(STAGES, 0)
    missing: dict[str, list[UUID]] = {}
    both: dict[str, list[UUID]] = {}
    for card in sorted(cards, key=lambda c: str(c.card_id)):
        outcomes = stage_outcomes(card)
        for stage, outcome in zip(STAGES, outcomes, strict=True):
            for kind in ("good", "rejected"):
                if outcome in (kind, "both") and (stage, kind) in _COUNT_NAMES:
                    counts[_COUNT_NAMES[(stage, kind)]] += 1
            if outcome == "both":
                both.setdefault(stage, []).append(card.card_id)
        reached = max((i for i, o in enumerate(outcomes) if o is not None), default=-1)
        for i in range(reached):
            if outcomes[i] is None:
                missing.setdefault(STAGES[i], []).append(card.card_id)
        if card.destroyed_at is not None or card.withdrawn:
            if outcomes[reached] == "good" and reached + 1 < len(STAGES):
                pulled[STAGES[reached + 1]] += 1
            continue
        if reached < 0:
            missing.setdefault(STAGES[0], []).append(card.card_id)
        elif outcomes[reached] != "good":
            missing.setdefault(DESTRUCTION, []).append(card.card_id)
        elif reached + 1 < len(STAGES):
            missing.setdefault(STAGES[reached + 1], []).append(card.card_id)
    counts["destroyed"] = sum(1 for c in cards if c.destroyed_at is not None)
    counts["cancelled"] = sum(1 for c in cards if c.withdrawn)
    counts["expected"] = batch.card_count or 0
    counts["stock_issued"] = batch.stock_issued
    counts["stock_returned"] = batch.stock_returned

    problems: list[str] = []
    if batch.card_count is None:
        problems.append("order: no order.accepted for this batch")
    elif counts["ordered"] != batch.card_count:
        problems.append(f"ordered: {counts['ordered']} of {batch.card_count} cards")
    previous_good = counts["ordered"]
    for stage, (good_label, rejected_label) in _LABELS.items():
        good = counts[_COUNT_NAMES[(stage, "good")]]
        rejected = counts.get(_COUNT_NAMES.get((stage, "rejected"), ""), 0)
        if previous_good != good + rejected + pulled[stage]:
            rejected_part = f" + {rejected_label} {rejected}" if rejected_label else ""
            problems.append(
                f"{stage}: in {previous_good}, {good_label} {good}{rejected_part}"
                f" + destroyed {pulled[stage]}"
            )
        previous_good = good
    for stage, ids in both.items():
        problems.append(f"{stage}: both a good and a rejected outcome for {_ids(ids)}")
    used = counts["encoded"] + counts["spoiled_electrical"] + batch.stock_returned
    if batch.stock_issued != used:
        problems.append(
            f"stock: issued {batch.stock_issued}, encoded {counts['encoded']}"
            f" + spoiled {counts['spoiled_electrical']} + returned {batch.stock_returned}"
        )
    return Reconciliation(counts, missing, problems)


def check_closure(batch: BatchFacts, cards: Sequence[CardRecord]) -> Reconciliation:
    """After the production reconciliation: every packed card dispatched in a card shipment,
    every other card destroyed (and production still balances)."""
    production = reconcile_batch(batch, cards)
    missing = {stage: list(ids) for stage, ids in production.missing.items()}
    problems = list(production.problems)
    unpacked: list[UUID] = []
    twice: list[UUID] = []
    for card in sorted(cards, key=lambda c: str(c.card_id)):
        if card.dispatched_at is not None and card.destroyed_at is not None:
            twice.append(card.card_id)
        elif card.dispatched_at is not None and card.packed_at is None:
            unpacked.append(card.card_id)
        elif not card.settled and card.packed_at is not None:
            missing.setdefault(DISPATCH, []).append(card.card_id)
    if unpacked:
        problems.append(f"dispatch: dispatched but never packed: {_ids(unpacked)}")
    if twice:
        problems.append(f"dispatch: both dispatched and destroyed: {_ids(twice)}")
    counts = dict(production.counts)
    counts["dispatched"] = sum(1 for c in cards if c.dispatched_at is not None)
    return Reconciliation(counts, missing, problems)


def worth_evaluating(
    status: BatchStatus, card_count: int | None, known: int, ended: int, settled: int
) -> bool:
    """A cheap gate from the batch counters, so a batch is read in full only when it may be
    complete: all ordered cards known and at a production end state (or, once reconciled, all
    dispatched or destroyed)."""
    if status == "closed":
        return False
    if status == "reconciled":
        return settled >= known
    return card_count is not None and known >= card_count and ended >= known


@dataclass(frozen=True)
class Decision:
    """What one evaluation of a batch leads to."""

    status: BatchStatus
    report: Reconciliation
    reconciled: Reconciliation | None = None
    closed: Reconciliation | None = None
    discrepancy: Reconciliation | None = None

    @property
    def changed(self) -> bool:
        return any(r is not None for r in (self.reconciled, self.closed, self.discrepancy))


def decide(
    status: BatchStatus,
    last_discrepancy: str | None,
    batch: BatchFacts,
    cards: Sequence[CardRecord],
    *,
    report_discrepancy: bool,
) -> Decision:
    """Reconcile or close the batch when it is complete. Otherwise, when asked to report (an
    explicit request or the stale-batch sweep), report a discrepancy unless the same one was
    already reported. Events arriving for the batch never report on their own: a batch in
    production is incomplete until its last event. Once released, cards still waiting for
    their shipment are not a discrepancy; anything else found then is, and the batch stays
    released (the discrepancy event tells fulfillment to hold what it has not shipped)."""
    if status == "closed":
        return Decision(status, check_closure(batch, cards))
    reconciled = None
    if status in ("open", "held"):
        production = reconcile_batch(batch, cards)
        if not production.complete:
            if report_discrepancy and production.digest() != last_discrepancy:
                return Decision("held", production, discrepancy=production)
            return Decision(status, production)
        reconciled, status = production, "reconciled"
    closure = check_closure(batch, cards)
    if closure.complete:
        return Decision("closed", closure, reconciled=reconciled, closed=closure)
    # Cards waiting for their shipment are not a discrepancy (dispatch may come in waves, hours
    # later); anything else found after the release is, and the batch stays released.
    blocking = Reconciliation(
        closure.counts,
        {stage: ids for stage, ids in closure.missing.items() if stage != DISPATCH},
        closure.problems,
    )
    if (
        report_discrepancy
        and reconciled is None
        and not blocking.complete
        and blocking.digest() != last_discrepancy
    ):
        return Decision(status, closure, discrepancy=blocking)
    return Decision(status, closure, reconciled=reconciled)
