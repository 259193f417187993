"""Pure parts of PINs, CVVs, product profiles and SIM identities (no HSM)."""

from __future__ import annotations

import pytest
from psec import pinblock

from services.keymgmt.emv.cvv import cvv_input
from services.keymgmt.emv.pin import (
    PinBlockFormat,
    PinPolicy,
    PinVerification,
    decimalise,
    iso0_block,
    iso4_pan_field,
    iso4_pin_field,
)
from services.keymgmt.emv.schemas import ProductProfile
from services.keymgmt.emv.security import profile_key_labels
from services.keymgmt.sim.secrets import make_iccid, make_imsi
from shared.pan import luhn_check_digit


def pin(digits: str) -> bytearray:
    return bytearray(int(c) for c in digits)


@pytest.mark.parametrize(
    ("digits", "pan"),
    [("1234", "5544332211009966"), ("987654321012", "4000001234567899"), ("0000", "1234567890123")],
)
def test_format0_block_matches_psec(digits: str, pan: str) -> None:
    assert bytes(iso0_block(pin(digits), pan)) == pinblock.encode_pinblock_iso_0(digits, pan)


def test_format0_pads_a_short_pan_field_with_zeros() -> None:
    # ISO 9564-1: fewer than 12 PAN digits (check digit excluded) are right-justified, 0-filled
    assert bytes(iso0_block(pin("0000"), "123456789012")).hex().upper() == "040001DCBA9876FE"


def test_format4_fields_match_psec_layout() -> None:
    field = iso4_pin_field(pin("1234"), bytes(8))
    assert field[:8] == pinblock.encode_pin_field_iso_4("1234")[:8]
    for pan in ("1234567890123456", "112233445566778899", "123456789012"):
        assert iso4_pan_field(pan) == pinblock.encode_pan_field_iso_4(pan)


def test_pin_policy_refuses_bad_choices() -> None:
    with pytest.raises(ValueError, match="4-12"):
        PinPolicy(length=3)
    with pytest.raises(ValueError, match="PVKI"):
        PinPolicy(pvki="12")
    with pytest.raises(ValueError, match="16 digits"):
        PinPolicy(decimalisation="0123")
    policy = PinPolicy(validation_offset=0, validation_length=16)
    assert policy.validation_data("1122334455667788") == bytes.fromhex("1122334455667788")
    assert PinPolicy().validation_data("4000001234567899") == bytes.fromhex("000123456789FFFF")
    with pytest.raises(ValueError, match="within the PAN"):
        PinPolicy(validation_offset=10, validation_length=12).validation_data("4000001234567899")


def test_decimalisation_and_cvv_input() -> None:
    assert decimalise(bytes.fromhex("1A2B3C4D5E6F7A8B"), 4) == "1234"
    assert decimalise(bytes.fromhex("AAAAAAAAAAAAAAA9"), 3) == "900"
    assert cvv_input("4123456789012345", "8701", "101")[:8] == bytes.fromhex("4123456789012345")


def test_profile_names_only_the_keys_it_uses() -> None:
    none = ProductProfile()
    assert none.pin_policy() is None
    assert profile_key_labels("bank", none) == []
    full = ProductProfile.model_validate(
        {"pin_formats": ["ISO-9564-1-FORMAT-4"], "pin_verification": "ibm-3624-offset"}
        | {"cvv": True}
    )
    policy = full.pin_policy()
    assert policy is not None
    assert policy.formats == (PinBlockFormat.ISO4,)
    assert policy.verification is PinVerification.IBM3624_OFFSET
    assert profile_key_labels("bank", full) == [
        "bank/PIN-AES/1",
        "bank/PVK/1",
        "bank/CVK-A/1",
        "bank/CVK-B/1",
    ]


def test_iccid_luhn_and_imsi() -> None:
    assert luhn_check_digit("7992739871") == "3"
    assert make_iccid("89441", 7, 20) == "8944100000000000007" + luhn_check_digit(
        "8944100000000000007"
    )
    assert make_imsi("310410", 123) == "310410000000123"
    with pytest.raises(ValueError, match="digits"):
        luhn_check_digit("12a")
