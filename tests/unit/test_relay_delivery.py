"""The outbox relay never waits for good on a producer that holds its delivery reports (seen
after a Kafka kill: the outbox stalled for minutes after the broker was back): past the
delivery deadline it is an outage, nothing is counted against the rows, and the producer is
renewed. A topic the broker does not know yet is an outage too, not a refusal."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple, cast

import pytest
from aiokafka import errors as kafka_errors

from shared import outage
from shared.relay import OutboxRelay


class Row(NamedTuple):
    id: int
    topic: str
    key: str
    payload: bytes
    headers: dict[str, str]
    attempts: int


class HeldProducer:
    """Takes every record and never reports its delivery."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, topic: str, **_record: Any) -> asyncio.Future[None]:
        self.sent += 1
        return asyncio.get_running_loop().create_future()


class UnknownTopicProducer:
    async def send(self, topic: str, **_record: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_exception(kafka_errors.UnknownTopicOrPartitionError())
        return future


def relay(producer: Any) -> OutboxRelay:
    return OutboxRelay(
        engine=None,  # type: ignore[arg-type]  # _publish alone: no database
        schema="svc",
        producer=producer,
        new_producer=HeldProducer,
        delivery_timeout=0.2,
    )


ROWS = [Row(1, "b.qa", "card-1", b"{}", {}, 0), Row(2, "b.qa", "card-2", b"{}", {}, 0)]


@pytest.mark.parametrize("rows", [ROWS, [ROWS[0]._replace(attempts=1)]], ids=["batch", "alone"])
async def test_deliveries_held_past_the_deadline_are_an_outage_and_renew_the_producer(
    rows: list[Row],
) -> None:
    held = HeldProducer()
    publisher = relay(held)
    async with asyncio.timeout(5):
        with pytest.raises(kafka_errors.KafkaTimeoutError) as raised:
            await publisher._publish(cast(Any, rows))
    assert outage.is_outage(raised.value)
    assert held.sent == len(rows)
    assert publisher._renew


async def test_a_topic_the_broker_does_not_know_yet_is_an_outage_not_a_refusal() -> None:
    publisher = relay(UnknownTopicProducer())
    with pytest.raises(kafka_errors.UnknownTopicOrPartitionError) as raised:
        await publisher._publish(cast(Any, ROWS))
    assert outage.is_outage(raised.value)
