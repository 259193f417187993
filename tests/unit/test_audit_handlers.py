"""The audit handler table and the events its decisions emit (no broker, no database)."""

from __future__ import annotations

from uuid import uuid4

import pytest

from services.audit.handlers import HANDLERS, append_to_log, decision_events
from services.audit.projection import BatchFacts, BatchStatus
from services.audit.repository import BatchRow
from services.audit.service import Decision, Reconciliation, worth_evaluating
from shared.events import BatchDiscrepancy, event_types


def test_every_contract_is_logged_first() -> None:
    handlers = HANDLERS
    logged = {event_type.model_fields["type"].default for event_type in handlers}
    assert logged == set(event_types())
    assert all(chain[0] is append_to_log for chain in handlers.values())


def batch_row() -> BatchRow:
    return BatchRow(BatchFacts(uuid4(), "bank-a", 2, 2, 0), "open", 2, 2, 0, None)


def test_reconciled_and_closed_have_one_id_per_batch_however_often_decided() -> None:
    row = batch_row()
    report = Reconciliation({"dispatched": 2, "destroyed": 0})
    decision = Decision("closed", report, reconciled=report, closed=report)
    first = decision_events(row, decision, "audit")
    again = decision_events(row, decision, "audit")
    assert [e.type for e in first] == ["batch.reconciled", "batch.closed"]
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert all(e.issuer_id == "bank-a" for e in first)


def test_a_discrepancy_event_carries_the_named_cards() -> None:
    card = uuid4()
    report = Reconciliation({"ordered": 2}, {"qa": [card]}, ["qa: in 2, passed 1 + failed 0"])
    (event,) = decision_events(batch_row(), Decision("held", report, discrepancy=report), "olga")
    assert isinstance(event, BatchDiscrepancy)
    assert event.missing == {"qa": [card]}
    assert event.actor == "olga"


@pytest.mark.parametrize(
    ("status", "card_count", "known", "ended", "settled", "worth"),
    [
        ("open", None, 3, 3, 0, False),  # no order.accepted yet
        ("open", 3, 2, 2, 0, False),  # a card never named
        ("open", 3, 3, 2, 0, False),  # a card still on the line
        ("open", 3, 3, 3, 0, True),
        ("held", 3, 4, 4, 0, True),  # a stranger: the full evaluation will say so
        ("reconciled", 3, 3, 3, 2, False),
        ("reconciled", 3, 3, 3, 3, True),
        ("closed", 3, 3, 3, 3, False),
    ],
)
def test_the_cheap_gate_reads_a_batch_only_when_it_may_be_complete(
    status: BatchStatus, card_count: int | None, known: int, ended: int, settled: int, worth: bool
) -> None:
    assert worth_evaluating(status, card_count, known, ended, settled) is worth
