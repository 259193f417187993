"""One validation contract for a card's fields (shared/cardholder.py): whatever the vault's
request model refuses, intake refuses first, naming the field (the one-letter name used to
pass intake and come back as a 503 from the vault); and every list of an order is bounded."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from services.intake.schemas import MAX_CARDS_PER_ORDER, CardRequest, OrderRequest
from services.intake.service import validate_card
from shared.keymgmt.contract import VaultCardIn

TODAY = date(2026, 12, 7)
GOOD: dict[str, Any] = {
    "pan": "4761739001010010",
    "psn": "00",
    "expiry": "3011",
    "cardholder_name": "ADA LOVELACE",
    "address": {"lines": ["1 Rue Royale"], "postcode": "1000", "city": "Brussels", "country": "BE"},
}


def with_(**changes: Any) -> dict[str, Any]:
    address = GOOD["address"] | changes.pop("address", {})
    return GOOD | changes | {"address": address}


BAD = [
    (with_(cardholder_name="A"), "cardholder_name"),
    (with_(cardholder_name="Zoë"), "cardholder_name"),
    (with_(cardholder_name="   "), "cardholder_name"),
    (with_(pan="4761739001010011"), "pan"),
    (with_(pan="476173900101"), "pan"),
    (with_(psn="1"), "psn"),
    (with_(expiry="3013"), "expiry"),
    (with_(address={"country": "be"}), "address.country"),
    (with_(address={"country": "B1"}), "address.country"),
    (with_(address={"city": " "}), "address.city"),
    (with_(address={"lines": [" "]}), "address.lines.0"),
]


def vault_refuses(card: dict[str, Any]) -> bool:
    try:
        VaultCardIn.model_validate({"card_id": str(uuid.uuid4()), **card})
    except ValidationError:
        return True
    return False


def intake_fields(card: dict[str, Any]) -> set[str]:
    try:
        request = CardRequest.model_validate(card)
    except ValidationError as exc:  # refused by the schema: a 422 naming the location
        return {".".join(str(p) for p in err["loc"]) for err in exc.errors()}
    return {e.field for e in validate_card(1, request, TODAY)}


@pytest.mark.parametrize(("card", "field"), BAD)
def test_what_the_vault_refuses_intake_refuses_naming_the_field(
    card: dict[str, Any], field: str
) -> None:
    assert vault_refuses(card)
    assert field in intake_fields(card)


def test_a_good_card_passes_both() -> None:
    assert not vault_refuses(GOOD)
    assert intake_fields(GOOD) == set()


def test_the_vault_names_fields_not_values() -> None:
    with pytest.raises(ValidationError) as caught:
        VaultCardIn.model_validate({"card_id": str(uuid.uuid4()), **with_(cardholder_name="QÉ")})
    [error] = caught.value.errors()
    assert "cardholder_name" in error["msg"]
    assert "QÉ" not in error["msg"]


def test_every_list_of_an_order_is_bounded() -> None:
    order = {"external_ref": "x", "product_id": "p", "cards": [GOOD] * (MAX_CARDS_PER_ORDER + 1)}
    with pytest.raises(ValidationError, match="at most 100000"):
        OrderRequest.model_validate(order)
    with pytest.raises(ValidationError):
        CardRequest.model_validate(with_(address={"lines": ["a"] * 5}))
