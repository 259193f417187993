"""ISO/IEC 7816-4 building blocks shared by the virtual cards, station agents and QA.

Short APDUs only (Lc and Le on one byte): extended length is refused, so nothing a T=0 reader
cannot carry gets built. BER-TLV per ISO 7816-4 §5.2 / ISO 8825-1 (multi-byte tags, long
lengths). DGIs per EMV CPS: 2-byte tag, 1-byte length or FF + 2 bytes from 255 bytes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

# Status words (ISO 7816-4 §5.1.3, tables 5 and 6).
SW_OK: Final = 0x9000
SW_MEMORY_FAILURE: Final = 0x6581
SW_WRONG_LENGTH: Final = 0x6700
SW_LOGICAL_CHANNEL_NOT_SUPPORTED: Final = 0x6881
SW_SECURE_MESSAGING_NOT_SUPPORTED: Final = 0x6882
SW_CHAINING_NOT_SUPPORTED: Final = 0x6884
SW_SECURITY_STATUS_NOT_SATISFIED: Final = 0x6982
SW_CONDITIONS_NOT_SATISFIED: Final = 0x6985
SW_WRONG_DATA: Final = 0x6A80
SW_FUNCTION_NOT_SUPPORTED: Final = 0x6A81
SW_FILE_NOT_FOUND: Final = 0x6A82
SW_RECORD_NOT_FOUND: Final = 0x6A83
SW_INCORRECT_P1P2: Final = 0x6A86
SW_REFERENCED_DATA_NOT_FOUND: Final = 0x6A88
SW_WRONG_P1P2: Final = 0x6B00
SW_INS_NOT_SUPPORTED: Final = 0x6D00
SW_CLA_NOT_SUPPORTED: Final = 0x6E00
SW_UNKNOWN: Final = 0x6F00
SW1_BYTES_REMAINING: Final = 0x61  # T=0: SW2 more bytes wait for GET RESPONSE
SW1_WRONG_LE: Final = 0x6C  # SW2 gives the exact Le to resend with


class ApduError(ValueError):
    """Bytes that are not a well-formed short command or response APDU."""


@dataclass(frozen=True, slots=True)
class CommandAPDU:
    """A short command APDU; `le` is the expected length 1..256 (256 is coded 00), or None."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("cla", self.cla), ("ins", self.ins), ("p1", self.p1), ("p2", self.p2)):
            if not 0 <= value <= 0xFF:
                raise ApduError(f"{name} out of range: {value}")
        if len(self.data) > 255:
            raise ApduError("command data over 255 bytes needs extended length (unsupported)")
        if self.le is not None and not 1 <= self.le <= 256:
            raise ApduError(f"Le out of range: {self.le}")

    @property
    def case(self) -> int:
        """ISO 7816-3 §12.1 command case: 1 no data, 2 Le only, 3 Lc only, 4 both."""
        if self.data:
            return 4 if self.le is not None else 3
        return 2 if self.le is not None else 1

    def to_bytes(self) -> bytes:
        out = bytearray((self.cla, self.ins, self.p1, self.p2))
        if self.data:
            out.append(len(self.data))
            out += self.data
        if self.le is not None:
            out.append(self.le & 0xFF)  # 256 is coded as 00
        return bytes(out)

    @classmethod
    def parse(cls, raw: bytes) -> CommandAPDU:
        """Decode a short APDU (ISO 7816-3 §12.1); Lc=00 would mean extended length."""
        if len(raw) < 4:
            raise ApduError("command APDU shorter than its 4-byte header")
        (cla, ins, p1, p2), body = raw[:4], raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, le=body[0] or 256)
        lc = body[0]
        if lc == 0:
            raise ApduError("extended-length APDU (unsupported)")
        if len(body) == 1 + lc:
            return cls(cla, ins, p1, p2, bytes(body[1:]))
        if len(body) == 2 + lc:
            return cls(cla, ins, p1, p2, bytes(body[1 : 1 + lc]), body[-1] or 256)
        raise ApduError(f"Lc={lc} does not match {len(body) - 1} body bytes")


@dataclass(frozen=True, slots=True)
class ResponseAPDU:
    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def parse(cls, raw: bytes) -> ResponseAPDU:
        if len(raw) < 2:
            raise ApduError("response APDU shorter than its status word")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))


def sw_hex(sw: int) -> str:
    return f"{sw:04X}"


# -- BER-TLV (ISO 7816-4 §5.2, ISO/IEC 8825-1 §8.1.2-8.1.3). Tags are ints of their bytes: 0x9F7F.


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _tag_bytes(tag: int) -> bytes:
    if tag < 0:
        raise ValueError("negative tag")
    raw = _int_bytes(tag)
    if len(raw) == 1 and raw[0] & 0x1F == 0x1F:
        raise ValueError(f"tag {tag:X} announces subsequent bytes but has none")
    if len(raw) > 1:
        if raw[0] & 0x1F != 0x1F or raw[-1] & 0x80 or any(not b & 0x80 for b in raw[1:-1]):
            raise ValueError(f"malformed multi-byte tag {tag:X}")
    return raw


def encode_length(length: int) -> bytes:
    """Definite form: short below 128, else 81/82/83/84 followed by the length bytes."""
    if length < 0:
        raise ValueError("negative length")
    if length < 0x80:
        return bytes((length,))
    raw = _int_bytes(length)
    if len(raw) > 4:
        raise ValueError("length too large")
    return bytes((0x80 | len(raw),)) + raw


def tlv(tag: int, value: bytes) -> bytes:
    return _tag_bytes(tag) + encode_length(len(value)) + value


@dataclass(frozen=True, slots=True)
class Tlv:
    tag: int
    value: bytes
    children: list[Tlv] = field(default_factory=list)

    @property
    def constructed(self) -> bool:
        return bool(_int_bytes(self.tag)[0] & 0x20)  # b6 of the first tag byte

    def find(self, tag: int) -> Tlv | None:
        return find_tlv(self.children, tag)


def _read_tag(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise ValueError("truncated tag")
    tag, more, pos = data[pos], data[pos] & 0x1F == 0x1F, pos + 1
    start = pos - 1
    while more:  # subsequent tag bytes carry b8 = 1 except the last
        if pos - start >= 4:
            raise ValueError("tag longer than 4 bytes")
        if pos >= len(data):
            raise ValueError("truncated multi-byte tag")
        tag, more, pos = (tag << 8) | data[pos], bool(data[pos] & 0x80), pos + 1
    return tag, pos


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise ValueError("truncated length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0 or count > 4:
        raise ValueError(f"unsupported length form {first:02X} (indefinite or too long)")
    if pos + count > len(data):
        raise ValueError("truncated long length")
    return int.from_bytes(data[pos : pos + count], "big"), pos + count


# Bounds of decode_tlv: EMV nests templates three or four deep (6F > A5 > BF0C > 61, 77 > 70)
# and a short-APDU answer is at most 256 bytes, a record file a few KiB. Past these the input is
# hostile or broken, and the decoder says so instead of recursing or working without end.
MAX_TLV_DEPTH: Final = 16
MAX_TLV_BYTES: Final = 1 << 16


class TlvError(ValueError):
    """Bytes that are not BER-TLV within the decoder's bounds (a ValueError, as before)."""


def decode_tlv(data: bytes, *, recursive: bool = True, max_depth: int = MAX_TLV_DEPTH) -> list[Tlv]:
    """Decode BER-TLV objects, constructed ones into children; 00/FF padding is skipped.

    Bounded: at most MAX_TLV_BYTES of input and `max_depth` nested templates, else TlvError;
    every step consumes at least one byte, so the work is at most len(data) * max_depth."""
    if len(data) > MAX_TLV_BYTES:
        raise TlvError(f"BER-TLV input of {len(data)} bytes exceeds {MAX_TLV_BYTES}")
    return _decode_level(bytes(data), recursive, max_depth, 1)


def _decode_level(data: bytes, recursive: bool, max_depth: int, depth: int) -> list[Tlv]:
    out: list[Tlv] = []
    pos = 0
    while pos < len(data):
        if data[pos] in (0x00, 0xFF):  # inter-object padding
            pos += 1
            continue
        if depth > max_depth:  # an object at level max_depth + 1
            raise TlvError(f"BER-TLV templates nested deeper than {max_depth}")
        try:
            tag, pos = _read_tag(data, pos)
            length, pos = _read_length(data, pos)
        except ValueError as exc:
            raise TlvError(str(exc)) from exc
        if pos + length > len(data):
            raise TlvError(f"value of tag {tag:X} overruns the data")
        value, pos = data[pos : pos + length], pos + length
        constructed = recursive and bool(_int_bytes(tag)[0] & 0x20)
        children = _decode_level(value, True, max_depth, depth + 1) if constructed else []
        out.append(Tlv(tag, value, children))
    return out


def find_tlv(items: list[Tlv], tag: int) -> Tlv | None:
    """Depth-first search for the first object with `tag`."""
    for item in items:
        if item.tag == tag:
            return item
        found = find_tlv(item.children, tag)
        if found is not None:
            return found
    return None


# -- DGIs (EMV CPS data grouping): tag (2 bytes) || length (1 byte, or FF || 2 bytes) || value.


def encode_dgi(tag: int, value: bytes) -> bytes:
    if not 0 <= tag <= 0xFFFF:
        raise ValueError(f"DGI tag out of range: {tag}")
    if len(value) > 0xFFFF:
        raise ValueError("DGI value too long")
    if len(value) >= 0xFF:
        length = b"\xff" + len(value).to_bytes(2, "big")
    else:
        length = bytes((len(value),))
    return tag.to_bytes(2, "big") + length + value


def decode_dgis(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if pos + 3 > len(data):
            raise ValueError("truncated DGI header")
        tag = int.from_bytes(data[pos : pos + 2], "big")
        length = data[pos + 2]
        pos += 3
        if length == 0xFF:
            if pos + 2 > len(data):
                raise ValueError("truncated DGI long length")
            length = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
        if pos + length > len(data):
            raise ValueError(f"DGI {tag:04X} value overruns the data")
        out.append((tag, bytes(data[pos : pos + length])))
        pos += length
    return out


# -- STORE DATA (GlobalPlatform Card Spec 2.3.1 §11.11, table 11-89 for P1).

STORE_DATA_LAST_BLOCK: Final = 0x80  # P1 b8
STORE_DATA_ENC_APPLICATION: Final = 0x20  # P1 b7-b6 = 01: application dependent encryption
STORE_DATA_ENC_ENCRYPTED: Final = 0x60  # P1 b7-b6 = 11: data encrypted
STORE_DATA_FORMAT_DGI: Final = 0x08  # P1 b5-b4 = 01: DGI format
STORE_DATA_FORMAT_BER: Final = 0x10  # P1 b5-b4 = 10: BER-TLV format


def store_data(
    block: int,
    data: bytes,
    *,
    last: bool,
    encryption: int = 0,
    data_format: int = STORE_DATA_FORMAT_DGI,
    cla: int = 0x80,
) -> CommandAPDU:
    """STORE DATA `CLA E2 P1 P2 Lc data` with P2 the block number (00..FF)."""
    if not 0 <= block <= 0xFF:
        raise ValueError(f"STORE DATA block number out of range: {block}")
    if encryption & ~0x60 or data_format & ~0x18:
        raise ValueError("encryption/format bits outside P1 b7-b4")
    p1 = (STORE_DATA_LAST_BLOCK if last else 0) | encryption | data_format
    return CommandAPDU(cla, 0xE2, p1, block, data)


def store_data_script(dgis: list[tuple[int, bytes]], *, encryption: int = 0) -> list[CommandAPDU]:
    """One DGI per STORE DATA, blocks from 00, P1 b8 on the last (docs/perso-protocol.md)."""
    return [
        store_data(i, encode_dgi(tag, value), last=i == len(dgis) - 1, encryption=encryption)
        for i, (tag, value) in enumerate(dgis)
    ]
