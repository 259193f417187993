"""Auditor exports (NDJSON, CSV), filters by actor and time, and the daily report, on the
real stack."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.audit.settings import AuditSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.audit import (
    AUDITOR,
    OPERATOR,
    OTHER_ISSUERS_AUDITOR,
    audit_events,
    logged,
    publish,
)
from tests.support.audit_story import BatchStory

pytestmark = pytest.mark.integration


async def test_exports_filters_and_the_daily_report(
    audit: ServiceRuntime, audit_settings: AuditSettings, api: httpx.AsyncClient
) -> None:
    story = BatchStory(2)
    batch = [e for e in story.good_batch() if not isinstance(e, events.CardPacked)]
    await publish(audit_settings, batch)
    await logged(api, len(batch), batch_id=str(story.batch_id))
    held = await api.post(f"/v1/batches/{story.batch_id}/reconcile", headers=OPERATOR)
    assert held.json()["status"] == "held"
    await audit_events(audit_settings, story.batch_id, "batch.discrepancy")
    await logged(api, len(batch) + 1, batch_id=str(story.batch_id))

    by_batch = {"batch_id": str(story.batch_id)}
    ndjson = await api.get("/v1/events/export", params=by_batch, headers=AUDITOR)
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in ndjson.text.splitlines()]
    assert len(rows) == len(batch) + 1
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    assert {r["event_id"] for r in rows} >= {str(e.event_id) for e in batch}

    params = by_batch | {"format": "csv", "actor": "intake"}
    exported = await api.get("/v1/events/export", params=params, headers=AUDITOR)
    table = list(csv.DictReader(io.StringIO(exported.text)))
    intake = [e for e in batch if e.actor == "intake"]
    assert len(table) == len(intake)
    assert {r["actor"] for r in table} == {"intake"}
    assert json.loads(table[0]["payload"])["event_id"] == table[0]["event_id"]

    future = {"occurred_from": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    later = await api.get("/v1/events", params=by_batch | future, headers=AUDITOR)
    assert later.json()["events"] == []

    today = datetime.now(UTC).date().isoformat()
    report = (await api.get("/v1/reports/daily", params={"day": today}, headers=AUDITOR)).json()
    (row,) = [b for b in report["batches"] if b["batch_id"] == str(story.batch_id)]
    assert row["status"] == "held"
    assert row["discrepancy"]["missing"] == {"packing": sorted(str(c) for c in story.card_ids)}
    assert report["totals"]["held"] >= 1
    assert report["events_by_type"]["batch.discrepancy"] >= 1

    # Another issuer's auditor sees neither the rows nor the batch.
    theirs = await api.get("/v1/events/export", params=by_batch, headers=OTHER_ISSUERS_AUDITOR)
    assert theirs.text == ""
    hidden = await api.get(
        "/v1/reports/daily", params={"day": today}, headers=OTHER_ISSUERS_AUDITOR
    )
    assert all(b["batch_id"] != str(story.batch_id) for b in hidden.json()["batches"])
    assert hidden.json()["issuer_id"] == "bank-b"
