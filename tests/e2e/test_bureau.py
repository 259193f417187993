"""An issuer's order of 50 cards through every service, on real Kafka, Postgres, SoftHSM and
pcscd: every card's chain is complete, audit reconciles with zero discrepancy, and the clear
PAN is nowhere outside keymgmt's vault: not in Kafka, not in a log line, not in a table."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from demo.client import Bureau, demo_cards
from tests.conftest import REPO
from tests.support.otlp import OtlpReceiver
from tests.support.stack_dump import database_dump, kafka_records

pytestmark = pytest.mark.e2e

CHAIN = [
    "card.ordered",
    "card.prepared",
    "card.encoded",
    "card.printed",
    "card.qa_passed",
    "card.packed",
]


# Each service's HTTP port (deploy/local/services.sh), where it serves /metrics.
PORTS = {
    "intake": 8101,
    "keymgmt": 8102,
    "electrical": 8103,
    "graphical": 8104,
    "qa": 8105,
    "fulfillment": 8106,
    "audit": 8107,
}
DASHBOARD = REPO / "deploy" / "k8s" / "observability" / "grafana-dashboard.json"
SELECTOR = re.compile(r"\b(bureau_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


async def scrape_every_service() -> dict[str, list[Sample]]:
    scraped: dict[str, list[Sample]] = {}
    async with httpx.AsyncClient(timeout=30.0) as http:
        for service, port in PORTS.items():
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert response.status_code == 200, response.text
            families = text_string_to_metric_families(response.text)
            scraped[service] = [sample for family in families for sample in family.samples]
    return scraped


def matches(sample: Sample, matchers: str) -> bool:
    """PromQL label matchers, the dashboard's variables ($service) standing for any value."""
    for label, op, quoted in MATCHER.findall(matchers):
        value = sample.labels.get(label, "")
        wanted = re.sub(r"\$\w+", ".*", quoted.replace("\\\\", "\\"))
        found = re.fullmatch(wanted, value) is not None if "~" in op else value == wanted
        if found == op.startswith("!"):
            return False
    return True


def dashboard_selectors() -> list[tuple[str, str, str]]:
    """(panel, series, label matchers) for every series a panel or variable queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    queries += [
        (v["name"], v["query"]["query"])
        for v in dashboard["templating"]["list"]
        if isinstance(v.get("query"), dict)
    ]
    return [(title, *found) for title, expr in queries for found in SELECTOR.findall(expr)]


async def assert_every_dashboard_series_recorded() -> None:
    """After a real batch, each series the Grafana dashboard charts has samples in some
    service's /metrics, and each service recorded what only it does."""
    scraped = await scrape_every_service()
    everywhere = [sample for samples in scraped.values() for sample in samples]
    for title, series, matchers in dashboard_selectors():
        found = [s for s in everywhere if s.name == series and matches(s, matchers)]
        assert found, f"{title}: no {series}{{{matchers}}} in any service's /metrics"

    def recorded(scraped_from: str, name: str, **labels: str) -> bool:
        return any(
            s.name == name and s.value > 0 and labels.items() <= s.labels.items()
            for s in scraped[scraped_from]
        )

    for service, stage in [
        ("intake", "ordered"),
        ("keymgmt", "prepared"),
        ("electrical", "encoded"),
        ("graphical", "printed"),
        ("qa", "qa_passed"),
        ("fulfillment", "packed"),
        ("fulfillment", "dispatched"),
    ]:
        assert recorded(service, "bureau_cards_total", service=service, stage=stage), stage
    assert recorded("keymgmt", "bureau_hsm_operation_seconds_count")
    for station in ("electrical", "qa"):
        assert recorded(station, "bureau_apdu_seconds_count", ins="A4"), station  # SELECT
    assert recorded("graphical", "bureau_print_jobs_total", outcome="printed")
    for service, samples in scraped.items():
        assert recorded(service, "bureau_events_published_total", service=service), service
        errors = [s for s in samples if s.name == "bureau_errors_total"]
        assert {s.labels["service"] for s in errors} == {service}, errors


def text_files(*roots: Path) -> list[Path]:
    return [
        p
        for root in roots
        if root.exists()
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".log", ".json", ".csv", ".jsonl", ".txt")
    ]


CARD_TRACE_SERVICES = {"intake", "keymgmt", "electrical", "graphical", "qa", "fulfillment", "audit"}
CARD_TRACE_STAGES = {"card", "encode", "print", "qa", "qa verdict"}


async def assert_one_trace_per_card(otlp: OtlpReceiver, card_ids: set[str]) -> None:
    """Each card's spans, from intake to packing, share the one trace its root span opened, with
    a span of every stage, as an OTLP collector received them."""
    missing: dict[str, object] = {}
    for _ in range(60):
        traces = otlp.traces()
        roots = {
            s.attributes.get("card.id"): trace_id
            for trace_id, spans in traces.items()
            for s in spans
            if s.name == "card"
        }
        missing = {}
        for card_id in card_ids:
            spans = traces.get(roots.get(card_id, ""), [])
            services = {s.service for s in spans}
            names = {s.name for s in spans}
            lacking = (CARD_TRACE_SERVICES - services) | (CARD_TRACE_STAGES - names)
            if lacking:
                missing[card_id] = sorted(lacking)
        if not missing:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"cards whose trace lacks services or stages: {missing}")


async def test_an_order_of_50_cards_reconciles_with_every_card_accounted_for(
    bureau: Bureau, e2e_env: dict[str, str], otlp: OtlpReceiver
) -> None:
    token = await bureau.onboard_issuer("e2e-bank", "E2E Bank", "e2e-debit")
    await bureau.receive_stock("e2e-bank", "e2e-debit", 50)
    cards = demo_cards(50, seed=int.from_bytes(os.urandom(4), "big"))
    order = await bureau.post_order(token, "e2e-debit", cards)
    batch = str(order["batch_id"])

    view = await bureau.wait_for_batch(batch, {"closed", "held"}, timeout=600)
    assert view["status"] == "closed", view
    assert view["problems"] == []
    assert all(not ids for ids in view["missing"].values())

    card_ids = {c["card_id"] for c in order["cards"]}
    for card_id in card_ids:
        types = [e["type"] for e in await bureau.events_of_card(card_id)]
        assert [t for t in CHAIN if t not in types] == [], (card_id, types)
    async with bureau._client(bureau.urls.audit, bureau.tokens.auditor) as auditor:
        shipped = (
            await auditor.get(
                "/v1/events",
                params={"batch_id": batch, "type": "shipment.dispatched", "limit": 100},
            )
        ).json()["events"]
    dispatched = {cid for e in shipped for cid in e["payload"]["card_ids"]}
    assert dispatched == card_ids
    await assert_one_trace_per_card(otlp, card_ids)

    pans = [c["pan"] for c in cards]
    records = await kafka_records(e2e_env["BUREAU_KAFKA_BOOTSTRAP"], e2e_env["BUREAU_TOPIC_PREFIX"])
    assert len(records) > 50 * len(CHAIN)
    blobs = [
        bytes(r.value or b"") + bytes(r.key or b"") + b"".join(v for _, v in (r.headers or []))
        for r in records
    ]
    assert not [p for p in pans if any(p.encode() in blob for blob in blobs)], "PAN in Kafka"

    run_dir = Path(e2e_env["BUREAU_RUN_DIR"])
    for path in text_files(run_dir / "logs", run_dir / "fulfillment", REPO / ".run" / "traces"):
        content = path.read_text(errors="replace")
        assert not [p for p in pans if p in content], f"PAN in {path}"
    exported = json.dumps([(s.name, s.attributes) for s in otlp.traces_flat()])
    assert not [p for p in pans if p in exported], "PAN in an exported span"

    dump = await asyncio.to_thread(database_dump, e2e_env["BUREAU_DATABASE_URL"])
    assert "e2e-bank" in dump  # the dump really holds this run's rows
    assert not [p for p in pans if p in dump], "PAN in a database table"

    await assert_every_dashboard_series_recorded()


async def test_an_order_of_sims_is_personalised_checked_and_reconciled(
    bureau: Bureau, e2e_env: dict[str, str]
) -> None:
    """A mobile operator's SIM order takes the same road: keymgmt prepares Ki/OPc/ICCID/IMSI,
    the station writes the USIM through the same SCP03 channel, QA authenticates the chip as
    the operator's network would, and audit reconciles the batch."""
    token = await bureau.onboard_issuer("e2e-mno", "E2E Mobile", "e2e-usim", kind="sim")
    # Ranges apart from the demo's (8932990..., 00101...), so both run on one stack.
    await bureau.sim_product("e2e-mno", "e2e-usim", imsi_prefix="00102", iccid_prefix="8932991")
    await bureau.receive_stock("e2e-mno", "e2e-usim", 6)
    cards = demo_cards(6, seed=int.from_bytes(os.urandom(4), "big"))
    order = await bureau.post_order(token, "e2e-usim", cards)
    batch = str(order["batch_id"])

    view = await bureau.wait_for_batch(batch, {"closed", "held"}, timeout=600)
    assert view["status"] == "closed", view
    assert view["problems"] == []
    for card in order["cards"]:
        found = await bureau.events_of_card(card["card_id"])
        types = [e["type"] for e in found]
        assert [t for t in CHAIN if t not in types] == [], (card["card_id"], types)
        prepared = next(e["payload"] for e in found if e["type"] == "card.prepared")
        assert prepared["key_scheme"] == "MILENAGE"
        passed = next(e["payload"] for e in found if e["type"] == "card.qa_passed")
        assert "sim-authenticate" in passed["checks"], passed
    async with bureau._client(bureau.urls.keymgmt, bureau.tokens.admin) as admin:
        listing = await admin.get(f"/v1/sim/batches/{batch}/output-file")
    assert listing.status_code == 200
    assert len([line for line in listing.text.splitlines() if line.startswith("8932991")]) == 6
