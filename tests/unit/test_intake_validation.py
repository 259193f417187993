from __future__ import annotations

from datetime import date

from services.intake.schemas import CardRequest, OrderRequest
from services.intake.service import request_mac, validate_order

TODAY = date(2026, 11, 24)
ADDRESS = {"lines": ["1 Main St"], "postcode": "1000", "city": "Brussels", "country": "BE"}


def card(**overrides: object) -> CardRequest:
    fields: dict[str, object] = {
        "pan": "4111111111111111",
        "psn": "00",
        "expiry": "2911",
        "cardholder_name": "ADA LOVELACE",
        "address": ADDRESS,
    }
    fields.update(overrides)
    return CardRequest.model_validate(fields)


def order(*cards: CardRequest) -> OrderRequest:
    return OrderRequest(external_ref="r1", product_id="p1", cards=list(cards))


def test_a_good_order_has_no_problems() -> None:
    assert validate_order(order(card(), card(pan="5555555555554444")), TODAY, 10) == []


def test_every_bad_line_is_named_with_its_field_and_no_pan_is_echoed() -> None:
    errors = validate_order(
        order(
            card(),
            card(pan="4111111111111112"),
            card(pan="5555555555554444", expiry="2611"),
            card(pan="378282246310005", cardholder_name="Zoë Ünïcode"),
            card(pan="6011111111111117", cardholder_name="A" * 27, psn="1"),
            card(pan="12ab"),
        ),
        TODAY,
        100,
    )
    found = {(e.line, e.field) for e in errors}
    assert found == {
        (2, "pan"),
        (3, "expiry"),
        (4, "cardholder_name"),
        (5, "cardholder_name"),
        (5, "psn"),
        (6, "pan"),
    }
    assert all("4111111111111112" not in e.problem for e in errors)
    luhn = next(e for e in errors if e.line == 2)
    assert luhn.problem == "fails the Luhn check"


def test_expiry_must_be_a_real_future_month() -> None:
    problems = [e.problem for e in validate_order(order(card(expiry="2913")), TODAY, 10)]
    assert problems == ["month must be 01 to 12"]
    assert validate_order(order(card(expiry="2611")), TODAY, 10)[0].field == "expiry"
    assert validate_order(order(card(expiry="2612")), TODAY, 10) == []


def test_duplicate_pan_and_psn_in_one_order_is_refused() -> None:
    errors = validate_order(order(card(), card()), TODAY, 10)
    assert [(e.line, e.problem) for e in errors] == [(2, "same PAN and PSN as line 1")]


def test_too_many_cards() -> None:
    errors = validate_order(order(card(), card(pan="5555555555554444")), TODAY, 1)
    assert errors[0].field == "cards"


def test_request_mac_recognises_the_same_body_per_issuer() -> None:
    body = order(card())
    assert request_mac("k", "a", body) == request_mac("k", "a", order(card()))
    assert request_mac("k", "a", body) != request_mac("k", "b", body)
    assert request_mac("k", "a", body) != request_mac("k", "a", order(card(psn="01")))
