"""A record the Kafka client cannot unpack never sticks a consumer (shared/unreadable.py).

aiokafka decodes header keys as UTF-8 while it unpacks a fetched batch; the first test pins that
behaviour of the library we run (so a release that changes it is noticed), the others walk
step_past_unreadable over a consumer fake whose partition holds such a record."""

from __future__ import annotations

import os
from typing import Any, NamedTuple, cast

import pytest
from aiokafka import TopicPartition
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.memory_records import MemoryRecords

from shared.dead_letter import record_bytes
from shared.unreadable import UnreadableRecord, step_past_unreadable, unreadable_reason
from tests.support.poison import RawHeaderKey


def test_aiokafka_cannot_unpack_a_header_key_that_is_not_utf8() -> None:
    builder: Any = _DefaultRecordBatchBuilderPy(
        2, 0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=0,
        batch_size=1 << 16,
    )  # fmt: skip
    builder.append(0, timestamp=None, key=b"k", value=b"v", headers=[("fine", b"\xff")])
    builder.append(
        1, timestamp=None, key=b"k", value=b"v", headers=[(RawHeaderKey(b"\xc3\x28"), b"")]
    )
    batch = MemoryRecords(bytes(builder.build())).next_batch()
    assert batch is not None
    records = iter(batch)
    assert next(records).headers == [("fine", b"\xff")]  # a header VALUE is bytes: any bytes go
    with pytest.raises(UnicodeDecodeError):
        next(records)


class Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


class FakeConsumer:
    """Partitions of messages, where the message None is one the client cannot unpack."""

    def __init__(self, logs: dict[TopicPartition, list[Message | None]]) -> None:
        self.logs = logs
        self.positions = dict.fromkeys(logs, 0)
        self.committed_at: dict[TopicPartition, int] = {}
        self.commits = 0

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_at.get(tp)

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.positions[tp] = 0

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def getmany(
        self, tp: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Message]]:
        assert max_records == 1
        position = self.positions[tp]
        if position >= len(self.logs[tp]):
            return {}
        message = self.logs[tp][position]
        if message is None:
            b"\xc3\x28".decode()  # what aiokafka's unpacking raises, position left as it was
        assert message is not None
        self.positions[tp] = position + 1
        return {tp: [message]}

    async def commit(self) -> None:
        self.commits += 1
        self.committed_at = dict(self.positions)


def message(tp: TopicPartition, offset: int) -> Message:
    return Message(tp.topic, tp.partition, offset, os.urandom(4), b"{}", ())


async def test_the_records_around_an_unpackable_one_are_applied_and_it_is_dead_lettered() -> None:
    tp0, tp1 = TopicPartition("bureau.qa", 0), TopicPartition("bureau.qa", 1)
    logs: dict[TopicPartition, list[Message | None]] = {
        tp0: [message(tp0, 0), message(tp0, 1), None, message(tp0, 3)],
        tp1: [message(tp1, 0), message(tp1, 1)],
    }
    consumer = FakeConsumer(logs)
    consumer.committed_at = {tp0: 1}  # tp0's record 0 was applied before; tp1 has no commit yet
    consumer.positions = {tp0: 4, tp1: 2}  # where the failed getmany left them (drained, lost)
    delivered: list[tuple[int, int]] = []
    dead: list[tuple[Any, str]] = []

    async def deliver(records: Any) -> None:
        delivered.extend((r.partition, r.offset) for r in records)

    async def dead_letter(record: Any, reason: str) -> None:
        dead.append((record, reason))

    found = await step_past_unreadable(cast(Any, consumer), deliver, dead_letter)

    assert found == [UnreadableRecord("bureau.qa", 0, 2)]
    assert dead[0][0] == found[0]
    assert dead[0][1].startswith("undecodable: the Kafka client cannot unpack the record")
    assert "UnicodeDecodeError" in dead[0][1]
    # Rewound to the commits: tp0's record 1 and all of tp1 applied, none of them lost.
    assert sorted(delivered) == [(0, 1), (1, 0), (1, 1)]
    assert consumer.committed_at == {tp0: 3, tp1: 2}  # past the unpackable record, committed


async def test_a_pass_without_an_unpackable_record_dead_letters_nothing() -> None:
    tp = TopicPartition("bureau.qa", 0)
    consumer = FakeConsumer({tp: [message(tp, 0)]})
    dead: list[Any] = []

    async def deliver(records: Any) -> None:
        pass

    async def dead_letter(record: Any, reason: str) -> None:
        dead.append(record)

    assert await step_past_unreadable(cast(Any, consumer), deliver, dead_letter) == []
    assert dead == []
    assert consumer.committed_at == {tp: 1}


def test_an_unreadable_record_goes_to_the_dlq_with_no_bytes_and_a_clear_reason() -> None:
    assert record_bytes(UnreadableRecord("bureau.qa", 1, 42)) == (b"", b"", [])
    try:
        b"\xc3\x28".decode()
    except UnicodeDecodeError as exc:
        reason = unreadable_reason(exc)
    assert reason.startswith("undecodable: ")  # counted under the undecodable reason
    assert "invalid continuation byte" in reason
