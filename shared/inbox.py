"""The consumer's inbox: every applied event's id, in the transaction of its effect, so a
redelivered event (same event_id) has no second effect (ARCHITECTURE.md, delivery guarantees).
The schema name is checked by the consumer (shared.db.checked_identifier)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from shared.events import Event


async def record_many_in_inbox(
    conn: Any, schema: str, decoded: Sequence[tuple[Any, Event]]
) -> set[uuid.UUID]:
    """Record a fetched batch's events in the inbox; the ids seen for the first time."""
    rows = await conn.execute(
        text(
            f"INSERT INTO {schema}.inbox"
            ' (event_id, event_type, topic, partition, "offset")'
            " SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[]),"
            " CAST(:topics AS text[]), CAST(:partitions AS int[]), CAST(:offsets AS bigint[]))"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        ),
        {
            "ids": [e.event_id for _, e in decoded],
            "types": [e.type for _, e in decoded],
            "topics": [r.topic for r, _ in decoded],
            "partitions": [r.partition for r, _ in decoded],
            "offsets": [r.offset for r, _ in decoded],
        },
    )
    return {row[0] for row in rows}


async def record_in_inbox(conn: Any, schema: str, event: Event, record: Any) -> bool:
    """Record one event in the inbox; False when it was seen before (a duplicate)."""
    row = (
        await conn.execute(
            text(
                f"INSERT INTO {schema}.inbox"
                ' (event_id, event_type, topic, partition, "offset")'
                " VALUES (:id, :type, :topic, :partition, :offset)"
                " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            ),
            {
                "id": event.event_id,
                "type": event.type,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        )
    ).first()
    return row is not None
