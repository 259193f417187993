"""Card-face layout and PAN masking in designs (services/graphical/service.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.graphical.service import (
    CARD_HEIGHT_PX,
    CARD_WIDTH_PX,
    Background,
    CardDesign,
    ClearPanRefused,
    FaceData,
    TextField,
    check_masked_pan,
    default_design,
    expiry_text,
    lay_out_face,
    name_text,
    pan_text,
)

FACE = FaceData("  jane   q. public ", "411111******1111", "2812")


def test_id1_face_at_300_dpi_is_1011_by_638() -> None:
    assert (CARD_WIDTH_PX, CARD_HEIGHT_PX) == (1011, 638)


def test_default_design_places_name_masked_pan_expiry_and_issuer() -> None:
    texts = [p.text for p in lay_out_face(default_design("Acme Bank"), FACE)]
    assert "Acme Bank" in texts
    assert "JANE Q. PUBLIC" in texts
    assert "4111 11** **** 1111" in texts
    assert "12/28" in texts
    assert "VALID THRU" in texts


def test_every_default_field_lies_on_the_card() -> None:
    for placed in lay_out_face(default_design("x"), FACE):
        assert 0 <= placed.x < CARD_WIDTH_PX
        assert 0 <= placed.y < CARD_HEIGHT_PX


def test_pan_is_masked_by_default_and_a_design_may_show_only_the_last_four() -> None:
    assert TextField(kind="pan", x=0, y=0, font_size=20).pan_display == "masked"
    assert pan_text("411111******1111", "masked") == "4111 11** **** 1111"
    assert pan_text("411111******1111", "last4") == "**** **** **** 1111"
    assert pan_text("3782 82** ***1 005", "last4") == "**** **** ***1 005"


@pytest.mark.parametrize(
    "value",
    [
        "4111111111111111",  # clear
        "41111111****1111",  # more than the first six
        "411111**1***1111",  # a digit in the middle
        "411111******11111111",  # too long
        "4111-11**-****-1111",  # not digits and '*'
    ],
)
def test_anything_but_a_masked_pan_is_refused(value: str) -> None:
    with pytest.raises(ClearPanRefused):
        check_masked_pan(value)


def test_a_face_with_a_clear_pan_cannot_be_laid_out() -> None:
    with pytest.raises(ClearPanRefused):
        lay_out_face(default_design("x"), FaceData("A", "4111111111111111", "2812"))


def test_expiry_is_printed_mm_yy_from_yymm() -> None:
    assert expiry_text("2701") == "01/27"
    for bad in ("2713", "2700", "27-1", "12345"):
        with pytest.raises(ValueError, match="YYMM"):
            expiry_text(bad)


def test_name_is_upper_case_and_at_most_26_characters() -> None:
    assert name_text("Maximilian Alexander von Hohenzollern") == "MAXIMILIAN ALEXANDER VON H"
    assert len(name_text("a" * 40)) == 26
    with pytest.raises(ValueError, match="empty"):
        name_text("   ")


def test_design_fields_must_lie_on_the_card_and_labels_need_text() -> None:
    with pytest.raises(ValidationError):
        TextField(kind="pan", x=CARD_WIDTH_PX, y=0, font_size=20)
    with pytest.raises(ValidationError):
        TextField(kind="label", x=0, y=0, font_size=20)
    with pytest.raises(ValidationError):
        Background(colour="red")


def test_field_colour_overrides_the_design_text_colour() -> None:
    design = CardDesign(
        design_id="d1",
        issuer_name="Bank",
        background=Background(colour="#000000"),
        text_colour="#eeeeee",
        fields=(
            TextField(kind="issuer_name", x=10, y=10, font_size=30),
            TextField(kind="expiry", x=10, y=90, font_size=30, colour="#ff0000"),
        ),
    )
    placed = lay_out_face(design, FACE)
    assert [p.colour for p in placed] == ["#eeeeee", "#ff0000"]


def test_design_survives_a_json_round_trip() -> None:
    design = default_design("Acme")
    assert CardDesign.model_validate_json(design.model_dump_json()) == design


CVV2_DESIGN = CardDesign(
    design_id="back",
    issuer_name="Acme",
    background=Background(colour="#000000"),
    fields=(
        TextField(kind="expiry", x=60, y=60, font_size=30),
        TextField(kind="cvv2", x=800, y=60, font_size=30),
    ),
)


def test_a_cvv2_field_prints_keymgmts_cvv2_and_nothing_without_one() -> None:
    face = FaceData("JANE", "411111******1111", "2812", cvv2="042")
    placed = lay_out_face(CVV2_DESIGN, face)
    assert [(p.text, p.x, p.y) for p in placed] == [("12/28", 60, 60), ("042", 800, 60)]
    without = lay_out_face(CVV2_DESIGN, FaceData("JANE", "411111******1111", "2812"))
    assert [p.text for p in without] == ["12/28"]  # a product without a CVK pair
    assert "042" not in [p.text for p in lay_out_face(default_design("Acme"), face)]
    assert "042" not in repr(face)


@pytest.mark.parametrize("bad", ["42", "0420", "04a", ""])
def test_a_cvv2_that_is_not_three_digits_is_refused_without_naming_it(bad: str) -> None:
    face = FaceData("JANE", "411111******1111", "2812", cvv2=bad)
    with pytest.raises(ValueError, match="CVV2 from keymgmt is not 3 digits") as refused:
        lay_out_face(CVV2_DESIGN, face)
    assert not bad or bad not in str(refused.value)
