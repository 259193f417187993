from __future__ import annotations

import json
import logging
import uuid

import pytest

from shared import events
from shared.logs import JsonFormatter
from shared.pan import luhn_check_digit, luhn_valid, mask_pan, redact_pans


def test_luhn_and_masking() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert luhn_check_digit("411111111111111") == "1"
    assert mask_pan("4111111111111111") == "411111******1111"
    with pytest.raises(ValueError, match="13 digits"):
        mask_pan("411111")


def test_redaction_masks_luhn_valid_pans_only() -> None:
    text = "pan 4111 1111 1111 1111 and 4111-1111-1111-1111, order 1234567890123 ok"
    out = redact_pans(text)
    assert "4111 1111 1111 1111" not in out
    assert "4111-1111-1111-1111" not in out
    assert "4111 11** **** 1111" in out  # spaced hex-like groups keep their spacing
    assert "411111******1111" in out
    assert "1234567890123" in out  # not Luhn-valid: a reference, not a PAN


def test_log_lines_never_carry_a_clear_pan() -> None:
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "card %s", ("5555555555554444",), None
    )
    record.detail = {"pan": "378282246310005"}
    line = JsonFormatter("test").format(record)
    assert "5555555555554444" not in line
    assert "378282246310005" not in line
    assert json.loads(line)["msg"] == "card 555555******4444"


def test_every_contract_round_trips_through_the_one_decoder() -> None:
    event = events.CardSpoiled(
        issuer_id="acme",
        actor="station-a",
        card_id=uuid.uuid4(),
        batch_id=uuid.uuid4(),
        stage="electrical",
        reason="card removed",
        apdu_trace=["80E20800 -> 9000"],
    )
    decoded = events.decode_event(events.encode_event(event))
    assert decoded == event
    assert event.partition_key() == str(event.card_id)
    assert "card.ordered" in events.event_types()


def test_decoder_names_what_is_wrong() -> None:
    with pytest.raises(events.UndecodableEvent, match="card_id"):
        events.decode_event(
            json.dumps({"type": "card.encoded", "issuer_id": "a", "actor": "b"}).encode()
        )
    with pytest.raises(events.UndecodableEvent):
        events.decode_event(b"not json")


def test_events_are_frozen_and_refuse_unknown_fields() -> None:
    event = events.StockReceived(
        issuer_id="acme", actor="op", lot_id="L1", product_id="p", quantity=10
    )
    with pytest.raises(ValueError, match="frozen"):
        event.quantity = 11  # type: ignore[misc]
    with pytest.raises(ValueError, match="Extra inputs"):
        events.StockReceived(
            issuer_id="acme", actor="op", lot_id="L1", product_id="p", quantity=1, pan="x"
        )  # type: ignore[call-arg]


def test_masking_and_the_luhn_digit_refuse_what_is_not_a_pan() -> None:
    assert mask_pan("6799998900000074324") == "679999*********4324"  # 19 digits
    assert mask_pan("4111111111119") == "411111***1119"  # 13 digits: 3 hidden
    for not_a_pan in ("411111111111", "41111111111111111111", "4111 1111 1111 1111"):
        with pytest.raises(ValueError, match="13 digits"):
            mask_pan(not_a_pan)
    assert luhn_check_digit("7992739871") == "3"  # the textbook Luhn example
    with pytest.raises(ValueError, match="digits only"):
        luhn_check_digit("12a")
