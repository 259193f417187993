"""Code 128 (ISO/IEC 15417), code set B: encode a text to bar/space module widths, and decode
one scanline of a raster image back to the text, as the inserter's scanner does.

A symbol is six elements (bar, space, bar, space, bar, space), 11 modules wide; the stop
pattern has seven (13 modules). The check symbol is (start value + sum of position x value)
mod 103. A quiet zone of at least 10 modules surrounds the symbol.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

# Element widths of the symbol values 0-106 (106 is the stop pattern).
PATTERNS: tuple[str, ...] = (
    "212222", "222122", "222221", "121223", "121322", "131222", "122213", "122312",
    "132212", "221213", "221312", "231212", "112232", "122132", "122231", "113222",
    "123122", "123221", "223211", "221132", "221231", "213212", "223112", "312131",
    "311222", "321122", "321221", "312212", "322112", "322211", "212123", "212321",
    "232121", "111323", "131123", "131321", "112313", "132113", "132311", "211313",
    "231113", "231311", "112133", "112331", "132131", "113123", "113321", "133121",
    "313121", "211331", "231131", "213113", "213311", "213131", "311123", "311321",
    "331121", "312113", "312311", "332111", "314111", "221411", "431111", "111224",
    "111422", "121124", "121421", "141122", "141221", "112214", "112412", "122114",
    "122411", "142112", "142211", "241211", "221114", "413111", "241112", "134111",
    "111242", "121142", "121241", "114212", "124112", "124211", "411212", "421112",
    "421211", "212141", "214121", "412121", "111143", "111341", "131141", "114113",
    "114311", "411113", "411311", "113141", "114131", "311141", "411131", "211412",
    "211214", "211232", "2331112",
)  # fmt: skip
START_B = 104
STOP = 106
QUIET_MODULES = 10
DARK_BELOW = 128  # a grey level below this is a bar
_BY_PATTERN = {pattern: value for value, pattern in enumerate(PATTERNS)}


class BarcodeError(ValueError):
    """No Code 128 symbol could be read (or the text cannot be encoded)."""


def symbol_values(text: str) -> list[int]:
    """Start B, the characters, the check symbol, stop."""
    if not text:
        raise BarcodeError("nothing to encode")
    if any(not 32 <= ord(ch) <= 126 for ch in text):
        raise BarcodeError("code set B encodes printable ASCII only")
    data = [ord(ch) - 32 for ch in text]
    check = (START_B + sum(i * v for i, v in enumerate(data, start=1))) % 103
    return [START_B, *data, check, STOP]


def encode_modules(text: str) -> list[int]:
    """Element widths in modules, bars first (bar, space, bar, ...), without quiet zones."""
    return [int(w) for value in symbol_values(text) for w in PATTERNS[value]]


_RUN = re.compile(rb"\x01+|\x00+")


@functools.lru_cache(maxsize=4)
def _dark_table(threshold: int) -> bytes:
    return bytes(1 if level < threshold else 0 for level in range(256))


def _runs(row: Sequence[int], threshold: int) -> list[tuple[bool, int]]:
    """(is_dark, length) runs of one scanline. The pixels are marked dark/light and split into
    runs by bytes.translate and a regular expression, not a Python step per pixel: the scanner
    sweeps many rows of every letter, and this is the fulfillment floor's hottest loop."""
    marks = bytes(row).translate(_dark_table(threshold))
    return [(m.group()[0] == 1, m.end() - m.start()) for m in _RUN.finditer(marks)]


def _symbol(widths: Sequence[int], module: float) -> int | None:
    pattern = "".join(str(max(1, min(4, round(w / module)))) for w in widths)
    return _BY_PATTERN.get(pattern)


def decode_row(row: Sequence[int], threshold: int = DARK_BELOW) -> str:
    """The text of the first valid Code 128 B symbol on a scanline of grey levels."""
    runs = _runs(row, threshold)
    for start in range(len(runs) - 6):
        dark, first = runs[start]
        if not dark or (start > 0 and runs[start - 1][1] < 5 * first):
            continue  # a symbol starts with a bar after a wide quiet zone
        widths = [length for _, length in runs[start : start + 6]]
        module = sum(widths) / 11
        if _symbol(widths, module) != START_B:
            continue
        text = _read_symbols(runs, start + 6, module)
        if text is not None:
            return text
    raise BarcodeError("no Code 128 symbol on this scanline")


def _read_symbols(runs: list[tuple[bool, int]], pos: int, module: float) -> str | None:
    values = [START_B]
    while pos + 6 <= len(runs):
        seven = [length for _, length in runs[pos : pos + 7]]
        if len(seven) == 7 and _symbol(seven, sum(seven) / 13) == STOP:
            data, check = values[1:-1], values[-1]
            if not data:
                return None
            if (START_B + sum(i * v for i, v in enumerate(data, start=1))) % 103 != check:
                return None
            return "".join(chr(v + 32) for v in data)
        widths = [length for _, length in runs[pos : pos + 6]]
        # Re-estimate the module from each symbol: print gain and scan skew drift along a row.
        value = _symbol(widths, sum(widths) / 11)
        if value is None or value >= START_B:
            return None
        values.append(value)
        pos += 6
    return None
