"""Audit's HANDLERS table driven the two ways of tests/support/delivery.py, with the same cases:
in process on the real database (no broker) and through the real Kafka broker. A batch told by
every stream is reconciled, then closed once its cards are dispatched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import groupby

import pytest
from sqlalchemy import text

from services.audit.app import bootstrap
from services.audit.settings import AuditSettings
from shared import events
from shared.db import make_engine
from tests.support.audit import stream_of
from tests.support.audit_story import BatchStory
from tests.support.delivery import Delivery, delivering

pytestmark = pytest.mark.integration


@pytest.fixture(params=["in_process", "kafka"])
async def delivery(
    request: pytest.FixtureRequest, audit_settings: AuditSettings, unique: str
) -> AsyncIterator[Delivery]:
    schema = f"auditdl_{unique}"
    async with delivering(bootstrap(audit_settings, schema=schema), request.param) as d:
        yield d
    # The log refuses DELETE and TRUNCATE, not the end of a test's private schema.
    engine = make_engine(audit_settings.database_url, schema)
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    await engine.dispose()


async def tell(delivery: Delivery, batch: list[events.Event]) -> None:
    """Each event on the stream of the service that emits it, one delivery per stream."""
    for stream, told in groupby(sorted(batch, key=stream_of), key=stream_of):
        await delivery.deliver(*told, stream=stream)


def of_type(out: list[events.Event], kind: type[events.Event]) -> list[events.Event]:
    return [e for e in out if isinstance(e, kind)]


async def test_a_batch_is_reconciled_then_closed(delivery: Delivery) -> None:
    story = BatchStory(3)
    rejected, good = story.card_ids[0], story.card_ids[1:]
    await tell(delivery, [*story.good_batch({rejected: "qa"}), story.destroy(rejected)])
    out = (await delivery.emitted()).events
    (reconciled,) = of_type(out, events.BatchReconciled)
    assert isinstance(reconciled, events.BatchReconciled)
    assert reconciled.batch_id == story.batch_id
    assert (reconciled.counts["ordered"], reconciled.counts["packed"]) == (3, 2)
    assert reconciled.counts["destroyed"] == 1
    assert of_type(out, events.BatchClosed) == []

    await tell(delivery, [story.dispatch(good)])
    (closed,) = of_type((await delivery.emitted()).events, events.BatchClosed)
    assert isinstance(closed, events.BatchClosed)
    assert (closed.dispatched, closed.destroyed) == (2, 1)


async def test_a_batch_with_a_card_unaccounted_for_is_not_reconciled(delivery: Delivery) -> None:
    story = BatchStory(3)
    lost = story.card_ids[0]
    told = [e for e in story.good_batch() if getattr(e, "card_id", None) != lost]
    await tell(delivery, [*told, *story.order()[1:2]])
    out = (await delivery.emitted()).events
    assert of_type(out, events.BatchReconciled) == []
