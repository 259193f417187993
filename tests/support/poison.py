"""Records no producer of ours would write, produced onto the real Kafka as raw bytes.

Kafka's record format (KIP-82) types a header key as a String, but a broker stores whatever
bytes a producer sends. aiokafka's producer encodes header keys as UTF-8 and so cannot send a
key that is not; the pure-Python batch builder encodes each key by calling its `encode`
method, so a key given as `RawHeaderKey` goes out as its exact bytes (no byte is changed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from shared.kafka_client import client_options

# Per record batch and record, the bytes around a record's key and value (v2 format: a
# 61-byte batch header, then varints and the header entries); kept out of a maximal value.
_FRAMING = 512


class RawHeaderKey(str):
    """A header key whose wire bytes are `raw`, UTF-8 or not."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawHeaderKey:
        made = super().__new__(cls, raw.hex())
        made.raw = raw
        return made

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


Header = tuple[str, bytes]


@dataclass(frozen=True)
class RawRecord:
    what: str
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()

    @property
    def header_keys(self) -> list[bytes]:
        return [k.raw if isinstance(k, RawHeaderKey) else k.encode() for k, _v in self.headers]


def poison_records(max_value: int) -> list[RawRecord]:
    """One record of each kind the issue names: a random key, a value that is not UTF-8, a
    header key that is not UTF-8, a header value that is not UTF-8, a value of the broker's
    maximum size."""
    return [
        RawRecord("random key", os.urandom(32), os.urandom(300)),
        RawRecord("non-UTF-8 value", b"card-1", b'{"type": "card.prepared"\xff\xfe}'),
        RawRecord(
            "non-UTF-8 header key",
            b"card-2",
            b'{"type": "card.prepared"}',
            ((RawHeaderKey(b"\xc3\x28trace\xff"), b"v"),),
        ),
        RawRecord("non-UTF-8 header value", b"card-3", os.urandom(64), (("trace", b"\xff\xfe"),)),
        RawRecord("broker-maximum value", os.urandom(8), os.urandom(max_value)),
    ]


async def broker_max_value(bootstrap: str, topic: str) -> int:
    """The largest record value the topic takes: its max.message.bytes less the framing."""
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        (answer,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
        )
    finally:
        await admin.close()
    (resource,) = answer.resources
    entries = {entry[0]: entry[1] for entry in resource[4]}
    return int(entries["max.message.bytes"]) - _FRAMING


async def produce_raw(bootstrap: str, topic: str, records: list[RawRecord]) -> list[int]:
    """Each record in a batch of its own on partition 0, in order; returns their offsets."""
    producer = AIOKafkaProducer(
        **client_options(bootstrap), acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    offsets: list[int] = []
    try:
        for record in records:
            batch = producer.create_batch()
            size = len(record.value or b"") + 64 * 1024
            builder: Any = _DefaultRecordBatchBuilderPy(
                2, 0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=0,
                batch_size=size,
            )  # fmt: skip
            batch._builder = builder  # the pure-Python builder writes RawHeaderKey's bytes
            appended = batch.append(
                timestamp=None, key=record.key, value=record.value, headers=list(record.headers)
            )
            assert appended is not None, f"{record.what}: not taken by the batch"
            sent = await (await producer.send_batch(batch, topic, partition=0))
            offsets.append(sent.offset)
    finally:
        await producer.stop()
    return offsets
