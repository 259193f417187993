"""Dead-lettering a record the consumer cannot apply (shared/bus.py): its bytes to the DLQ
topic through the outbox, and a `dead_letter.recorded` event that audit counts, in one
transaction.

Nothing of the record is decoded here: a producer may put any bytes in its key, value and
headers, and the path that takes poison away must not choke on it. The key and headers travel
as hex in the DLQ record's headers. A DLQ record always fits the broker: a record larger than
DLQ_INLINE_MAX is kept whole in the service's `dead_letter_bodies` table and the DLQ record's
body is a small JSON reference to it (the row id, the value's SHA-256 and sizes).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import DeadLetterRecorded, encode_event
from shared.outbox import add_outbox_rows

_DLQ_NAMESPACE = uuid.UUID("5f1d3a52-1c1e-4c1b-9d35-0d6c7e5b0001")
# Inline up to this many bytes of key, value and headers; the broker takes 1 MB by default.
DLQ_INLINE_MAX = 256 * 1024
# The original key and headers in the DLQ record's headers are cut to this many bytes (the
# whole record is kept with an oversize body).
_HEADER_MAX = 4096

RawRecord = tuple[bytes, bytes, list[tuple[bytes, bytes]]]


def record_bytes(record: Any) -> RawRecord:
    """A record's key, value and headers as bytes, whatever a producer put there."""

    def raw(part: Any) -> bytes:
        if part is None:
            return b""
        if isinstance(part, str):
            return part.encode("utf-8", "surrogateescape")
        return bytes(part)

    headers = [(raw(k), raw(v)) for k, v in (record.headers or ())]
    return raw(record.key), raw(record.value), headers


def _hex_pairs(headers: list[tuple[bytes, bytes]]) -> str:
    return json.dumps([[k.hex(), v.hex()] for k, v in headers], separators=(",", ":"))


async def record_dead_letter(
    conn: AsyncConnection,
    *,
    schema: str,
    consumer: str,
    dead_letter_topic: str,
    emit_topic: str,
    record: Any,
    reason: str,
) -> str:
    """Write the DLQ row and the notice in `conn`'s transaction; returns the record's source
    (consumer/topic/partition/offset), which also makes both ids: at most once per record."""
    source = f"{consumer}/{record.topic}/{record.partition}/{record.offset}"
    dlq_id = uuid.uuid5(_DLQ_NAMESPACE, source)
    notice = DeadLetterRecorded(
        event_id=uuid.uuid5(_DLQ_NAMESPACE, "notice/" + source),
        issuer_id="bureau",
        actor=consumer,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        consumer=consumer,
        reason=reason[:2000],
    )
    key, value, headers = record_bytes(record)
    dlq_headers = {
        "dlq.reason": reason[:2000],
        "dlq.source": source,
        "dlq.consumer": consumer,
        "dlq.key": key[:_HEADER_MAX].hex(),
        "dlq.headers": _hex_pairs(headers)[: 2 * _HEADER_MAX],
    }
    size = len(key) + len(value) + sum(len(k) + len(v) for k, v in headers)
    if size > DLQ_INLINE_MAX:
        value = await _keep_body(conn, schema, dlq_id, source, (key, value, headers), size)
        dlq_headers["dlq.body"] = "kept-in-postgres"
    await add_outbox_rows(
        conn,
        schema,
        [
            (dlq_id, dead_letter_topic, source, value, dlq_headers),
            (notice.event_id, emit_topic, notice.partition_key(), encode_event(notice), {}),
        ],
    )
    return source


async def _keep_body(
    conn: AsyncConnection,
    schema: str,
    dlq_id: uuid.UUID,
    source: str,
    raw: RawRecord,
    size: int,
) -> bytes:
    key, value, headers = raw
    digest = hashlib.sha256(value).hexdigest()
    await conn.execute(
        text(
            f"INSERT INTO {schema}.dead_letter_bodies"
            " (id, source, key, value, headers, sha256, size)"
            " VALUES (:id, :source, :key, :value, CAST(:headers AS jsonb), :sha256, :size)"
            " ON CONFLICT (id) DO NOTHING"
        ),
        {
            "id": dlq_id,
            "source": source,
            "key": key,
            "value": value,
            "headers": _hex_pairs(headers),
            "sha256": digest,
            "size": size,
        },
    )
    reference = {
        "kept_in": f"{schema}.dead_letter_bodies",
        "id": str(dlq_id),
        "value_sha256": digest,
        "value_size": len(value),
        "record_size": size,
    }
    return json.dumps(reference).encode()
