"""Data object lists (EMV 4.3 Book 3 §5.4) and the terminal's own data elements."""

from __future__ import annotations

from collections.abc import Mapping

Dol = list[tuple[int, int]]


def parse_dol(dol: bytes) -> Dol:
    """Tag/length pairs; ValueError if the list ends inside an entry."""
    out: Dol = []
    pos = 0
    while pos < len(dol):
        start = pos
        pos += 1
        if dol[start] & 0x1F == 0x1F:  # subsequent tag bytes, b8 set on all but the last
            while pos < len(dol) and dol[pos] & 0x80:
                pos += 1
            pos += 1
        if pos >= len(dol):
            raise ValueError(f"DOL {dol.hex().upper()} ends inside an entry")
        out.append((int.from_bytes(dol[start:pos], "big"), dol[pos]))
        pos += 1
    return out


def build_dol_data(dol: Dol, values: Mapping[int, bytes]) -> bytes:
    """Book 3 §5.4: each element at the DOL's length; an unknown one as zeros; a longer
    numeric value is cut on the left, a shorter one padded with leading zeros (n) - this
    terminal keeps its numeric elements in BCD at their Book 3 length already, so a
    mismatch only pads or truncates on the right for binary/alphanumeric data."""
    out = bytearray()
    for tag, length in dol:
        value = values.get(tag)
        if value is None:
            out += bytes(length)
        elif len(value) >= length:
            out += value[:length]
        else:
            out += value + bytes(length - len(value))
    return bytes(out)


def split_dol_data(dol: Dol, data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    for tag, length in dol:
        out[tag] = data[pos : pos + length]
        pos += length
    return out
