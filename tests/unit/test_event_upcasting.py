"""A version bump ships its upcaster: card.prepared v1 records (with the constant `dgis` list)
still decode, as v2, wherever they wait (Kafka, an outbox)."""

from __future__ import annotations

import json
import uuid

import pytest

from shared.events import CardPrepared, UndecodableEvent, decode_event, encode_event


def v1_record(key_scheme: str) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": "card.prepared",
            "version": 1,
            "occurred_at": "2026-12-01T10:00:00+00:00",
            "issuer_id": "bank",
            "actor": "keymgmt",
            "card_id": str(uuid.uuid4()),
            "batch_id": str(uuid.uuid4()),
            "product_id": "p1",
            "masked_pan": "476173******0010",
            "dgis": ["0101", "0102", "9102", "8000"],
            "key_scheme": key_scheme,
        }
    ).encode()


@pytest.mark.parametrize(
    ("key_scheme", "application"), [("EMV-OPTION-A", "emv"), ("MILENAGE", "usim")]
)
def test_a_v1_card_prepared_decodes_as_v2(key_scheme: str, application: str) -> None:
    event = decode_event(v1_record(key_scheme))
    assert isinstance(event, CardPrepared)
    assert (event.version, event.application, event.key_scheme) == (2, application, key_scheme)
    assert "dgis" not in event.model_dump()


def test_v2_round_trips_and_a_v3_is_refused() -> None:
    event = decode_event(v1_record("EMV-OPTION-A"))
    assert decode_event(encode_event(event)) == event
    future = json.loads(encode_event(event))
    future["version"] = 3
    with pytest.raises(UndecodableEvent, match="version"):
        decode_event(json.dumps(future))


def test_a_v1_record_with_a_bad_field_is_refused_with_its_name() -> None:
    broken = json.loads(v1_record("EMV-OPTION-A"))
    broken["card_id"] = "not-a-uuid"
    with pytest.raises(UndecodableEvent, match="card_id"):
        decode_event(json.dumps(broken))
    with pytest.raises(UndecodableEvent, match="not JSON"):
        decode_event(b'{"type": "card.prepared", ')
