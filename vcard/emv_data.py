"""The payment application's personalized data, read from its DGIs (docs/perso-protocol.md,
"EMV payment application"): DOLs, the AFL, the FCI and GPO data of each interface, the card's
risk data. Pure functions over bytes; the applet (vcard/emv.py) owns the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shared.iso7816 import decode_tlv, find_tlv

DGI_FCI_CONTACT: Final = 0x9102
DGI_FCI_CONTACTLESS: Final = 0x9103
DGI_GPO_CONTACT: Final = 0x9104
DGI_GPO_CONTACTLESS: Final = 0x9105
DGI_KEYS: Final = 0x8000
DGI_PIN: Final = 0x8010
DGI_PIN_COUNTERS: Final = 0x9010
DGI_ICC_KEY: Final = 0x8201
DGI_RISK: Final = 0x0D01
ENCRYPTED_DGIS: Final = frozenset({DGI_KEYS, DGI_PIN, DGI_ICC_KEY})
FIXED_DGIS: Final = frozenset(
    {
        DGI_FCI_CONTACT,
        DGI_FCI_CONTACTLESS,
        DGI_GPO_CONTACT,
        DGI_GPO_CONTACTLESS,
        DGI_PIN_COUNTERS,
        DGI_RISK,
        *ENCRYPTED_DGIS,
    }
)
ALWAYS_REQUIRED: Final = frozenset(
    {DGI_FCI_CONTACT, DGI_GPO_CONTACT, DGI_KEYS, DGI_PIN, DGI_PIN_COUNTERS, DGI_RISK}
)
AIP_DDA: Final = 0x20  # AIP byte 1 b6 (Book 3 Annex C1)
AIP_CDA: Final = 0x01  # AIP byte 1 b1


def is_record_dgi(dgi: int) -> bool:
    """SSRR: SFI 1..10 (Book 3 §10.2, AFL files), record 1..16."""
    return 1 <= dgi >> 8 <= 10 and 1 <= dgi & 0xFF <= 16


Dol = list[tuple[int, int]]


def parse_dol(dol: bytes) -> Dol:
    """A data object list (Book 3 §5.4): tag, length pairs; raises ValueError if malformed."""
    out: Dol = []
    pos = 0
    while pos < len(dol):
        tag = dol[pos]
        pos += 1
        if tag & 0x1F == 0x1F:
            while True:
                if pos >= len(dol):
                    raise ValueError("DOL ends inside a tag")
                tag = (tag << 8) | dol[pos]
                pos += 1
                if not dol[pos - 1] & 0x80:
                    break
        if pos >= len(dol):
            raise ValueError(f"DOL entry {tag:X} has no length")
        out.append((tag, dol[pos]))
        pos += 1
    return out


def dol_length(dol: Dol) -> int:
    return sum(length for _, length in dol)


def dol_values(dol: Dol, data: bytes) -> dict[int, bytes]:
    """Split DOL-related data into its elements (the caller checked the total length)."""
    out: dict[int, bytes] = {}
    pos = 0
    for tag, length in dol:
        out[tag] = data[pos : pos + length]
        pos += length
    return out


@dataclass(frozen=True)
class AflEntry:
    sfi: int
    first: int
    last: int
    oda_records: int


def parse_afl(afl: bytes) -> list[AflEntry]:
    """Application File Locator (Book 3 §10.2): 4 bytes per entry, SFI in b8-b4 of byte 1."""
    if not afl or len(afl) % 4:
        raise ValueError("AFL length is not a multiple of 4")
    out = []
    for i in range(0, len(afl), 4):
        sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        if not 1 <= sfi <= 30 or first == 0 or last < first or oda > last - first + 1:
            raise ValueError(f"AFL entry {afl[i : i + 4].hex().upper()} is invalid")
        out.append(AflEntry(sfi, first, last, oda))
    return out


def afl_records(afl: list[AflEntry]) -> list[int]:
    """The record DGIs (SSRR) an AFL names, in AFL order."""
    return [(e.sfi << 8) | r for e in afl for r in range(e.first, e.last + 1)]


@dataclass(frozen=True)
class Interface:
    """What one interface (contact or contactless) answers: FCI and GPO data."""

    fci_proprietary: bytes  # the value of 'A5'
    pdol: Dol
    aip: bytes
    afl: list[AflEntry]
    label: bytes
    priority: bytes | None


def _value(data: bytes, tag: int, what: str) -> bytes:
    found = find_tlv(decode_tlv(data), tag)
    if found is None:
        raise ValueError(f"{what} lacks tag {tag:X}")
    return found.value


def interface(fci_dgi: bytes, gpo_dgi: bytes) -> Interface:
    """Parse one interface's 9102/9103 and 9104/9105 values; ValueError names what is wrong."""
    items = decode_tlv(fci_dgi)
    if len(items) == 1 and items[0].tag == 0xA5:  # accept a value already wrapped in 'A5'
        fci_dgi = items[0].value
        items = items[0].children
    label = find_tlv(items, 0x50)
    pdol = find_tlv(items, 0x9F38)
    priority = find_tlv(items, 0x87)
    return Interface(
        fci_proprietary=fci_dgi,
        pdol=parse_dol(pdol.value) if pdol else [],
        aip=_value(gpo_dgi, 0x82, "GPO data"),
        afl=parse_afl(_value(gpo_dgi, 0x94, "GPO data")),
        label=label.value if label else b"",
        priority=priority.value if priority else None,
    )


@dataclass(frozen=True)
class RiskData:
    """DGI 0D01 (ours): card risk management parameters and the IAD template."""

    lower_offline: int
    upper_offline: int
    atc_limit: int
    iad_template: bytes


IAD_DEFAULT: Final = bytes.fromhex("06010A03") + bytes(4)


def risk_data(value: bytes) -> RiskData:
    items = decode_tlv(value)

    def get(tag: int, size: int) -> bytes:
        found = find_tlv(items, tag)
        if found is None or len(found.value) != size:
            raise ValueError(f"DGI 0D01: tag {tag:X} missing or not {size} bytes")
        return found.value

    iad = find_tlv(items, 0x9F10)
    template = iad.value if iad is not None else IAD_DEFAULT
    if len(template) < 8:
        raise ValueError("DGI 0D01: the IAD template 9F10 is shorter than 8 bytes")
    return RiskData(get(0x9F14, 1)[0], get(0x9F23, 1)[0], int.from_bytes(get(0xDF01, 2)), template)


def record_value(dgi_value: bytes, tag: int) -> bytes | None:
    """A data element inside a record DGI ('70' template)."""
    found = find_tlv(decode_tlv(dgi_value), tag)
    return found.value if found is not None else None


@dataclass(frozen=True)
class Profile:
    contact: Interface
    contactless: Interface | None
    cdol1: Dol
    cdol2: Dol
    risk: RiskData


def find_in_records(dgis: dict[int, bytes], tag: int) -> bytes | None:
    for dgi in sorted(d for d in dgis if is_record_dgi(d)):
        value = record_value(dgis[dgi], tag)
        if value is not None:
            return value
    return None


def profile(dgis: dict[int, bytes]) -> Profile:
    """The application's parsed data; ValueError names the first thing wrong."""
    contact = interface(dgis[DGI_FCI_CONTACT], dgis[DGI_GPO_CONTACT])
    contactless = None
    if DGI_FCI_CONTACTLESS in dgis or DGI_GPO_CONTACTLESS in dgis:
        if DGI_FCI_CONTACTLESS not in dgis or DGI_GPO_CONTACTLESS not in dgis:
            raise ValueError("a contactless interface needs both DGI 9103 and DGI 9105")
        contactless = interface(dgis[DGI_FCI_CONTACTLESS], dgis[DGI_GPO_CONTACTLESS])
    cdol1 = find_in_records(dgis, 0x8C)
    cdol2 = find_in_records(dgis, 0x8D)
    if cdol1 is None or cdol2 is None:
        raise ValueError("the records lack CDOL1 (8C) or CDOL2 (8D)")
    risk = risk_data(dgis[DGI_RISK])
    return Profile(contact, contactless, parse_dol(cdol1), parse_dol(cdol2), risk)


def missing_dgis(dgis: dict[int, bytes], consumed: frozenset[int]) -> list[int]:
    """Required DGIs (the contract's list) not yet stored; `consumed` were decrypted already."""
    have = set(dgis) | consumed
    missing = set(ALWAYS_REQUIRED) - have
    pairs = ((DGI_FCI_CONTACT, DGI_GPO_CONTACT), (DGI_FCI_CONTACTLESS, DGI_GPO_CONTACTLESS))
    for fci, gpo in pairs:
        if fci not in dgis or gpo not in dgis:
            continue
        try:
            face = interface(dgis[fci], dgis[gpo])
        except ValueError:
            continue  # reported by profile() when the card finishes
        missing |= set(afl_records(face.afl)) - have
        if face.aip[0] & (AIP_DDA | AIP_CDA):
            missing |= {DGI_ICC_KEY} - have
    if (DGI_FCI_CONTACTLESS in dgis) != (DGI_GPO_CONTACTLESS in dgis):
        missing |= {DGI_FCI_CONTACTLESS, DGI_GPO_CONTACTLESS} - have
    return sorted(missing)
