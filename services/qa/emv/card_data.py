"""What the terminal reads from the card: directory entries (Book 1 §12.2-12.3), the AFL
(Book 3 §10.2), the records and the static data to be authenticated (Book 3 §10.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.qa.emv.apdu import KernelFailure, Transmit, command, read_record
from shared.iso7816 import Tlv, decode_tlv

# Book 3 Annex A: the application elementary files hold primitive data objects only inside
# the '70' template; these duplicates would make two values for one tag.
_TEMPLATES = frozenset({0x70, 0x77, 0x61, 0xA5, 0xBF0C, 0x6F})


@dataclass
class CardData:
    elements: dict[int, bytes] = field(default_factory=dict)
    records: dict[tuple[int, int], bytes] = field(default_factory=dict)
    static_data: bytes = b""

    def get(self, tag: int, default: bytes | None = None) -> bytes:
        value = self.elements.get(tag, default)
        if value is None:
            raise KernelFailure("read application data", f"mandatory tag {tag:X} not on the card")
        return value


@dataclass(frozen=True)
class AflEntry:
    sfi: int
    first: int
    last: int
    oda: int


def afl_entries(afl: bytes) -> list[AflEntry]:
    if not afl or len(afl) % 4:
        raise KernelFailure("gpo", "AFL length is not a multiple of 4")
    out = []
    for i in range(0, len(afl), 4):
        sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        if afl[i] & 0x07 or not 1 <= sfi <= 30 or first == 0 or last < first:
            raise KernelFailure("gpo", f"AFL entry {afl[i : i + 4].hex().upper()} is invalid")
        if oda > last - first + 1:
            raise KernelFailure("gpo", f"AFL entry {afl[i : i + 4].hex().upper()}: ODA count")
        out.append(AflEntry(sfi, first, last, oda))
    return out


def parse_fci_directory(data: bytes) -> list[tuple[int, bytes]]:
    """(priority, AID) of every '61' entry: a PSE record or a PPSE FCI's 'BF0C'."""
    out: list[tuple[int, bytes]] = []

    def walk(items: list[Tlv]) -> None:
        for item in items:
            if item.tag == 0x61:
                aid = next((c.value for c in item.children if c.tag == 0x4F), None)
                prio = next((c.value for c in item.children if c.tag == 0x87), b"\x0f")
                if aid is None:
                    raise KernelFailure("selection", "a directory entry has no AID (4F)")
                out.append(((prio[0] & 0x0F) or 0x10, aid))
            else:
                walk(item.children)

    try:
        walk(decode_tlv(data))
    except ValueError as exc:
        raise KernelFailure("selection", f"directory is not BER-TLV: {exc}") from exc
    return out


def _collect(into: dict[int, bytes], items: list[Tlv], where: str) -> None:
    for item in items:
        if item.tag in _TEMPLATES or item.constructed:
            _collect(into, item.children, where)
            continue
        if item.tag in into:
            raise KernelFailure("read application data", f"tag {item.tag:X} twice ({where})")
        into[item.tag] = item.value


async def read_afl(transmit: Transmit, afl: list[AflEntry], aip: bytes) -> CardData:
    """READ RECORD every record the AFL names; the ODA ones build the static data."""
    data = CardData()
    static = bytearray()
    for entry in afl:
        for number in range(entry.first, entry.last + 1):
            where = f"SFI {entry.sfi} record {number}"
            raw = await command(transmit, read_record(entry.sfi, number), f"read {where}")
            try:
                items = decode_tlv(raw)
            except ValueError as exc:
                raise KernelFailure("read application data", f"{where}: {exc}") from exc
            if len(items) != 1 or items[0].tag != 0x70:
                raise KernelFailure("read application data", f"{where} is not one '70' template")
            data.records[(entry.sfi, number)] = raw
            _collect(data.elements, items[0].children, where)
            if number < entry.first + entry.oda:
                # Book 3 §10.3: SFI 1-10 without the '70' tag and length, SFI 11-30 whole.
                static += items[0].value if entry.sfi <= 10 else raw
    tag_list = data.elements.get(0x9F4A)
    if tag_list is not None:
        if tag_list != b"\x82":
            raise KernelFailure("oda", "the SDA tag list (9F4A) holds more than the AIP (82)")
        static += aip
    data.static_data = bytes(static)
    return data
