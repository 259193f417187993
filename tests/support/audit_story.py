"""A batch's life as event contracts (BatchStory), and folding events into projections as the
audit handlers do without a database: shared by the audit tests of every tier."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal
from uuid import UUID, uuid4

from services.audit.projection import (
    BatchFacts,
    CardRecord,
    apply_batch_event,
    apply_card_event,
)
from shared.events import (
    CardDestroyed,
    CardEncoded,
    CardOrdered,
    CardPacked,
    CardPrepared,
    CardPrinted,
    CardQaFailed,
    CardQaPassed,
    CardSpoiled,
    Event,
    OrderAccepted,
    ShipmentDispatched,
    StockIssued,
    StockReturned,
)

Spoil = Literal["electrical", "graphical", "qa"] | None


ISSUER = "bank-a"


class BatchStory:
    """The events of one batch, built with the contract models."""

    def __init__(self, cards: int) -> None:
        self.batch_id = uuid4()
        self.order_id = uuid4()
        self.card_ids = [uuid4() for _ in range(cards)]

    def order(self, card_count: int | None = None) -> list[Event]:
        accepted = OrderAccepted(
            issuer_id=ISSUER,
            actor="intake",
            order_id=self.order_id,
            batch_id=self.batch_id,
            product_id="visa-classic",
            card_count=card_count or len(self.card_ids),
        )
        return [accepted, *(self.ordered(c) for c in self.card_ids)]

    def ordered(self, card_id: UUID) -> CardOrdered:
        return CardOrdered(
            issuer_id=ISSUER,
            actor="intake",
            card_id=card_id,
            order_id=self.order_id,
            batch_id=self.batch_id,
            product_id="visa-classic",
            pan_token="tok",
            masked_pan="411111******1111",
            expiry="2812",
            sequence=self.card_ids.index(card_id),
        )

    def stock(self, issued: int, returned: int = 0) -> list[Event]:
        common = {"issuer_id": ISSUER, "actor": "olga", "batch_id": self.batch_id}
        events: list[Event] = [StockIssued(**common, product_id="visa-classic", quantity=issued)]
        if returned:
            events.append(StockReturned(**common, product_id="visa-classic", quantity=returned))
        return events

    def produce(self, card_id: UUID, spoil: Spoil = None) -> list[Event]:
        """A card's production up to packing, or up to a rejection at `spoil`."""
        ids = {"issuer_id": ISSUER, "card_id": card_id, "batch_id": self.batch_id}
        events: list[Event] = [
            CardPrepared(
                **ids,
                actor="keymgmt",
                product_id="visa-classic",
                masked_pan="411111******1111",
                application="emv",
                key_scheme="EMV-OPTION-A",
            )
        ]
        if spoil == "electrical":
            return [
                *events,
                CardSpoiled(**ids, actor="station-a", stage="electrical", reason="6A82"),
            ]
        events.append(
            CardEncoded(
                **ids,
                actor="station-a",
                chip_serial=f"CS{card_id.hex[:8]}",
                station_id="station-a",
                reader="vpcd 0",
                apdu_count=12,
            )
        )
        if spoil == "graphical":
            return [
                *events,
                CardSpoiled(**ids, actor="graphical", stage="graphical", reason="smear"),
            ]
        events.append(
            CardPrinted(**ids, actor="graphical", chip_serial="CS", printer="p1", image_sha256="0")
        )
        if spoil == "qa":
            return [*events, CardQaFailed(**ids, actor="qa", chip_serial="CS", reason="ARQC")]
        events.append(CardQaPassed(**ids, actor="qa", chip_serial="CS", checks=["arqc"]))
        events.append(CardPacked(**ids, actor="fulfillment", carrier_id=f"C{card_id.hex[:6]}"))
        return events

    def destroy(self, card_id: UUID) -> CardDestroyed:
        return CardDestroyed(
            issuer_id=ISSUER,
            actor="olga",
            card_id=card_id,
            batch_id=self.batch_id,
            reason="spoiled",
            witnesses=("olga", "ann"),
        )

    def dispatch(self, card_ids: Sequence[UUID]) -> ShipmentDispatched:
        return ShipmentDispatched(
            issuer_id=ISSUER,
            actor="fulfillment",
            shipment_id=uuid4(),
            batch_id=self.batch_id,
            kind="cards",
            card_ids=list(card_ids),
            courier="post",
            manifest_sha256="0" * 64,
        )

    def good_batch(self, spoil: dict[UUID, Spoil] | None = None) -> list[Event]:
        spoil = spoil or {}
        events = self.order() + self.stock(len(self.card_ids))
        for card_id in self.card_ids:
            events += self.produce(card_id, spoil.get(card_id))
        return events


def fold(batch_id: UUID, events: Iterable[Event]) -> tuple[BatchFacts, list[CardRecord]]:
    """What the audit handlers record, without a database."""
    facts = BatchFacts(batch_id=batch_id, issuer_id=ISSUER)
    cards: dict[UUID, CardRecord] = {}
    for event in events:
        facts = apply_batch_event(facts, event)
        touched = [getattr(event, "card_id", None), *getattr(event, "card_ids", [])]
        for card_id in filter(None, touched):
            card = cards.get(card_id) or CardRecord(card_id, batch_id, ISSUER)
            cards[card_id] = apply_card_event(card, event)
    return facts, list(cards.values())
