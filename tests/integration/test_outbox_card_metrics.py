"""bureau_cards_total counts a card when the transaction that emitted its event commits, on the
real database: a rolled-back transaction (a failed handler, a replayed batch) counts nothing."""

from __future__ import annotations

import uuid

import pytest

from shared import events, metrics
from shared.db import migrate
from shared.service import ServiceRuntime
from shared.settings import BureauSettings
from tests.support.bus import harness_runtime

pytestmark = pytest.mark.integration


def cards(stage: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "bureau_cards_total", {"service": metrics.service_name(), "stage": stage}
    )
    return value or 0.0


def encoded() -> events.CardEncoded:
    return events.CardEncoded(
        issuer_id="acme",
        actor="test-station",
        card_id=uuid.uuid4(),
        batch_id=uuid.uuid4(),
        chip_serial="A1B2C3D4E5F6",
        station_id="s1",
        reader="r1",
        apdu_count=7,
    )


async def emit_then_fail(runtime: ServiceRuntime) -> None:
    async with runtime.unit_of_work() as uow:
        await uow.emit(encoded())
        raise RuntimeError("the handler failed after emitting")


async def test_cards_count_when_their_transaction_commits_and_never_on_rollback(
    bureau_settings: BureauSettings, unique: str
) -> None:
    runtime = harness_runtime(bureau_settings, f"cards_{unique}")
    # Each event from its own producer (shared/events/producers.py): the shipment from a
    # fulfillment runtime on the same schema.
    shipper = ServiceRuntime(
        name="fulfillment",
        settings=bureau_settings,
        migrations=runtime.migrations,
        schema=runtime.schema,
    )
    try:
        await migrate(runtime.engine, runtime.schema, runtime.migrations)
        before = cards("encoded"), cards("dispatched")

        with pytest.raises(RuntimeError):
            await emit_then_fail(runtime)
        assert (cards("encoded"), cards("dispatched")) == before

        async with runtime.unit_of_work() as uow:
            await uow.emit(encoded())
            await uow.emit(encoded())
            assert cards("encoded") == before[0]  # not committed yet
        assert cards("encoded") == before[0] + 2
        async with shipper.unit_of_work() as uow:
            await uow.emit(
                events.ShipmentDispatched(
                    issuer_id="acme",
                    actor="fulfillment",
                    shipment_id=uuid.uuid4(),
                    batch_id=uuid.uuid4(),
                    kind="cards",
                    card_ids=[uuid.uuid4() for _ in range(3)],
                    courier="post",
                    manifest_sha256="0" * 64,
                )
            )
            assert cards("dispatched") == before[1]  # not committed yet
        assert cards("dispatched") == before[1] + 3
    finally:
        await runtime.engine.dispose()
        await shipper.engine.dispose()
