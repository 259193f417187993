"""Print QA: what came out of the card printer against the face graphical rendered.

The card printer (an IPP printer, deploy/local/printers.sh) keeps, per job named
`card-<card id>`, the document it received (`<job>-card-<id>.jpg`, graphical's JPEG face; `.png`
for a PNG one) and its output (`<job>-card-<id>.prn`, in a real line an inspection camera's
capture). The document must be
the render card.printed announced (its sha256); the output must look like it: compared pixel
by pixel, not byte by byte, so a re-encoded but identical image passes while a wrong name or
photo fails. Two documents for one card mean the card was printed twice.

The document is the card's face with the cardholder's name and CVV2 on it, so the spool keeps
it no longer than print QA needs it (a real printer keeps nothing once printed):
`discard_prints` deletes a card's document and output once its QA verdict is recorded
(checker.py), or once graphical spoiled it before QA (handlers.py); at start QA deletes what is
left of cards it has already decided (`spooled_cards`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from PIL import Image, ImageChops, UnidentifiedImageError

CHECK = "print-image"
# ippeveprinter's names: <IPP job id>-<job name>.<ext>, the job named card-<card id>; the
# extension is the document's format (jpg for image/jpeg, png for image/png), prn the output.
DOCUMENT_EXTENSIONS = (".jpg", ".png")
OUTPUT_EXTENSION = ".prn"
_SPOOLED = re.compile(
    r"\d+-card-([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})"
    + "(?:"
    + "|".join(re.escape(e) for e in (*DOCUMENT_EXTENSIONS, OUTPUT_EXTENSION))
    + ")"
)


@dataclass(frozen=True)
class PrintTolerance:
    """A pixel differs when one channel differs by more than `pixel`; the print fails when
    more than `overall` of all pixels differ, or `tile` of the pixels of any 32 x 32 tile (a
    name is a small part of the face, but dense where it is)."""

    pixel: int = 48
    overall: float = 0.002
    tile: float = 0.04
    tile_px: int = 32


def printed_files(spool: Path, card_id: UUID) -> tuple[list[Path], list[Path]]:
    """The documents the printer received for the card, and its outputs: one pass over the
    spool (which holds every job the printer kept), plain suffix tests rather than two glob
    patterns matched against every name."""
    stem = f"-card-{card_id}"
    documents: list[Path] = []
    outputs: list[Path] = []
    with os.scandir(spool) as entries:
        for entry in entries:
            name, extension = os.path.splitext(entry.name)
            if not name.endswith(stem):
                continue
            if extension in DOCUMENT_EXTENSIONS:
                documents.append(Path(entry.path))
            elif extension == OUTPUT_EXTENSION:
                outputs.append(Path(entry.path))
    return sorted(documents), sorted(outputs)


def compare_prints(
    expected: bytes, printed: bytes, tolerance: PrintTolerance = PrintTolerance()
) -> str | None:
    """None when the printed image looks like the expected one, else why not."""
    try:
        want = Image.open(io.BytesIO(expected)).convert("RGB")
        got = Image.open(io.BytesIO(printed)).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        return f"{CHECK}: the printed output is not a readable image ({exc.__class__.__name__})"
    if want.size != got.size:
        return f"{CHECK}: the printed face is {got.size[0]}x{got.size[1]}, not {want.size}"
    diff = ImageChops.difference(want, got)
    red, green, blue = diff.split()
    worst = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    changed = worst.point(lambda v: 255 if v > tolerance.pixel else 0)
    histogram = changed.histogram()
    share = histogram[255] / (want.size[0] * want.size[1])
    # Each tile's share of changed pixels: the box-filtered mask, one pixel per tile.
    tiles = changed.reduce(tolerance.tile_px)
    _, brightest = tiles.getextrema()
    worst_tile = float(brightest) / 255  # type: ignore[arg-type]
    if share > tolerance.overall or worst_tile > tolerance.tile:
        box = changed.getbbox()
        return (
            f"{CHECK}: the printed face differs from the render ({share:.2%} of pixels,"
            f" {worst_tile:.0%} of the worst tile, around {box})"
        )
    return None


def print_image_problem(
    spool: Path, card_id: UUID, expected_sha256: str, tolerance: PrintTolerance = PrintTolerance()
) -> str | None:
    """None when the card was printed once, from the announced render, and looks like it."""
    documents, outputs = printed_files(spool, card_id)
    if not documents:
        return f"{CHECK}: the printer holds no job for this card"
    if len(documents) > 1:
        return f"{CHECK}: the card was printed {len(documents)} times"
    expected = documents[0].read_bytes()
    if hashlib.sha256(expected).hexdigest() != expected_sha256.lower():
        return f"{CHECK}: the printed document is not the render card.printed announced"
    if not outputs:
        return f"{CHECK}: the printer produced no output for this card"
    printed = outputs[-1].read_bytes()
    if printed == expected:
        return None  # the same bytes decode to the same pixels: nothing to compare
    return compare_prints(expected, printed, tolerance)


def discard_prints(spool: Path, card_id: UUID) -> int:
    """Delete the card's documents and outputs from the printer's spool; how many there were."""
    if not spool.is_dir():
        return 0
    documents, outputs = printed_files(spool, card_id)
    for path in documents + outputs:
        path.unlink(missing_ok=True)
    return len(documents) + len(outputs)


def spooled_cards(spool: Path) -> set[UUID]:
    """The cards the printer's spool still holds a document or an output of."""
    if not spool.is_dir():
        return set()
    found = (_SPOOLED.fullmatch(path.name) for path in spool.iterdir())
    return {UUID(match.group(1)) for match in found if match is not None}
