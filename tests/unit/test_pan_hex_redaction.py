"""PAN redaction inside hex (issue 16): APDU traces and BER-TLV dumps carry the PAN as BCD in
tag 5A, as track 2 in 57/9F6B, or as ASCII digits; all are masked, in whatever grouping the
trace uses, while ordinary hex without a Luhn-valid PAN is left exactly as it was."""

from __future__ import annotations

import json
import logging
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.logs import JsonFormatter
from shared.pan import luhn_check_digit, luhn_valid, redact_hex_pans, redact_pans
from tests.support.properties import BOUNDED

PAN16 = "4761739001010010"  # Luhn-valid (an EMV test card)
PAN15 = "378282246310005"
PAN19 = "679999890000000001" + luhn_check_digit("679999890000000001")


def nibbles(text: str) -> str:
    return re.sub(r"[^0-9A-Fa-f*]", "", text).upper()


@pytest.mark.parametrize(
    ("trace", "masked"),
    [
        ("5A08 4761 7390 0101 0010 5F24 03 291231", "5A08 4761 73** **** 0010 5F24 03 291231"),
        ("00E2000013 5A0847617390010100109000", "00E2000013 5A08476173******00109000"),
        ("5a:08:47:61:73:90:01:01:00:10", "5a:08:47:61:73:**:**:**:00:10"),
        ("70 0A 5A08 378282246310005F", "70 0A 5A08 378282*****0005F"),
        (
            "57134761739001010010D29122011234567899F",
            "5713476173******0010D*****************F",
        ),
        ("9F6B13 4761739001010010D2912201123456789F", "9F6B13 476173******0010D****************F"),
        ("56 34373631373339303031303130303130", "56 343736313733************30303130"),
        ("READ RECORD 0C 4761739001010010D2912", "READ RECORD 0C 476173******0010D2912"),
    ],
)
def test_pans_in_hex_and_tlv_are_masked(trace: str, masked: str) -> None:
    assert redact_pans(trace) == masked


def test_a_nineteen_digit_pan_padded_with_f_is_masked() -> None:
    out = redact_pans(f"5A0A{PAN19}F")
    assert PAN19 not in out
    assert out == f"5A0A{PAN19[:6]}*********{PAN19[-4:]}F"


@pytest.mark.parametrize(
    "ordinary",
    [
        "00A4040007A0000000031010",  # SELECT an AID
        "5A08 4761 7390 0101 0011",  # tag 5A holding digits that fail Luhn
        "57134761739001010011D2912201",  # track 2 whose PAN fails Luhn
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # SHA-256 of b""
        "KCV 8CA64D, MAC 1122334455667788, ATC 0001",
        "card 7c9e6679-7425-40de-944b-e07fc1f90ae7 at 2026-12-07",
    ],
)
def test_ordinary_hex_is_left_alone(ordinary: str) -> None:
    assert redact_pans(ordinary) == ordinary


def test_an_apdu_trace_in_a_log_line_carries_no_clear_pan() -> None:
    trace = "<< 70 12 5A08 4761 7390 0101 0010 5F24 03 291231 5F34 01 01 9000"
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "apdu %s", (trace,), None)
    record.response = "77 1E 57 13 47 61 73 90 01 01 00 10 D2 91 22 01 12 34 56 78 99 9F"
    line = JsonFormatter("test").format(record)
    assert PAN16 not in nibbles(line)
    assert json.loads(line)["msg"].startswith("apdu << 70 12 5A08 4761 73** **** 0010")
    assert "1234567899" not in nibbles(line)  # track 2 discretionary data masked too


_HEX = st.binary(max_size=24).map(bytes.hex)
_STYLES = st.sampled_from(["", " ", ":"])


def spaced(hex_text: str, style: str, upper: bool) -> str:
    text = hex_text.upper() if upper else hex_text
    return style.join(text[i : i + 2] for i in range(0, len(text), 2))


@st.composite
def pans(draw: st.DrawFn) -> str:
    body = draw(st.text("0123456789", min_size=12, max_size=18))
    return body + luhn_check_digit(body)


@BOUNDED
@given(pans(), _HEX, _HEX, _STYLES, st.booleans())
def test_a_pan_in_tag_5a_never_survives(
    pan: str, before: str, after: str, style: str, upper: bool
) -> None:
    value = pan + ("F" if len(pan) % 2 else "")
    tlv = f"5A{len(value) // 2:02X}{value}"
    text = "trace " + spaced(before + tlv + after, style, upper) + " end"
    out = redact_pans(text)
    assert pan not in nibbles(out)
    # Redaction only replaces characters, so the PAN's nibbles stand where they stood: every
    # digit between its first six and last four is masked, whichever rule masked it (a PAN
    # followed by decimal-looking hex may be masked as part of a longer digit run).
    start = len(nibbles("trace " + before)) + 4  # "trace" holds the nibbles A, C, E
    assert set(nibbles(out)[start + 6 : start + len(pan) - 4]) == {"*"}


@BOUNDED
@given(pans(), st.text("0123456789", min_size=4, max_size=20), _HEX, _STYLES)
def test_a_pan_in_track_2_never_survives(pan: str, rest: str, before: str, style: str) -> None:
    value = f"{pan}D{rest}"
    value += "F" if len(value) % 2 else ""
    out = redact_pans(spaced(f"{before}57{len(value) // 2:02X}{value}", style, True))
    assert pan not in nibbles(out)
    after_separator = nibbles(out).rsplit("D", 1)[1].rstrip("F")
    assert after_separator == "*" * len(rest)


@BOUNDED
@given(st.binary(max_size=64), _STYLES, st.booleans())
def test_hex_without_a_thirteen_digit_run_is_never_changed(
    data: bytes, style: str, upper: bool
) -> None:
    text = spaced(data.hex(), style, upper)
    assume(not re.search(r"[0-9]{13}", data.hex()))
    assert redact_hex_pans(text) == text


@BOUNDED
@given(st.text(max_size=200))
def test_redaction_only_ever_replaces_characters_with_stars(text: str) -> None:
    out = redact_hex_pans(text)
    assert len(out) == len(text)
    assert all(a == b or b == "*" for a, b in zip(text, out, strict=True))


@BOUNDED
@given(pans())
def test_a_luhn_invalid_neighbour_of_a_pan_is_not_masked(pan: str) -> None:
    wrong = pan[:-1] + str((int(pan[-1]) + 1) % 10)
    assert not luhn_valid(wrong)
    value = wrong + ("F" if len(wrong) % 2 else "")
    tlv = f"5A{len(value) // 2:02X}{value}"
    assert redact_hex_pans(tlv) == tlv
