"""The IPP/1.1-2.0 message codec (RFC 8010, IPP/1.1 Encoding and Transport), bounded.

A message: version (2 bytes), operation-id or status-code (2), request-id (4), attribute groups
(a delimiter tag, then attributes: value tag, name length + name, value length + value; an
additional value repeats with an empty name), the end-of-attributes tag, then the document data.
Only what our four operations need is decoded (collections are skipped whole). The decoder
reads lengths unsigned and only moves forward, with ceilings on size, attribute count and
collection depth: a hostile printer answer ends in IppError, never in a loop (issue 16).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

IppValue = int | bool | str | bytes | tuple[int, int]

# Operations (RFC 8011 §5.2, §5.3, §5.4).
PRINT_JOB: Final = 0x0002
GET_JOB_ATTRIBUTES: Final = 0x0009
GET_JOBS: Final = 0x000A
GET_PRINTER_ATTRIBUTES: Final = 0x000B

# Delimiter tags (RFC 8010 §3.5.1).
OPERATION_GROUP: Final = 0x01
JOB_GROUP: Final = 0x02
END_OF_ATTRIBUTES: Final = 0x03
PRINTER_GROUP: Final = 0x04
UNSUPPORTED_GROUP: Final = 0x05

# Value tags (RFC 8010 §3.5.2).
INTEGER: Final = 0x21
BOOLEAN: Final = 0x22
ENUM: Final = 0x23
DATE_TIME: Final = 0x31
RANGE: Final = 0x33
BEGIN_COLLECTION: Final = 0x34
END_COLLECTION: Final = 0x37
TEXT: Final = 0x41
NAME: Final = 0x42
KEYWORD: Final = 0x44
URI: Final = 0x45
CHARSET: Final = 0x47
LANGUAGE: Final = 0x48
MIME_TYPE: Final = 0x49
MEMBER_NAME: Final = 0x4A
_STRING_TAGS = frozenset(range(0x41, 0x50))


class IppError(Exception):
    """The printer could not be reached, or answered something that is not IPP."""


@dataclass(frozen=True)
class Attribute:
    tag: int
    name: str
    values: tuple[IppValue, ...]


@dataclass(frozen=True)
class IppMessage:
    version: tuple[int, int]
    code: int  # operation-id in a request, status-code in a response
    request_id: int
    groups: tuple[tuple[int, dict[str, Attribute]], ...] = ()
    data: bytes = b""

    def group(self, tag: int) -> dict[str, Attribute]:
        return next((attrs for t, attrs in self.groups if t == tag), {})

    def all_groups(self, tag: int) -> list[dict[str, Attribute]]:
        return [attrs for t, attrs in self.groups if t == tag]


def _encode_value(tag: int, value: IppValue) -> bytes:
    if tag in (INTEGER, ENUM):
        assert isinstance(value, int)
        return struct.pack(">i", value)
    if tag == BOOLEAN:
        return b"\x01" if value else b"\x00"
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise ValueError(f"cannot encode {value!r} with value tag 0x{tag:02X}")


def encode(message: IppMessage) -> bytes:
    out = bytearray(struct.pack(">bbhi", *message.version, message.code, message.request_id))
    for group_tag, attrs in message.groups:
        out.append(group_tag)
        for attr in attrs.values():
            for n, value in enumerate(attr.values):
                name = attr.name.encode("ascii") if n == 0 else b""
                raw = _encode_value(attr.tag, value)
                out += struct.pack(">bh", attr.tag, len(name)) + name
                out += struct.pack(">h", len(raw)) + raw
    out.append(END_OF_ATTRIBUTES)
    return bytes(out) + message.data


def _decode_value(tag: int, raw: bytes) -> IppValue:
    if tag in (INTEGER, ENUM) and len(raw) == 4:
        return int(struct.unpack(">i", raw)[0])
    if tag == BOOLEAN and len(raw) == 1:
        return raw != b"\x00"
    if tag == RANGE and len(raw) == 8:
        low, high = struct.unpack(">ii", raw)
        return (int(low), int(high))
    if tag in _STRING_TAGS:
        return raw.decode("utf-8", errors="replace")
    return raw


# Bounds of what decode() accepts: a printer's answer to our four operations is a few KiB;
# these stop a hostile or broken peer from making the decoder work without end.
MAX_MESSAGE_BYTES: Final = 1 << 20
MAX_ATTRIBUTES: Final = 4096
MAX_COLLECTION_DEPTH: Final = 16


class _Reader:
    """A cursor over the message that only moves forward: every read consumes the bytes it
    returns or raises, so no field of the message can send the decoder backwards."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def take(self, count: int, what: str) -> bytes:
        end = self.pos + count
        if end > len(self.body):
            raise IppError(f"malformed IPP message: truncated {what} at byte {self.pos}")
        raw = self.body[self.pos : end]
        self.pos = end
        return raw

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def short(self, what: str) -> int:
        # RFC 8010 §3.1.4: name-length and value-length are SIGNED-SHORT, but a negative one
        # is never meaningful; read unsigned so a length can only move the cursor forward.
        return int.from_bytes(self.take(2, what), "big")


def decode(body: bytes) -> IppMessage:
    """Parse an IPP message. Raises IppError on a truncated, malformed or oversized one.

    Bounded: each loop turn consumes at least three bytes (a tag and two lengths), lengths are
    unsigned, and the message size, attribute count and collection depth have ceilings, so a
    hostile answer ends in IppError after at most len(body) / 3 turns."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise IppError(f"IPP message of {len(body)} bytes exceeds {MAX_MESSAGE_BYTES}")
    reader = _Reader(body)
    major, minor = reader.byte("version"), reader.byte("version")
    code = int.from_bytes(reader.take(2, "status code"), "big")
    request_id = int.from_bytes(reader.take(4, "request id"), "big")
    groups: list[tuple[int, dict[str, Attribute]]] = []
    current: dict[str, Attribute] | None = None
    last: str | None = None
    depth = 0  # inside a collection: its members are skipped
    count = 0
    while True:
        tag = reader.byte("tag")
        if tag == END_OF_ATTRIBUTES and depth == 0:
            break
        if tag < 0x10:
            if depth:
                raise IppError("malformed IPP message: delimiter tag inside a collection")
            current = {}
            groups.append((tag, current))
            last = None
            continue
        count += 1
        if count > MAX_ATTRIBUTES:
            raise IppError(f"IPP message carries more than {MAX_ATTRIBUTES} attribute values")
        name_raw = reader.take(reader.short("name length"), "attribute name")
        raw = reader.take(reader.short("value length"), "attribute value")
        if tag == BEGIN_COLLECTION:
            depth += 1
            if depth > MAX_COLLECTION_DEPTH:
                raise IppError(f"IPP collections nested deeper than {MAX_COLLECTION_DEPTH}")
            continue
        if tag == END_COLLECTION:
            if depth == 0:
                raise IppError("malformed IPP message: end of a collection never begun")
            depth -= 1
            continue
        if depth > 0 or current is None:
            continue
        try:
            name = name_raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise IppError("malformed IPP message: attribute name is not ASCII") from exc
        if name:
            last = name
            current[name] = Attribute(tag, name, (_decode_value(tag, raw),))
        elif last is not None:  # an additional value of the previous attribute
            prev = current[last]
            current[last] = Attribute(prev.tag, last, (*prev.values, _decode_value(tag, raw)))
    return IppMessage((major, minor), code, request_id, tuple(groups), body[reader.pos :])
