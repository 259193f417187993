"""The scanner's run splitting (services/fulfillment/barcode.py, done in C by bytes.translate and
a regular expression) against its definition, one pixel at a time, on random scanlines."""

from __future__ import annotations

import random

from services.fulfillment.barcode import _runs


def runs_by_definition(row: list[int], threshold: int) -> list[tuple[bool, int]]:
    runs: list[tuple[bool, int]] = []
    for pixel in row:
        dark = pixel < threshold
        if runs and runs[-1][0] == dark:
            runs[-1] = (dark, runs[-1][1] + 1)
        else:
            runs.append((dark, 1))
    return runs


def test_runs_match_their_definition_on_random_scanlines() -> None:
    rng = random.Random(17)
    for _ in range(500):
        levels = rng.choice(((0, 255), (127, 128), tuple(range(256))))
        row = [rng.choice(levels) for _ in range(rng.randint(0, 400))]
        threshold = rng.choice((1, 128, 255))
        assert _runs(row, threshold) == runs_by_definition(row, threshold)
