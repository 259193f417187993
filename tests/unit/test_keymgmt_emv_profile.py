"""The product's EMV profile (docs/emv-profile.md): validation naming the field, and the clear
DGIs it gives, decoded with pyemv's TLV decoder and checked against the Book 3 layout."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from pyemv.tlv import decode

from services.keymgmt.emv.key_checks import inventory_problems, needed_keys
from services.keymgmt.emv.oda import OdaError, expiry_of, issuer_certificate_block, sda_block
from services.keymgmt.emv.profile import EmvProfile, OdaMethod
from services.keymgmt.emv.records import CardRecord, afl, aip, clear_dgis, dgi_names
from services.keymgmt.emv.schemas import ProductProfile
from services.keymgmt.hsm.rsa import RsaPublic

RECORD = CardRecord("4761739001010010", "01", "2812", "DOE/JANE", "201")


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"cvm_list": "0000000000000000"}, "cvm_list", "2-byte CV rules"),
        ({"cvm_list": "00000000000000004103420"}, "cvm_list", "even number"),
        ({"cvm_list": "00000000000000002003"}, "cvm_list", "CVM code 20 is not defined"),
        ({"cvm_list": "00000000000000000403"}, "cvm_list", "plaintext offline PIN only"),
        ({"cvm_list": "00000000000000001E0F"}, "cvm_list", "condition code 0F"),
        ({"cdol1": "9F0205"}, "cdol1", "9F02 must have length 6"),
        ({"cdol1": "9F02069F0206"}, "cdol1", "9F02 is listed twice"),
        ({"cdol1": "7003"}, "cdol1", "constructed"),
        ({"cdol1": "9F3"}, "cdol1", "even number"),
        ({"cdol1": "9F02"}, "cdol1", "tag at byte 0 has no length"),
        ({"cdol1": "9F0206"}, "cdol1", "CDA needs 9F37"),
        ({"cdol2": "9F3704"}, "cdol2", "must include 8A"),
        ({"pdol": "9F02069F3704"}, "pdol", "must include 9F66"),
        ({"contactless_pdol": "9F3704"}, "contactless_pdol", "must include 9F66"),
        ({"auc": "FF"}, "auc", "must be 2 bytes"),
        ({"iac_denial": "00100000"}, "iac_denial", "must be 5 bytes"),
        ({"country_code": "GB"}, "country_code", "pattern"),
        ({"application_label": "X" * 17}, "application_label", "at most 16"),
        ({"oda_methods": ["SDA", "XDA"]}, "oda_methods", "SDA"),
        ({"lower_offline_limit": 5, "upper_offline_limit": 2}, "lower_offline_limit", "exceed"),
        ({"pin_try_limit": 0}, "pin_try_limit", "greater than or equal to 1"),
    ],
)
def test_a_bad_profile_is_refused_naming_the_field(
    change: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as info:
        EmvProfile.model_validate(change)
    text = str(info.value)
    assert field in text
    assert reason in text


def test_an_emv_product_needs_a_pin() -> None:
    with pytest.raises(ValidationError, match="pin_formats: an EMV profile needs a PIN"):
        ProductProfile.model_validate({"emv": {}})
    ok = ProductProfile.model_validate({"emv": {}, "pin_formats": ["ISO-9564-1-FORMAT-0"]})
    assert ok.emv == EmvProfile()


def test_profile_round_trips_as_json() -> None:
    profile = EmvProfile(oda_methods=[OdaMethod.CDA], contactless=False, cdol1="9f3704")
    assert profile.cdol1 == "9F3704"
    assert EmvProfile.model_validate(profile.model_dump(mode="json")) == profile


def test_dgis_without_oda_or_contactless() -> None:
    profile = EmvProfile(oda_methods=[], contactless=False)
    dgis = clear_dgis(RECORD, profile, None, "261207", None, None)
    assert [d[:2].hex().upper() for d in dgis] == ["0101", "0201", "9102", "9104", "0D01", "9010"]
    assert dgi_names(profile) == ["0101", "0201", "9102", "9104", "0D01", "9010", "8000", "8010"]
    gpo = decode(dgis[3][3:])
    assert gpo["82"] == bytes.fromhex("1C00")  # no ODA bit
    assert gpo["94"] == afl(1) == bytes.fromhex("0801010010010101")
    risk = decode(dgis[4][3:])
    assert (risk["9F14"], risk["9F23"], risk["DF01"]) == (b"\x00", b"\x00", b"\xff\xff")
    with pytest.raises(ValueError, match="no issuer certificate"):
        clear_dgis(RECORD, EmvProfile(), None, "261207", None, None)


def test_static_record_elements() -> None:
    profile = EmvProfile(country_code="250", currency_code="978")
    record = decode(clear_dgis(RECORD, profile.model_copy(update={"oda_methods": []}), "321",
                               "261207", None, None)[1][3:])["70"]  # fmt: skip
    assert record["5F25"] == bytes.fromhex("261207")
    assert record["5F24"] == bytes.fromhex("281231")
    assert record["5F28"] == bytes.fromhex("0250")
    assert record["9F42"] == bytes.fromhex("0978")
    assert record["8C"] == bytes.fromhex(profile.cdol1)
    assert record["9F4A"] == b"\x82"
    assert aip(EmvProfile(oda_methods=[OdaMethod.DDA])) == bytes.fromhex("3C00")


def test_certificate_formats_refuse_impossible_sizes() -> None:
    small = RsaPublic(bytes(1) + bytes(127), b"\x03")
    big = RsaPublic(b"\x80" + bytes(175), b"\x03")
    with pytest.raises(OdaError, match="NI <= NCA"):
        issuer_certificate_block(big, "476173", expiry_of(b"\x12\x30"), b"\x00\x00\x01", 144)
    with pytest.raises(OdaError, match="3-8 PAN digits"):
        issuer_certificate_block(small, "47", expiry_of(b"\x12\x30"), b"\x00\x00\x01", 176)
    with pytest.raises(OdaError, match="not MMYY"):
        expiry_of(b"\x13\x30")
    block = sda_block(b"\xda\xc1", b"static", 144)
    assert (len(block), block[:5].hex().upper()) == (144, "6A0301DAC1")


def test_key_checks_name_each_missing_or_unfit_key() -> None:
    profile = ProductProfile.model_validate(
        {"pin_formats": ["ISO-9564-1-FORMAT-0"], "cvv": True, "emv": {}}
    )
    needed = needed_keys("bank1", profile, "bureau/KMC/1")
    assert [k.label for k in needed] == [
        "bureau/KMC/1", "bank1/IMK-AC/1", "bank1/IMK-SMI/1", "bank1/IMK-SMC/1",
        "bank1/PIN-3DES/1", "bank1/CVK-A/1", "bank1/CVK-B/1",
    ]  # fmt: skip
    row = {"state": "active", "key_type": "DES2", "usage": "derive"}
    rows: dict[str, dict[str, str] | None] = {k.label: row for k in needed}
    rows["bureau/KMC/1"] = row | {"key_type": "AES128"}  # any type for the KMC
    rows["bank1/IMK-SMC/1"] = None
    rows["bank1/IMK-SMI/1"] = row | {"state": "retired"}
    rows["bank1/CVK-A/1"] = row | {"key_type": "DES1", "usage": "derive"}
    assert inventory_problems(needed, rows) == [
        "IMK-SMI bank1/IMK-SMI/1 is retired: load it by key ceremony",
        "IMK-SMC bank1/IMK-SMC/1 is missing: load it by key ceremony",
        "PIN key (format 0) bank1/PIN-3DES/1 has usage derive",
        "CVK-A bank1/CVK-A/1 has usage derive",
    ]
