"""Fulfillment's carrier line and PIN mailers on the real stack: each card's carrier letter is
rendered as a PDF, fed and scanned (its barcode read from the rendered page) before packing; a
letter that does not match the card sends the card to destruction; PIN mailers (printed by
keymgmt) travel in their own shipment, never with their card."""

from __future__ import annotations

import uuid
from collections import Counter

import httpx
import pytest

from services.fulfillment.carrier import CarrierLetter, render_carrier
from services.fulfillment.settings import FulfillmentSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.bus import settled
from tests.support.fulfillment import (
    ISSUER,
    count_of,
    destroy_under_dual_control,
    emitted,
    passed,
    publish,
)
from tests.support.graphical import KeymgmtDouble

pytestmark = pytest.mark.integration


async def test_a_misfed_carrier_sends_its_card_to_destruction_and_mailers_ship_apart(
    fulfillment_settings: FulfillmentSettings,
    runtime: ServiceRuntime,
    http: httpx.AsyncClient,
    fulfillment_keymgmt: KeymgmtDouble,
    unique: str,
) -> None:
    batch = uuid.uuid4()
    good, also_good, misfed = (fulfillment_keymgmt.add_card(ISSUER) for _ in range(3))
    fulfillment_keymgmt.with_pin.update({good, misfed})  # also_good's product has no PIN
    await publish(
        fulfillment_settings, ("qa", passed(good, batch)), ("qa", passed(also_good, batch))
    )
    await settled(runtime, 2)
    # The inserter gets its letters out of order: the next card is fed another card's letter.
    stray = CarrierLetter(good, "CS" + good.hex[:8], "CR-X", "SOMEONE ELSE", ("Elsewhere",), "x")
    runtime.deps.inserter.misfeed(render_carrier(stray))
    await publish(fulfillment_settings, ("qa", passed(misfed, batch)))
    await settled(runtime, 3)

    view = (await http.get(f"/v1/batches/{batch}")).json()
    assert sorted(view["packed"]) == sorted([str(good), str(also_good)])
    assert view["awaiting_destruction"] == [str(misfed)]
    assert (await destroy_under_dual_control(http, [misfed], unique)).status_code == 200
    await publish(
        fulfillment_settings,
        (
            "audit",
            events.BatchReconciled(issuer_id=ISSUER, actor="audit", batch_id=batch, counts={}),
        ),
    )
    out = await emitted(fulfillment_settings, count_of("shipment.dispatched", 2))
    assert Counter(e.type for e in out) == Counter(
        {
            "card.packed": 2,
            "pin_mailer.printed": 1,  # the misfed card was never packed: no mailer printed
            "card.destroyed": 1,
            "shipment.dispatched": 2,
            "control.recorded": 2,  # the destruction asked, then confirmed (audit's log)
        }
    )
    destroyed = next(e for e in out if isinstance(e, events.CardDestroyed))
    assert destroyed.reason.startswith(
        f"fulfillment: carrier mismatch: the letter fed is for card {good}"
    )
    shipments = [e for e in out if isinstance(e, events.ShipmentDispatched)]
    by_kind = {s.kind: s for s in shipments}
    assert sorted(by_kind["cards"].card_ids) == sorted([good, also_good])
    assert by_kind["pin_mailers"].card_ids == [good]
    assert by_kind["cards"].shipment_id != by_kind["pin_mailers"].shipment_id
    for shipment in shipments:  # never a card and its own PIN mailer in one shipment
        assert shipment.kind in ("cards", "pin_mailers")
    mailer_manifest = (
        fulfillment_settings.manifest_dir / f"{by_kind['pin_mailers'].shipment_id}.json"
    ).read_text()
    assert f"PM-{uuid.uuid5(good, 'pin-mailer')}" in mailer_manifest
    inserter = fulfillment_settings.inserter_dir
    assert not list(inserter.rglob("*.pdf")), "carrier letters left after dispatch"
