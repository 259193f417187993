"""Security events for auditors: every record a service dead-lettered as forged (an event type
on another topic than its declared producer's, shared/events/producers.py).

The detecting consumer dead-letters the record and emits a `dead_letter.recorded` notice with
the reason `forged: type=T topic=X producer=P` in the same transaction as the DLQ row
(shared/bus.py); audit logs that notice like every event, in its append-only, hash-chained log
(its leaf is in the Merkle tree and its signed checkpoints). This route reads those entries
back: the security event IS the log entry, so it is as tamper-evident as the rest of the log.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from services.audit.log_repository import EventLog
from services.audit.paging import Page
from shared.auth import Principal, require
from shared.errors import Forbidden
from shared.events.producers import parse_forgery
from shared.service import RuntimeDep

router = APIRouter(prefix="/v1", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor", "admin"))]


@router.get(
    "/security-events",
    summary="Forged events the services dead-lettered, as audit's log holds them, in log order",
)
async def list_security_events(
    principal: Auditor,
    runtime: RuntimeDep,
    page: Page,
) -> dict[str, Any]:
    if principal.issuer_id is not None:
        # A forged record names no issuer anyone vouches for: the bureau's auditors see them.
        raise Forbidden("security events are the bureau's; issuer auditors cannot list them")
    async with runtime.unit_of_work() as uow:
        event_log: EventLog = uow.repo.log
        entries = await event_log.security_events(page.after_seq, page.limit)
    return page.answer("security_events", [security_event(entry) for entry in entries])


def security_event(entry: dict[str, Any]) -> dict[str, Any]:
    """One log entry of a forged record, as an auditor reads it."""
    notice = entry["payload"]
    return {
        "kind": "forged_event",
        "seq": entry["seq"],
        "log_index": entry["log_index"],
        "entry_hash": entry["entry_hash"],
        "recorded_at": entry["recorded_at"],
        "detected_at": entry["occurred_at"],
        "detected_by": notice["consumer"],
        "forged": parse_forgery(notice["reason"]),
        "record": {
            "topic": notice["source_topic"],
            "partition": notice["source_partition"],
            "offset": notice["source_offset"],
        },
        "reason": notice["reason"],
        "notice_event_id": entry["event_id"],
    }
