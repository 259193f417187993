"""Print QA: the printer's output against the render, by pixels, not bytes
(services/qa/print_check.py). Faces are rendered by the graphical service's own renderer."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

from PIL import Image

from services.graphical.render import FaceRenderer
from services.graphical.service import FaceData, PhotoBox, default_design
from services.graphical.settings import DEJAVU_SANS
from services.qa.print_check import (
    compare_prints,
    discard_prints,
    print_image_problem,
    spooled_cards,
)

RENDERER = FaceRenderer(DEJAVU_SANS)
DESIGN = default_design("Acme Bank")


def face(name: str, expiry: str = "2812") -> bytes:
    return RENDERER.render(DESIGN, FaceData(name, "411111******1111", expiry))


def reencoded(png: bytes) -> bytes:
    """The same pixels, stored differently (no compression, no dpi): other bytes."""
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def test_a_byte_different_but_identical_print_passes() -> None:
    expected = face("JANE Q PUBLIC")
    printed = reencoded(expected)
    assert printed != expected
    assert compare_prints(expected, printed) is None


def test_a_print_with_light_noise_passes() -> None:
    expected = face("JANE Q PUBLIC")
    image = Image.open(io.BytesIO(expected)).convert("RGB")
    noisy = Image.eval(image, lambda v: min(255, v + 12))  # a slightly lighter print
    out = io.BytesIO()
    noisy.save(out, format="PNG")
    assert compare_prints(expected, out.getvalue()) is None


def test_a_wrong_name_fails() -> None:
    problem = compare_prints(face("JANE Q PUBLIC"), face("JANE Q PUBLIK"))
    assert problem is not None
    assert problem.startswith("print-image: the printed face differs from the render")


def test_a_wrong_expiry_fails() -> None:
    assert compare_prints(face("JANE Q PUBLIC"), face("JANE Q PUBLIC", "2911")) is not None


def portrait(colour: str) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (300, 400), "#e0e0e0")
    image.paste(Image.new("RGB", (160, 220), colour), (70, 90))  # a face, as far as QA cares
    image.save(out, format="JPEG")
    return out.getvalue()


def test_a_wrong_photo_fails_and_the_right_one_passes() -> None:
    design = DESIGN.model_copy(update={"photo": PhotoBox(x=780, y=40, width=180, height=240)})

    def with_photo(picture: bytes) -> bytes:
        return RENDERER.render(
            design, FaceData("JANE Q PUBLIC", "411111******1111", "2812", picture)
        )

    expected = with_photo(portrait("#a0522d"))
    assert compare_prints(expected, reencoded(expected)) is None
    problem = compare_prints(expected, with_photo(portrait("#2d52a0")))  # someone else
    assert problem is not None
    assert "around (" in problem


def test_unreadable_or_other_size_output_fails() -> None:
    expected = face("JANE Q PUBLIC")
    assert "not a readable image" in str(compare_prints(expected, b"printer noise"))
    small = io.BytesIO()
    Image.new("RGB", (100, 60)).save(small, format="PNG")
    assert "is 100x60" in str(compare_prints(expected, small.getvalue()))


def test_spool_checks_missing_doubled_and_foreign_documents(tmp_path: Path) -> None:
    card = uuid.uuid4()
    expected = face("JANE Q PUBLIC")
    digest = hashlib.sha256(expected).hexdigest()
    assert print_image_problem(tmp_path, card, digest) == (
        "print-image: the printer holds no job for this card"
    )
    (tmp_path / f"7-card-{card}.jpg").write_bytes(expected)  # the JPEG graphical sends
    assert print_image_problem(tmp_path, card, digest) == (
        "print-image: the printer produced no output for this card"
    )
    (tmp_path / f"7-card-{card}.prn").write_bytes(reencoded(expected))
    assert print_image_problem(tmp_path, card, digest) is None
    assert print_image_problem(tmp_path, card, digest.upper()) is None
    assert print_image_problem(tmp_path, card, "00" * 32) == (
        "print-image: the printed document is not the render card.printed announced"
    )
    (tmp_path / f"9-card-{card}.png").write_bytes(expected)  # a second job, in any format
    assert print_image_problem(tmp_path, card, digest) == (
        "print-image: the card was printed 2 times"
    )


def test_a_cards_prints_leave_the_spool_and_nothing_else_does(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    assert spooled_cards(spool) == set()  # no spool yet: nothing kept
    spool.mkdir()
    card, other = uuid.uuid4(), uuid.uuid4()
    for name in (f"1-card-{card}.jpg", f"1-card-{card}.prn", f"2-card-{card}.png"):
        (spool / name).write_bytes(b"face")
    (spool / f"1-card-{card}.jpg.tmp").write_bytes(b"being written")  # not a document yet
    (spool / f"3-card-{other}.jpg").write_bytes(b"another face")
    (spool / "4-stack-test-1234.png").write_bytes(b"not a card")
    assert spooled_cards(spool) == {card, other}
    assert discard_prints(spool, card) == 3
    assert sorted(p.name for p in spool.iterdir()) == [
        f"1-card-{card}.jpg.tmp",
        f"3-card-{other}.jpg",
        "4-stack-test-1234.png",
    ]
    assert discard_prints(spool, card) == 0
    assert spooled_cards(spool) == {other}
