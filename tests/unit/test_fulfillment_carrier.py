"""Carrier letters: Code 128 against an independent encoder (python-barcode), and the PDF
letter read back by rendering it (PDFium) and decoding the barcode from the pixels."""

from __future__ import annotations

import random
import string
import uuid

import pytest
from barcode.codex import Code128  # type: ignore[import-untyped]

from services.fulfillment.barcode import BarcodeError, decode_row, encode_modules
from services.fulfillment.carrier import (
    CarrierLetter,
    barcode_text,
    parse_barcode,
    rasterise,
    render_carrier,
    scan_carrier,
)
from services.fulfillment.handlers import carrier_problem

# Texts without runs of 4+ digits, where python-barcode also stays in code set B.
LETTERS = string.ascii_letters + string.punctuation + " "


def modules_as_bits(widths: list[int]) -> str:
    return "".join(("1" if n % 2 == 0 else "0") * w for n, w in enumerate(widths))


def test_code128_b_matches_an_independent_encoder() -> None:
    rng = random.Random(128)
    texts = ["Hello, World!", "A1B2C3", *("".join(rng.choices(LETTERS, k=20)) for _ in range(200))]
    for text in texts:
        assert modules_as_bits(encode_modules(text)) == Code128(text).build()[0], text


def test_a_scanline_decodes_at_any_module_width_and_a_damaged_one_does_not() -> None:
    text = "4D21A0B3C4F5" + uuid.uuid4().hex.upper()
    for px in (2, 3, 5):
        row = [255] * 10 * px  # the quiet zone: 10 modules
        for n, width in enumerate(encode_modules(text)):
            row += [0 if n % 2 == 0 else 255] * (width * px)
        row += [255] * 10 * px
        assert decode_row(row) == text
    damaged = row[:200] + [0] * 15 + row[215:]
    with pytest.raises(BarcodeError):
        decode_row(damaged)
    with pytest.raises(BarcodeError):
        encode_modules("PIN é")


def letter(card_id: uuid.UUID, chip: str = "4D21A0B3C4F5") -> CarrierLetter:
    address = ("12 St James's Square", "SW1Y 4JH London", "GB")
    return CarrierLetter(card_id, chip, "CR-1234-ABCD-0000-FFFF", "ADA LOVELACE", address, "Acme")


def test_the_carrier_pdf_is_scanned_back_to_its_card_and_chip() -> None:
    card_id = uuid.uuid4()
    pdf = render_carrier(letter(card_id))
    assert pdf.startswith(b"%PDF-1.4")
    assert pdf.rstrip().endswith(b"%%EOF")
    scanned = scan_carrier(pdf)
    assert scanned == barcode_text(card_id, "4D21A0B3C4F5")
    assert parse_barcode(scanned) == ("4D21A0B3C4F5", card_id)
    page = rasterise(pdf, dpi=72)
    assert abs(page.size[0] - 595) <= 1  # A4 in points
    assert abs(page.size[1] - 842) <= 1


def test_an_unreadable_carrier_is_an_error_not_a_match() -> None:
    with pytest.raises(BarcodeError, match="not a readable PDF"):
        scan_carrier(b"%PDF-1.4 torn in half")
    with pytest.raises(BarcodeError):
        parse_barcode("SHORT")


def test_the_match_check_names_what_does_not_match() -> None:
    card_id = uuid.uuid4()
    mine = letter(card_id)
    scanned, problem = carrier_problem(mine, render_carrier(mine))
    assert (scanned, problem) == (barcode_text(card_id, "4D21A0B3C4F5"), None)
    other_chip = letter(card_id, chip="0000DEADBEEF")
    _, problem = carrier_problem(mine, render_carrier(other_chip))
    assert problem == "carrier mismatch: the letter names chip 0000DEADBEEF, not 4D21A0B3C4F5"
    someone_else = uuid.uuid4()
    _, problem = carrier_problem(mine, render_carrier(letter(someone_else)))
    assert problem == f"carrier mismatch: the letter fed is for card {someone_else}"
    _, problem = carrier_problem(mine, b"%PDF-1.4 smudged")
    assert problem is not None
    assert problem.startswith("carrier unreadable")
