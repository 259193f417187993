"""Dispatch manifests: content, determinism, and no PAN ever (services/fulfillment)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.fulfillment.manifests import ManifestWriter
from services.fulfillment.service import (
    Manifest,
    ManifestItem,
    build_manifest,
    carrier_id_for,
    manifest_csv,
    manifest_json,
    refuse_clear_pans,
)

BATCH = uuid.uuid4()
WHEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def items(n: int) -> list[ManifestItem]:
    cards = [uuid.uuid4() for _ in range(n)]
    return [ManifestItem(card, carrier_id_for(card)) for card in cards]


def manifest(entries: list[ManifestItem]) -> Manifest:
    return build_manifest(
        batch_id=BATCH, issuer_id="acme", courier="swift-post", created_at=WHEN, items=entries
    )


def test_manifest_lists_cards_by_carrier_with_a_content_derived_shipment_id() -> None:
    entries = items(5)
    first = manifest(entries)
    again = manifest(list(reversed(entries)))
    assert first == again
    assert [i.carrier_id for i in first.items] == sorted(i.carrier_id for i in entries)
    assert manifest(entries[:4]).shipment_id != first.shipment_id
    assert first.kind == "cards"


def test_an_empty_shipment_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        manifest([])


def test_json_manifest_names_shipment_courier_cards_and_carriers_only() -> None:
    m = manifest(items(3))
    document = json.loads(manifest_json(m))
    assert document["shipment_id"] == str(m.shipment_id)
    assert document["courier"] == "swift-post"
    assert document["count"] == 3
    assert [i["card_id"] for i in document["items"]] == [str(c) for c in m.card_ids]
    assert set(document["items"][0]) == {"sequence", "card_id", "carrier_id"}


def test_csv_manifest_has_one_row_per_card() -> None:
    m = manifest(items(3))
    rows = list(csv.DictReader(io.StringIO(manifest_csv(m).decode())))
    assert [r["card_id"] for r in rows] == [str(c) for c in m.card_ids]
    assert {r["shipment_id"] for r in rows} == {str(m.shipment_id)}


def test_a_pan_in_a_courier_document_is_refused() -> None:
    assert refuse_clear_pans("card 411111******1111") == "card 411111******1111"
    assert refuse_clear_pans("order 1234567890123") == "order 1234567890123"  # fails Luhn
    with pytest.raises(ValueError, match="PAN"):
        refuse_clear_pans("card 4111111111111111")


def test_writer_stores_both_files_and_the_digest_of_the_json(tmp_path: Path) -> None:
    m = manifest(items(2))
    stored = ManifestWriter(tmp_path / "manifests").write(m)
    json_bytes = Path(stored.json_path).read_bytes()
    assert Path(stored.json_path).name == f"{m.shipment_id}.json"
    assert Path(stored.csv_path).name == f"{m.shipment_id}.csv"
    assert stored.manifest_sha256 == hashlib.sha256(json_bytes).hexdigest()
    assert ManifestWriter(tmp_path / "manifests").write(m) == stored  # a retry writes the same
    assert sorted(p.name for p in (tmp_path / "manifests").iterdir()) == sorted(
        [f"{m.shipment_id}.json", f"{m.shipment_id}.csv"]
    )
