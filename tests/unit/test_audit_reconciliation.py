"""Zero-loss reconciliation of a batch, over projections folded from real event contracts."""

from __future__ import annotations

import random
from uuid import uuid4

import pytest

from services.audit.projection import CardRecord, apply_card_event
from services.audit.service import check_closure, decide, reconcile_batch
from shared.events import (
    CardEncoded,
    CardOrdered,
    CardPacked,
    CardPrinted,
    CardQaPassed,
    CardSpoiled,
)
from tests.support.audit_story import ISSUER, BatchStory, Spoil, fold

__all__ = ["BatchStory"]  # also imported from here by the integration tests


def test_a_good_batch_reconciles_with_its_counts() -> None:
    story = BatchStory(5)
    report = reconcile_batch(*fold(story.batch_id, story.good_batch()))
    assert report.complete, report
    assert report.counts == {
        "expected": 5,
        "ordered": 5,
        "prepared": 5,
        "encoded": 5,
        "spoiled_electrical": 0,
        "printed": 5,
        "spoiled_graphical": 0,
        "qa_passed": 5,
        "qa_failed": 0,
        "packed": 5,
        "destroyed": 0,
        "cancelled": 0,
        "stock_issued": 5,
        "stock_returned": 0,
    }


@pytest.mark.parametrize("seed", range(5))
def test_events_in_any_order_give_the_same_reconciliation(seed: int) -> None:
    story = BatchStory(4)
    events = story.good_batch({story.card_ids[0]: "graphical"}) + [story.destroy(story.card_ids[0])]
    in_order = reconcile_batch(*fold(story.batch_id, events))
    random.Random(seed).shuffle(events)
    shuffled = reconcile_batch(*fold(story.batch_id, events))
    assert shuffled == in_order
    assert shuffled.complete


def test_a_spoiled_card_holds_the_batch_until_it_is_destroyed() -> None:
    story = BatchStory(4)
    spoiled = story.card_ids[2]
    events = story.order() + story.stock(4)
    for card_id in story.card_ids:
        events += story.produce(card_id, "electrical" if card_id == spoiled else None)

    before = reconcile_batch(*fold(story.batch_id, events))
    assert before.missing == {"destruction": [spoiled]}
    assert before.problems == []

    after = reconcile_batch(*fold(story.batch_id, [*events, story.destroy(spoiled)]))
    assert after.complete, after
    assert after.counts["encoded"] == 3
    assert after.counts["spoiled_electrical"] == 1
    assert after.counts["destroyed"] == 1


@pytest.mark.parametrize("stage", ["graphical", "qa"])
def test_a_card_rejected_after_encoding_balances_once_destroyed(stage: Spoil) -> None:
    story = BatchStory(3)
    rejected = story.card_ids[0]
    events = story.good_batch({rejected: stage}) + [story.destroy(rejected)]
    report = reconcile_batch(*fold(story.batch_id, events))
    assert report.complete, report
    assert report.counts["encoded"] == 3
    assert report.counts["packed"] == 2


def test_a_withheld_event_names_the_card_and_its_stage() -> None:
    story = BatchStory(5)
    card = story.card_ids[3]
    events = [
        e for e in story.good_batch() if not (isinstance(e, CardPrinted) and e.card_id == card)
    ]
    report = reconcile_batch(*fold(story.batch_id, events))
    assert report.missing == {"graphical": [card]}
    assert "graphical: in 5, printed 4 + spoiled 0 + destroyed 0" in report.problems


def test_a_card_stuck_on_the_line_is_missing_at_its_next_stage() -> None:
    story = BatchStory(3)
    stuck = story.card_ids[1]
    events = [
        e
        for e in story.good_batch()
        if not (getattr(e, "card_id", None) == stuck and isinstance(e, CardQaPassed | CardPacked))
    ]
    report = reconcile_batch(*fold(story.batch_id, events))
    assert report.missing == {"qa": [stuck]}


def test_a_card_never_ordered_is_missing_at_ordering() -> None:
    story = BatchStory(3)
    ghost = story.card_ids[0]
    events = [
        e for e in story.good_batch() if not (isinstance(e, CardOrdered) and e.card_id == ghost)
    ]
    report = reconcile_batch(*fold(story.batch_id, events))
    assert report.missing == {"ordered": [ghost]}
    assert "ordered: 2 of 3 cards" in report.problems


def test_a_batch_without_its_order_is_not_reconciled() -> None:
    story = BatchStory(2)
    events = story.good_batch()[1:]  # drop order.accepted
    report = reconcile_batch(*fold(story.batch_id, events))
    assert report.problems == ["order: no order.accepted for this batch"]


def test_stock_imbalance_is_a_problem_with_its_numbers() -> None:
    story = BatchStory(49)
    spoiled = story.card_ids[0]
    events = story.order() + story.stock(50)
    for card_id in story.card_ids:
        events += story.produce(card_id, "electrical" if card_id == spoiled else None)
    events.append(story.destroy(spoiled))
    report = reconcile_batch(*fold(story.batch_id, events))
    assert report.missing == {}
    assert report.problems == ["stock: issued 50, encoded 48 + spoiled 1 + returned 0"]

    returned = reconcile_batch(*fold(story.batch_id, [*events, *story.stock(1, 1)[1:]]))
    assert returned.complete, returned


def test_a_card_destroyed_on_the_line_balances_the_stage_it_left() -> None:
    story = BatchStory(3)
    sample = story.card_ids[0]
    events = [
        e
        for e in story.good_batch()
        if not (getattr(e, "card_id", None) == sample and isinstance(e, CardQaPassed | CardPacked))
    ]
    report = reconcile_batch(*fold(story.batch_id, [*events, story.destroy(sample)]))
    assert report.complete, report


def test_two_outcomes_at_one_stage_are_a_problem() -> None:
    story = BatchStory(2)
    card = story.card_ids[0]
    spoil = CardSpoiled(
        issuer_id=ISSUER,
        actor="station-a",
        card_id=card,
        batch_id=story.batch_id,
        stage="electrical",
        reason="late verdict",
    )
    report = reconcile_batch(*fold(story.batch_id, [*story.good_batch(), spoil]))
    assert f"electrical: both a good and a rejected outcome for {card}" in report.problems
    assert report.missing == {}


def test_a_late_event_reconciles_a_held_batch_and_the_discrepancy_is_reported_once() -> None:
    story = BatchStory(4)
    card = story.card_ids[2]
    every = story.good_batch()
    withheld = next(e for e in every if isinstance(e, CardEncoded) and e.card_id == card)
    events = [e for e in every if e.event_id != withheld.event_id]
    facts, cards = fold(story.batch_id, events)

    # While events flow, an incomplete batch is not a discrepancy.
    quiet = decide("open", None, facts, cards, report_discrepancy=False)
    assert quiet.status == "open"
    assert not quiet.changed

    asked = decide("open", None, facts, cards, report_discrepancy=True)
    assert asked.status == "held"
    assert asked.discrepancy is not None
    assert asked.discrepancy.missing == {"electrical": [card]}
    assert "stock: issued 4, encoded 3 + spoiled 0 + returned 0" in asked.discrepancy.problems

    again = decide("held", asked.discrepancy.digest(), facts, cards, report_discrepancy=True)
    assert again.discrepancy is None
    assert again.status == "held"

    late = decide(
        "held",
        asked.discrepancy.digest(),
        *fold(story.batch_id, [*events, withheld]),
        report_discrepancy=False,
    )
    assert late.status == "reconciled"
    assert late.reconciled is not None
    assert late.reconciled.counts["encoded"] == 4


def test_a_different_discrepancy_is_reported_again() -> None:
    story = BatchStory(3)
    events = story.good_batch()
    first = [
        e for e in events if not (isinstance(e, CardPacked) and e.card_id != story.card_ids[0])
    ]
    second = [
        e for e in events if not (isinstance(e, CardPacked) and e.card_id == story.card_ids[2])
    ]
    one = decide("open", None, *fold(story.batch_id, first), report_discrepancy=True)
    assert one.discrepancy is not None
    two = decide(
        "held", one.discrepancy.digest(), *fold(story.batch_id, second), report_discrepancy=True
    )
    assert two.discrepancy is not None
    assert two.discrepancy.missing == {"packing": [story.card_ids[2]]}


def test_a_batch_closes_when_packed_cards_are_dispatched_and_the_rest_destroyed() -> None:
    story = BatchStory(4)
    spoiled = story.card_ids[0]
    good = story.card_ids[1:]
    events = story.good_batch({spoiled: "qa"}) + [story.destroy(spoiled)]

    released = decide("open", None, *fold(story.batch_id, events), report_discrepancy=True)
    assert released.status == "reconciled"
    assert released.reconciled is not None
    assert released.closed is None
    # Cards waiting for their shipment are not a discrepancy, even when asked.
    assert released.discrepancy is None
    assert released.report.missing == {"dispatch": sorted(good, key=str)}

    partly = [*events, story.dispatch(good[:2])]
    waiting = decide("reconciled", None, *fold(story.batch_id, partly), report_discrepancy=True)
    assert waiting.status == "reconciled"
    assert not waiting.changed

    done = decide(
        "reconciled",
        None,
        *fold(story.batch_id, [*partly, story.dispatch(good[2:])]),
        report_discrepancy=False,
    )
    assert done.status == "closed"
    assert done.closed is not None
    assert done.closed.counts["dispatched"] == 3
    assert done.closed.counts["destroyed"] == 1


def test_reconciled_and_closed_in_one_evaluation_when_dispatch_arrived_first() -> None:
    story = BatchStory(2)
    events = [story.dispatch(story.card_ids), *story.good_batch()]
    decision = decide("open", None, *fold(story.batch_id, events), report_discrepancy=False)
    assert decision.status == "closed"
    assert decision.reconciled is not None
    assert decision.closed is not None


def test_a_dispatched_card_never_packed_blocks_closure() -> None:
    story = BatchStory(2)
    facts, cards = fold(story.batch_id, [*story.good_batch(), story.dispatch(story.card_ids)])
    stranger = CardRecord(uuid4(), story.batch_id, ISSUER)
    stranger = apply_card_event(stranger, story.dispatch([stranger.card_id]))
    closure = check_closure(facts, [*cards, stranger])
    assert not closure.complete
    assert any("dispatched but never packed" in p for p in closure.problems)
    decision = decide("reconciled", None, facts, [*cards, stranger], report_discrepancy=True)
    assert decision.status == "reconciled"
    assert decision.discrepancy is not None
