"""TrueType fonts opened once per (file, size) and kept: opening one parses the file with
FreeType, which took a third of a PIN mailer's rendering time when done per render. Pillow's
font objects are used under the GIL (its FreeType calls do not release it), so threads that
render at once can share them. The cache is bounded: designs use a handful of sizes."""

from __future__ import annotations

from functools import lru_cache

from PIL import ImageFont


@lru_cache(maxsize=64)
def truetype(path: str, size: int) -> ImageFont.FreeTypeFont | None:
    """The font, or None when the file is missing or unreadable (the caller falls back)."""
    try:
        return ImageFont.truetype(path, size)
    except OSError:
        return None
