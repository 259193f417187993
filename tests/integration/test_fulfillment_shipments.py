"""A big batch leaves in shipments of a bounded size (issue 17): with at most two cards a
shipment, five packed cards leave as three consignments (2, 2, 1), every card in exactly one,
each with its own manifest and shipment.dispatched, and the cards' PIN mailers in shipments of
their own. A 100,000-card batch is so 50 events of ~80 KB, never one record Kafka refuses."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from services.fulfillment.settings import FulfillmentSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.bus import settled
from tests.support.fulfillment import (
    ISSUER,
    SERVICE_TOKEN,
    count_of,
    emitted,
    fulfillment_settings,
    passed,
    publish,
)
from tests.support.graphical import KeymgmtDouble

pytestmark = pytest.mark.integration


def card_shipments(n: int) -> Callable[[list[events.Event]], bool]:
    def enough(seen: list[events.Event]) -> bool:
        kinds = [x.kind for x in seen if isinstance(x, events.ShipmentDispatched)]
        return kinds.count("cards") >= n

    return enough


@pytest.fixture
async def keymgmt() -> AsyncIterator[KeymgmtDouble]:
    async with KeymgmtDouble(SERVICE_TOKEN) as double:
        yield double


@pytest.fixture
def settings(
    stack_env: dict[str, str], unique: str, keymgmt: KeymgmtDouble, tmp_path: Path
) -> FulfillmentSettings:
    base = fulfillment_settings(unique, keymgmt, tmp_path)
    return base.model_copy(update={"fulfillment_shipment_max_cards": 2})


async def test_a_batch_ships_in_consignments_of_the_configured_size(
    settings: FulfillmentSettings, runtime: ServiceRuntime, keymgmt: KeymgmtDouble
) -> None:
    batch = uuid.uuid4()
    cards = [keymgmt.add_card(ISSUER) for _ in range(5)]
    await publish(settings, *(("qa", passed(card, batch)) for card in cards))
    await settled(runtime, len(cards))
    await emitted(settings, count_of("card.packed", len(cards)))
    reconciled = events.BatchReconciled(
        issuer_id=ISSUER, actor="audit", batch_id=batch, counts={"in": len(cards)}
    )
    await publish(settings, ("audit", reconciled))
    out = await emitted(settings, card_shipments(3))
    shipments = [x for x in out if isinstance(x, events.ShipmentDispatched)]
    of_cards = [s for s in shipments if s.kind == "cards"]
    assert sorted(len(s.card_ids) for s in of_cards) == [1, 2, 2]
    shipped = Counter(card for s in of_cards for card in s.card_ids)
    assert shipped == Counter(cards)  # every card once
    assert len({s.shipment_id for s in shipments}) == len(shipments)
    for shipment in of_cards:
        manifest = settings.manifest_dir / f"{shipment.shipment_id}.json"
        assert manifest.exists()
    mailers = [s for s in shipments if s.kind == "pin_mailers"]
    mailed = Counter(card for s in mailers for card in s.card_ids)
    assert all(n == 1 for n in mailed.values())
    assert set(mailed) <= set(cards)
