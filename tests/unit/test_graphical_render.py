"""Rendering a card face with Pillow and spooling it (services/graphical/render.py, printer.py)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from PIL import Image

from services.graphical.render import FaceRenderer, RenderError, background
from services.graphical.service import Background, FaceData, default_design
from services.graphical.settings import DEJAVU_SANS

FACE = FaceData("Jane Public", "411111******1111", "2812")


def _image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png))


def test_face_is_a_png_of_1011_by_638_at_300_dpi() -> None:
    png = FaceRenderer(DEJAVU_SANS).render(default_design("Acme"), FACE)
    image = _image(png)
    assert image.format == "PNG"
    assert image.size == (1011, 638)
    assert tuple(round(v) for v in image.info["dpi"]) == (300, 300)


def test_rendering_is_deterministic_so_a_reprint_has_the_same_digest() -> None:
    renderer = FaceRenderer(DEJAVU_SANS)
    assert renderer.render(default_design("Acme"), FACE) == renderer.render(
        default_design("Acme"), FACE
    )


def test_missing_font_falls_back_to_pillows_font_with_a_warning(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.WARNING):
        png = FaceRenderer(tmp_path / "no-such-font.ttf").render(default_design("Acme"), FACE)
    assert _image(png).size == (1011, 638)
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
