"""Card-face rendering with Pillow: a laid-out face to JPEG bytes at 300 dpi."""

from __future__ import annotations

import io
import logging
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from services.graphical.service import (
    CARD_HEIGHT_PX,
    CARD_WIDTH_PX,
    DPI,
    Background,
    CardDesign,
    FaceData,
    PhotoBox,
    lay_out_face,
)
from shared.fonts import truetype

log = logging.getLogger(__name__)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
SAFE_MARGIN_PX = 24  # about 2 mm from the edge, where cutting and printing tolerances bite
MIN_FONT_PX = 12
# The face goes to the printer as JPEG, a format every IPP Everywhere colour printer takes
# (PWG 5100.14): ~1.8 ms to encode a face against ~11 ms for PNG even at zlib level 1, where
# PNG encoding was a third of graphical's CPU at 5 cards/s (docs/architecture.md). At quality
# 92 with full-resolution luminance, the 12-pixel text stays sharp; print QA compares
# pixels, within a tolerance, not bytes.
FACE_JPEG_QUALITY = 92
FACE_FORMAT = "image/jpeg"


class RenderError(Exception):
    """The face cannot be rendered for this card: the card is spoiled, not retried."""


class FaceRenderer:
    def __init__(self, font_path: Path) -> None:
        self._font_path = font_path
        self._warned = False

    def render(self, design: CardDesign, data: FaceData) -> bytes:
        """The face as the printer takes it (FACE_FORMAT)."""
        image = self.draw(design, data)
        out = io.BytesIO()
        try:
            image.save(out, format="JPEG", dpi=(DPI, DPI), quality=FACE_JPEG_QUALITY)
        except (ValueError, OSError) as exc:
            raise RenderError(f"{exc.__class__.__name__}: {exc}") from exc
        return out.getvalue()

    def draw(self, design: CardDesign, data: FaceData) -> Image.Image:
        """The face's pixels, before encoding."""
        try:
            placed = lay_out_face(design, data)
            image = _background(design.background).copy()
            if design.photo is not None:
                paste_photo(image, design.photo, data.photo)
            draw = ImageDraw.Draw(image)
            for item in placed:
                font = self._fitting_font(item.text, item.font_size, CARD_WIDTH_PX - item.x)
                draw.text((item.x, item.y), item.text, font=font, fill=item.colour)
        except (ValueError, OSError, TypeError) as exc:
            raise RenderError(f"{exc.__class__.__name__}: {exc}") from exc
        return image

    def _fitting_font(self, text: str, size: int, room_px: int) -> Font:
        """The design's size, shrunk until the text ends inside the card's safe margin."""
        font = self._font(size)
        while size > MIN_FONT_PX and font.getlength(text) > room_px - SAFE_MARGIN_PX:
            size -= 2
            font = self._font(size)
        return font

    def _font(self, size: int) -> Font:
        font = truetype(str(self._font_path), size)
        if font is not None:
            return font
        if not self._warned:
            log.warning(
                "TrueType font missing; falling back to Pillow's default font",
                extra={"font": str(self._font_path), "hint": "apt-get install fonts-dejavu-core"},
            )
            self._warned = True
        return ImageFont.load_default(size)


MAX_PHOTO_BYTES = 2_000_000
PHOTO_FORMATS = ("PNG", "JPEG")


def check_photo(photo: bytes) -> Image.Image:
    """The photo as an RGB image; ValueError naming what is wrong with it."""
    if len(photo) > MAX_PHOTO_BYTES:
        raise ValueError(f"the photo is over {MAX_PHOTO_BYTES} bytes")
    try:
        image = Image.open(io.BytesIO(photo))
        if image.format not in PHOTO_FORMATS:
            raise ValueError(f"the photo is {image.format}, not PNG or JPEG")
        if image.width * image.height > 16_000_000:
            raise ValueError("the photo has over 16 million pixels")
        return image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the photo is not a readable image ({exc.__class__.__name__})") from exc


def paste_photo(face: Image.Image, box: PhotoBox, photo: bytes | None) -> None:
    if photo is None:
        raise ValueError("the design has a photo box and the card has no photo")
    fitted = ImageOps.fit(check_photo(photo), (box.width, box.height), Image.Resampling.LANCZOS)
    face.paste(fitted, (box.x, box.y))


@lru_cache(maxsize=32)
def _background(spec: Background) -> Image.Image:
    """One design's background, drawn once: every card of the design copies it."""
    return background(spec)


def background(spec: Background) -> Image.Image:
    """A solid colour, or a linear gradient from `colour` to `gradient_to`."""
    size = (CARD_WIDTH_PX, CARD_HEIGHT_PX)
    start = Image.new("RGB", size, spec.colour)
    if spec.gradient_to is None:
        return start
    end = Image.new("RGB", size, spec.gradient_to)
    mask = Image.linear_gradient("L")  # 256 x 256, black at the top, white at the bottom
    if spec.direction == "horizontal":
        mask = mask.rotate(90)  # the top (start colour) turns to the left
    return Image.composite(end, start, mask.resize(size))
