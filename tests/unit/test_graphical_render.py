"""Rendering a card face with Pillow (services/graphical/render.py): layout, fonts, photo."""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from services.graphical.render import FaceRenderer, RenderError, background
from services.graphical.service import (
    Background,
    CardDesign,
    FaceData,
    PhotoBox,
    TextField,
    default_design,
)
from services.graphical.settings import DEJAVU_SANS
from services.qa.print_check import compare_prints

FACE = FaceData("Jane Public", "411111******1111", "2812")


def _image(face: bytes) -> Image.Image:
    return Image.open(io.BytesIO(face))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_face_is_a_jpeg_of_1011_by_638_at_300_dpi() -> None:
    face = FaceRenderer(DEJAVU_SANS).render(default_design("Acme"), FACE)
    image = _image(face)
    assert image.format == "JPEG"
    assert image.size == (1011, 638)
    assert tuple(round(v) for v in image.info["dpi"]) == (300, 300)


def test_the_jpeg_face_passes_print_qa_against_its_own_pixels_and_a_wrong_name_does_not() -> None:
    """JPEG is lossy: at the quality graphical saves, the face is within print QA's tolerance of
    the lossless drawing, while a face with one letter of the name changed is not."""
    renderer = FaceRenderer(DEJAVU_SANS)
    design = default_design("Acme")
    face = renderer.render(design, FACE)
    assert compare_prints(_png(renderer.draw(design, FACE)), face) is None
    other = replace(FACE, cardholder_name=FACE.cardholder_name[:-1] + "X")
    problem = compare_prints(face, renderer.render(design, other))
    assert problem is not None
    assert "differs from the render" in problem


def test_rendering_is_deterministic_so_a_reprint_has_the_same_digest() -> None:
    renderer = FaceRenderer(DEJAVU_SANS)
    assert renderer.render(default_design("Acme"), FACE) == renderer.render(
        default_design("Acme"), FACE
    )


def test_missing_font_falls_back_to_pillows_font_with_a_warning(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.WARNING):
        face = FaceRenderer(tmp_path / "no-such-font.ttf").render(default_design("Acme"), FACE)
    assert _image(face).size == (1011, 638)
    assert any("falling back" in record.getMessage() for record in caplog.records)


def test_gradient_runs_from_colour_to_gradient_to() -> None:
    vertical = background(Background(colour="#000000", gradient_to="#ffffff"))
    assert vertical.getpixel((500, 0)) == (0, 0, 0)
    assert vertical.getpixel((500, 637)) == (255, 255, 255)
    horizontal = background(
        Background(colour="#000000", gradient_to="#ffffff", direction="horizontal")
    )
    assert horizontal.getpixel((0, 300)) == (0, 0, 0)
    assert horizontal.getpixel((1010, 300)) == (255, 255, 255)


def test_a_face_that_cannot_be_printed_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="not masked"):
        FaceRenderer(DEJAVU_SANS).render(
            default_design("Acme"), FaceData("A", "4111111111111111", "2812")
        )


def photo(colour: str, size: tuple[int, int] = (300, 400), kind: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=kind)
    return out.getvalue()


WITH_PHOTO = default_design("Acme").model_copy(
    update={"photo": PhotoBox(x=780, y=40, width=180, height=240)}
)


def test_the_photo_fills_its_box_and_a_missing_or_bad_photo_is_a_render_error() -> None:
    renderer = FaceRenderer(DEJAVU_SANS)
    face = FaceData("JANE Q PUBLIC", "411111******1111", "2812", photo("#d01010", (600, 400)))
    image = renderer.draw(WITH_PHOTO, face).convert("RGB")  # its pixels, before JPEG
    assert image.getpixel((780, 40)) == (0xD0, 0x10, 0x10)  # centre-cropped to fill the box
    assert image.getpixel((959, 279)) == (0xD0, 0x10, 0x10)
    assert image.getpixel((770, 40)) != (0xD0, 0x10, 0x10)
    jpeg = FaceData("JANE Q PUBLIC", "411111******1111", "2812", photo("#10d010", kind="JPEG"))
    renderer.render(WITH_PHOTO, jpeg)
    with pytest.raises(RenderError, match="has no photo"):
        renderer.render(WITH_PHOTO, FaceData("A", "411111******1111", "2812"))
    with pytest.raises(RenderError, match="not a readable image"):
        renderer.render(WITH_PHOTO, FaceData("A", "411111******1111", "2812", b"not a photo"))
    gif = FaceData("A", "411111******1111", "2812", photo("#000", kind="GIF"))
    with pytest.raises(RenderError, match="not PNG or JPEG"):
        renderer.render(WITH_PHOTO, gif)


def test_a_photo_box_must_lie_on_the_card() -> None:
    with pytest.raises(ValidationError, match="runs off the card"):
        PhotoBox(x=900, y=40, width=180, height=240)


def test_the_cvv2_is_drawn_only_where_a_design_has_a_cvv2_field() -> None:
    renderer = FaceRenderer(DEJAVU_SANS)
    with_field = CardDesign(
        design_id="back",
        issuer_name="Acme",
        background=Background(colour="#000000"),
        fields=(TextField(kind="cvv2", x=800, y=300, font_size=40),),
    )
    face = FaceData("Jane Public", "411111******1111", "2812", cvv2="042")
    drawn = _image(renderer.render(with_field, face)).convert("L")
    blank = _image(renderer.render(with_field, FACE)).convert("L")
    assert blank.getbbox() is None  # all black: no CVV2, nothing drawn
    inked = drawn.getbbox()
    assert inked is not None
    assert inked[0] >= 800
    assert inked[1] >= 300  # drawn at the field's place only
    assert renderer.render(default_design("Acme"), face) == renderer.render(
        default_design("Acme"), FACE
    )
