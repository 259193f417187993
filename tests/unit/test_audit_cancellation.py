"""card.cancelled (intake): a card withdrawn before personalization is accounted for, its blank
back in stock; a card cancelled too late (a chip already encoded) still has to be destroyed."""

from __future__ import annotations

from uuid import UUID

from services.audit.service import check_closure, reconcile_batch
from shared.events import CardCancelled, CardPrepared, Event, StockReturned
from tests.support.audit_story import ISSUER, BatchStory, fold


def cancel(story: BatchStory, card_id: UUID) -> CardCancelled:
    return CardCancelled(
        issuer_id=ISSUER,
        actor="issuer:bank-a",
        card_id=card_id,
        batch_id=story.batch_id,
        order_id=story.order_id,
        reason="customer closed the account",
    )


def returned(story: BatchStory, quantity: int) -> StockReturned:
    return StockReturned(
        issuer_id=ISSUER,
        actor="issuer:bank-a",
        batch_id=story.batch_id,
        product_id="visa-classic",
        quantity=quantity,
    )


def test_cards_cancelled_before_and_after_preparation_balance_the_batch() -> None:
    story = BatchStory(4)
    never_prepared, prepared = story.card_ids[:2]
    events: list[Event] = story.order() + story.stock(4)
    for card_id in story.card_ids[2:]:
        events += story.produce(card_id)
    events += [story.produce(prepared)[0], cancel(story, never_prepared), cancel(story, prepared)]
    events.append(returned(story, 2))
    report = reconcile_batch(*fold(story.batch_id, events))
    assert report.complete, report
    assert report.counts["cancelled"] == 2
    assert report.counts["packed"] == 2
    closure = check_closure(*fold(story.batch_id, [*events, story.dispatch(story.card_ids[2:])]))
    assert closure.complete, closure


def test_without_the_blanks_returned_the_stock_does_not_balance() -> None:
    story = BatchStory(2)
    events = story.order() + story.stock(2) + story.produce(story.card_ids[1])
    events.append(cancel(story, story.card_ids[0]))
    report = reconcile_batch(*fold(story.batch_id, events))
    assert report.missing == {}
    assert report.problems == ["stock: issued 2, encoded 1 + spoiled 0 + returned 0"]


def test_a_card_cancelled_after_its_chip_was_encoded_must_still_be_destroyed() -> None:
    story = BatchStory(1)
    card = story.card_ids[0]
    encoded = [e for e in story.produce(card) if not isinstance(e, CardPrepared)][:1]
    events = story.order() + story.stock(1) + story.produce(card)[:1] + encoded
    events.append(cancel(story, card))
    report = reconcile_batch(*fold(story.batch_id, events))
    assert report.counts["cancelled"] == 0
    assert report.missing == {"graphical": [card]}
    destroyed = reconcile_batch(*fold(story.batch_id, [*events, story.destroy(card)]))
    assert destroyed.complete, destroyed
