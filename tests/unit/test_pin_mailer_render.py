"""The PIN mailer's image: grayscale (its printer is monochrome), the PIN drawn in the sealed
panel, and the fonts opened once per size for every mailer after the first."""

from __future__ import annotations

import io

from PIL import Image, ImageChops

from services.keymgmt.pin_mailer.service import FONT, MAILER_SIZE, MailerText, render_pin_mailer
from shared.fonts import truetype

MAILER = MailerText("Issuer Bank", "Jane Doe", ("1 Main St", "75001 Paris", "FR"), "1234")
PANEL = (110, 540, 600, 670)  # where the digits are drawn


def _image(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_the_mailer_is_a_grayscale_png_of_a5_at_150_dpi() -> None:
    image = _image(render_pin_mailer(MAILER, bytearray([4, 3, 2, 1])))
    assert (image.format, image.mode, image.size) == ("PNG", "P", MAILER_SIZE)
    assert round(image.info["dpi"][0]) == 150
    palette = image.getpalette()
    assert palette is not None
    used = {value for value, count in enumerate(image.histogram()) if count}
    # every colour used is a grey: the letter prints the same on a monochrome printer
    assert all(palette[3 * i] == palette[3 * i + 1] == palette[3 * i + 2] for i in used)
    assert len(used) > 2  # anti-aliased text, the tinted PIN panel: greys, not black and white


def test_two_pins_differ_only_inside_the_panel() -> None:
    one = _image(render_pin_mailer(MAILER, bytearray([1, 2, 3, 4])))
    other = _image(render_pin_mailer(MAILER, bytearray([9, 8, 7, 6])))
    box = ImageChops.difference(one, other).getbbox()
    assert box is not None
    assert box[0] >= PANEL[0]
    assert box[1] >= PANEL[1]
    assert box[2] <= PANEL[2]
    assert box[3] <= PANEL[3]


def test_a_font_is_opened_once_per_size() -> None:
    truetype.cache_clear()
    render_pin_mailer(MAILER, bytearray([1, 2, 3, 4]))
    opened = truetype.cache_info().misses
    render_pin_mailer(MAILER, bytearray([5, 6, 7, 8]))
    assert truetype.cache_info().misses == opened
    assert truetype(FONT, 24) is truetype(FONT, 24)
    assert truetype("/nonexistent/font.ttf", 24) is None
