"""Records the Kafka client itself cannot read, stepped past and dead-lettered (shared/bus.py).

Kafka's record format types a header key as a String, but the broker stores whatever bytes a
producer sent. aiokafka decodes every header key as UTF-8 while it unpacks a fetched batch
(aiokafka/record/default_records: `h_key.decode("utf-8")`, in its C extension too), before any
code of ours sees the record. The UnicodeDecodeError leaves `getmany` and takes with it every
record already drained in that call, positions of other partitions included; the fetcher then
fetches the same bytes again and fails again: a consumer stuck for good.

`step_past_unreadable` puts every assigned partition back at its committed offset (nothing
drained by the failed call is lost), reads each partition one record at a time, applies the
good records before the unreadable one, and dead-letters the unreadable one with what is known
of it (topic, partition, offset: its bytes stay on the broker there, and the DLQ record's
`dlq.source` names them), then seeks past it. Consumption goes on; nothing is skipped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

# What the client raises when a fetched record's bytes do not parse as its types say.
UNREADABLE_ERRORS: tuple[type[BaseException], ...] = (UnicodeDecodeError,)

# At most this many records of one partition are read one by one looking for the unreadable
# one; past it, the pass ends with what it applied committed and the next one goes on.
_PROBE_LIMIT = 2000
_PROBE_WAIT_MS = 1000

Deliver = Callable[[Sequence[Any]], Awaitable[None]]
DeadLetter = Callable[[Any, str], Awaitable[None]]


@dataclass(frozen=True)
class UnreadableRecord:
    """What is known of a record the client could not unpack: where it is. Its key, value and
    headers are not known (the client gives none of them), so they go to the DLQ empty."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()


def unreadable_reason(exc: BaseException) -> str:
    return (
        f"undecodable: the Kafka client cannot unpack the record ({exc.__class__.__name__}: "
        f"{str(exc)[:200]}); its bytes stay on the broker at the source offset"
    )


async def rewind_to_committed(consumer: AIOKafkaConsumer) -> None:
    """Every assigned partition back to its committed offset (the beginning when the group
    has none yet: auto_offset_reset=earliest)."""
    for tp in consumer.assignment():
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


async def step_past_unreadable(
    consumer: AIOKafkaConsumer, deliver: Deliver, dead_letter: DeadLetter
) -> list[UnreadableRecord]:
    """After `getmany` raised one of UNREADABLE_ERRORS: apply what precedes each unreadable
    record, dead-letter it, seek past it and commit. Returns the records dead-lettered."""
    await rewind_to_committed(consumer)
    found: list[UnreadableRecord] = []
    for tp in sorted(consumer.assignment()):
        probed = await _probe(consumer, tp, deliver)
        if probed is None:
            continue
        record, reason = probed
        await dead_letter(record, reason)
        consumer.seek(tp, record.offset + 1)
        found.append(record)
    await consumer.commit()
    return found


async def _probe(
    consumer: AIOKafkaConsumer, tp: TopicPartition, deliver: Deliver
) -> tuple[UnreadableRecord, str] | None:
    """Read `tp` one record at a time (each read moves the position past its record); the
    read that raises stands at the unreadable record's offset."""
    for _step in range(_PROBE_LIMIT):
        try:
            got = await consumer.getmany(tp, timeout_ms=_PROBE_WAIT_MS, max_records=1)
        except UNREADABLE_ERRORS as exc:
            offset = await consumer.position(tp)
            record = UnreadableRecord(tp.topic, tp.partition, offset)
            log.warning(
                "record the Kafka client cannot read",
                extra={"topic": tp.topic, "partition": tp.partition, "offset": offset},
            )
            return record, unreadable_reason(exc)
        records = got.get(tp, [])
        if not records:
            return None  # read to its end: the unreadable record was elsewhere
        await deliver(records)
    return None
