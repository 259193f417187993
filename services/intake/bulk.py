"""Bulk order files (CSV or NDJSON, one card per line), read line by line in constant memory.

A file is read twice without ever being held whole: the first pass validates each line as it
arrives and stages the good cards, sealed in chunks under a key that exists only in this
request's memory (AES-256-GCM), in an anonymous temporary file; only when every line is good
does the second pass read the chunks back, hand their PANs to the vault and write the cards.
A refused file therefore leaves nothing anywhere, and no clear PAN ever touches the disk.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any, Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from services.intake.schemas import CardRequest, LineError
from services.intake.service import validate_card

BulkFormat = Literal["csv", "ndjson"]
MEDIA_TYPES: dict[str, BulkFormat] = {
    "text/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
}
CSV_REQUIRED = ("pan", "expiry", "cardholder_name", "address_line1", "postcode", "city", "country")
CSV_OPTIONAL = ("psn", "address_line2", "address_line3", "address_line4")
CSV_COLUMNS = CSV_REQUIRED + CSV_OPTIONAL


# A card is an object holding an address object holding a list of lines: three levels. The JSON
# decoder recurses per level, so a line of 4,000 '[' would raise RecursionError; deeper lines are
# refused by a linear scan before decoding.
MAX_JSON_DEPTH = 8
_JSON_OPEN = frozenset("[{")
_JSON_CLOSE = frozenset("]}")


def json_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text, brackets inside strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in _JSON_OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif char in _JSON_CLOSE:
            depth -= 1
    return deepest


class BadHeader(ValueError):
    """The CSV header line is unusable; the report names line 1."""


async def numbered_lines(
    chunks: AsyncIterator[bytes], max_line: int
) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number, bytes without the line end) for every line; None for a line longer than
    `max_line`, whose bytes are skipped rather than kept."""
    number, pending, overlong = 0, bytearray(), False
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not overlong:
                pending += piece
                overlong = len(pending) > max_line
                if overlong:
                    pending.clear()
            if end < 0:
                break
            number += 1
            yield number, None if overlong else bytes(pending).rstrip(b"\r")
            pending.clear()
            overlong = False
            start = end + 1
    if pending or overlong:
        yield number + 1, None if overlong else bytes(pending).rstrip(b"\r")


def csv_header(raw: bytes) -> list[str]:
    try:
        names = [n.strip().lower() for n in next(csv.reader([raw.decode("utf-8-sig")]))]
    except (UnicodeDecodeError, StopIteration, csv.Error) as exc:
        raise BadHeader("the header is not a UTF-8 CSV line") from exc
    unknown = [n for n in names if n not in CSV_COLUMNS]
    missing = [n for n in CSV_REQUIRED if n not in names]
    if unknown or missing or len(set(names)) != len(names):
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(unknown)}")
        if len(set(names)) != len(names):
            parts.append("a column appears twice")
        raise BadHeader(f"{'; '.join(parts)}; columns are {', '.join(CSV_COLUMNS)}")
    return names


def card_fields(fmt: BulkFormat, header: list[str] | None, raw: bytes) -> tuple[Any, str | None]:
    """The line as the fields of a CardRequest, or the reason it cannot be read at all."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "is not UTF-8"
    if fmt == "ndjson":
        if json_depth(text) > MAX_JSON_DEPTH:
            return None, f"nests JSON deeper than {MAX_JSON_DEPTH} levels"
        try:
            decoded = json.loads(text)
        except ValueError:
            return None, "is not a JSON object"
        return (decoded, None) if isinstance(decoded, dict) else (None, "is not a JSON object")
    assert header is not None
    try:
        values = next(csv.reader([text]), [])
    except csv.Error:
        return None, "is not a CSV line"
    if len(values) != len(header):
        return None, f"has {len(values)} fields; the header has {len(header)}"
    row = dict(zip(header, (v.strip() for v in values), strict=True))
    lines = [row[f"address_line{i}"] for i in range(1, 5) if row.get(f"address_line{i}")]
    fields: dict[str, Any] = {
        "pan": row["pan"],
        "expiry": row["expiry"],
        "cardholder_name": row["cardholder_name"],
        "address": {
            "lines": lines,
            "postcode": row["postcode"],
            "city": row["city"],
            "country": row["country"],
        },
    }
    if row.get("psn"):
        fields["psn"] = row["psn"]
    return fields, None


def check_line(
    line: int, fmt: BulkFormat, header: list[str] | None, raw: bytes | None, today: date
) -> tuple[CardRequest | None, list[LineError]]:
    """One line: the card, or every problem with it (never echoing a value)."""
    if raw is None:
        return None, [LineError(line=line, field="line", problem="is too long")]
    fields, unreadable = card_fields(fmt, header, raw)
    if unreadable is not None:
        return None, [LineError(line=line, field="line", problem=unreadable)]
    try:
        card = CardRequest.model_validate(fields)
    except ValidationError as exc:
        return None, [
            LineError(
                line=line,
                field=".".join(str(p) for p in err["loc"]) or "line",
                problem=err["msg"],
            )
            for err in exc.errors()
        ]
    return card, validate_card(line, card, today)


@dataclass
class Spool:
    """Validated cards staged in chunks, sealed under a key that never leaves this object."""

    directory: str | None = None
    chunks: int = 0
    _file: IO[bytes] = field(init=False)
    _key: AESGCM = field(init=False)
    # Recognises a PAN seen twice in the file (duplicates), without keeping the PAN.
    dedupe_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        self._file = tempfile.TemporaryFile(dir=self.directory)  # unlinked at once
        self._key = AESGCM(AESGCM.generate_key(bit_length=256))
        self.dedupe_key = os.urandom(32)

    def pan_digest(self, card: CardRequest) -> bytes:
        return hmac.new(self.dedupe_key, f"{card.pan}|{card.psn}".encode(), hashlib.sha256).digest()

    def write(self, cards: list[dict[str, Any]]) -> None:
        nonce = struct.pack(">4xQ", self.chunks)  # one key per request: a counter is unique
        sealed = self._key.encrypt(nonce, json.dumps(cards).encode(), None)
        self._file.write(struct.pack(">I", len(sealed)) + sealed)
        self.chunks += 1

    def read(self) -> Iterator[list[dict[str, Any]]]:
        self._file.seek(0)
        for index in range(self.chunks):
            (size,) = struct.unpack(">I", self._file.read(4))
            nonce = struct.pack(">4xQ", index)
            cards: list[dict[str, Any]] = json.loads(
                self._key.decrypt(nonce, self._file.read(size), None)
            )
            yield cards

    def close(self) -> None:
        self._file.close()


class BodyMac:
    """HMAC of a bulk submission, fed as the body streams: recognises a replay without
    keeping the file."""

    def __init__(self, secret: str, issuer_id: str, params: str) -> None:
        self._mac = hmac.new(secret.encode(), f"bulk\n{issuer_id}\n{params}\n".encode(), "sha256")
        self.size = 0

    async def tee(self, chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.size += len(chunk)
            if self.size > limit:
                raise OverflowError(f"the file is larger than {limit} bytes")
            self._mac.update(chunk)
            yield chunk

    def hexdigest(self) -> str:
        return self._mac.hexdigest()
