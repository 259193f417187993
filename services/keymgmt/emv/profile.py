"""The product-level EMV data elements an issuer chooses (docs/emv-profile.md), validated so a
bad CVM list or DOL is refused with the field named before any card is prepared with it.

DOLs (Book 3 §5.4) are tag/length pairs; CVM lists (Book 3 §10.5, Annex C3) are amount X,
amount Y and 2-byte CV rules. Values are kept as upper-case hex strings, as issuers write them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# Terminal and card data elements a DOL may name, with their fixed lengths (Book 3 Annex A).
KNOWN_DOL_LENGTHS: dict[int, int] = {
    0x9F02: 6,  # amount, authorised
    0x9F03: 6,  # amount, other
    0x9F1A: 2,  # terminal country code
    0x95: 5,  # TVR
    0x5F2A: 2,  # transaction currency code
    0x9A: 3,  # transaction date
    0x9C: 1,  # transaction type
    0x9F37: 4,  # unpredictable number
    0x9F35: 1,  # terminal type
    0x9F45: 2,  # data authentication code
    0x9F4C: 8,  # ICC dynamic number
    0x9F34: 3,  # CVM results
    0x8A: 2,  # authorisation response code
    0x9F66: 4,  # terminal transaction qualifiers
    0x9F21: 3,  # transaction time
    0x9F33: 3,  # terminal capabilities
    0x9F40: 5,  # additional terminal capabilities
}
TTQ, UN, ARC = 0x9F66, 0x9F37, 0x8A

# Book 3 Annex C3: CVM codes (b6-b1 of byte 1) and condition codes (byte 2) defined.
CVM_CODES = {
    0x00: "fail CVM processing",
    0x01: "plaintext PIN verified by ICC",
    0x02: "enciphered PIN verified online",
    0x03: "plaintext PIN verified by ICC and signature",
    0x04: "enciphered PIN verified by ICC",
    0x05: "enciphered PIN verified by ICC and signature",
    0x1E: "signature",
    0x1F: "no CVM required",
}
ENCIPHERED_OFFLINE = {0x04, 0x05}
OFFLINE_PIN = {0x01, 0x03}
CVM_CONDITIONS = range(0x00, 0x0A)


class OdaMethod(StrEnum):
    SDA = "SDA"
    DDA = "DDA"
    CDA = "CDA"


def _hex(value: str, sizes: set[int] | None = None) -> bytes:
    if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})*", value):
        raise ValueError("must be hex, an even number of digits")
    raw = bytes.fromhex(value)
    if sizes is not None and len(raw) not in sizes:
        raise ValueError(f"must be {' or '.join(str(s) for s in sorted(sizes))} bytes")
    return raw


def parse_dol(raw: bytes) -> list[tuple[int, int]]:
    """(tag, length) pairs of a DOL; ValueError naming what is wrong."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < len(raw):
        start = pos
        first = raw[pos]
        pos += 1
        if first & 0x1F == 0x1F:  # multi-byte tag: further bytes while b8 is set
            while pos < len(raw) and raw[pos] & 0x80:
                pos += 1
            pos += 1
        if pos >= len(raw):
            raise ValueError(f"tag at byte {start} has no length")
        tag = int.from_bytes(raw[start:pos], "big")
        if first & 0x20:
            raise ValueError(f"tag {tag:X} is constructed; a DOL names primitive data only")
        length = raw[pos]
        pos += 1
        if any(t == tag for t, _ in out):
            raise ValueError(f"tag {tag:X} is listed twice")
        want = KNOWN_DOL_LENGTHS.get(tag)
        if want is not None and length != want:
            raise ValueError(f"tag {tag:X} must have length {want}, not {length}")
        if length == 0:
            raise ValueError(f"tag {tag:X} has length 0")
        out.append((tag, length))
    if not out:
        raise ValueError("is empty")
    return out


def parse_cvm_list(raw: bytes) -> list[tuple[int, int]]:
    """The CV rules (byte 1, byte 2) of a CVM list; ValueError naming what is wrong."""
    if len(raw) < 10 or (len(raw) - 8) % 2:
        raise ValueError("must be amount X (4 bytes), amount Y (4 bytes), then 2-byte CV rules")
    rules = [(raw[i], raw[i + 1]) for i in range(8, len(raw), 2)]
    for n, (code, condition) in enumerate(rules, 1):
        method = code & 0x3F
        if method not in CVM_CODES:
            raise ValueError(f"rule {n}: CVM code {method:02X} is not defined in Book 3")
        if method in ENCIPHERED_OFFLINE:
            raise ValueError(
                f"rule {n}: {CVM_CODES[method]} is not supported: the card verifies"
                " plaintext offline PIN only"
            )
        if condition not in CVM_CONDITIONS:
            raise ValueError(f"rule {n}: condition code {condition:02X} is not defined in Book 3")
    return rules


def _dol(value: str) -> str:
    parse_dol(_hex(value))
    return value.upper()


def _cvm(value: str) -> str:
    parse_cvm_list(_hex(value))
    return value.upper()


def _sized(*sizes: int) -> AfterValidator:
    def check(value: str) -> str:
        _hex(value, set(sizes))
        return value.upper()

    return AfterValidator(check)


Dol = Annotated[str, AfterValidator(_dol)]
Text16 = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[\x20-\x7E]+$")]
Numeric3 = Annotated[str, Field(pattern=r"^\d{3}$")]


class EmvProfile(BaseModel):
    """An issuer's EMV data elements for a product (docs/emv-profile.md names each tag)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    application_label: Text16 = "CARDBUREAU"  # 50
    preferred_name: Text16 = "CARDBUREAU DEBIT"  # 9F12
    priority: int = Field(default=1, ge=1, le=15)  # 87
    language: str = Field(default="en", pattern=r"^(?:[a-z]{2}){1,4}$")  # 5F2D
    country_code: Numeric3 = "826"  # 5F28
    currency_code: Numeric3 = "978"  # 9F42
    application_version: Annotated[str, _sized(2)] = "0002"  # 9F08
    auc: Annotated[str, _sized(2)] = "FF00"  # 9F07
    iac_default: Annotated[str, _sized(5)] = "F040AC8800"  # 9F0D
    iac_denial: Annotated[str, _sized(5)] = "0010000000"  # 9F0E
    iac_online: Annotated[str, _sized(5)] = "F040FC9800"  # 9F0F
    # X = Y = 0; offline plaintext PIN if supported, else online PIN, else signature, no CVM.
    cvm_list: Annotated[str, AfterValidator(_cvm)] = "0000000000000000410342031E031F00"
    pdol: Dol = "9F66049F02069F1A025F2A029A039C019F3704"  # 9F38 (contact)
    contactless_pdol: Dol | None = None  # 9F38 (contactless); None: the contact PDOL
    cdol1: Dol = "9F02069F03069F1A0295055F2A029A039C019F3704"  # 8C
    cdol2: Dol = "8A029F02069F03069F1A0295055F2A029A039C019F3704"  # 8D
    lower_offline_limit: int = Field(default=0, ge=0, le=255)  # 9F14
    upper_offline_limit: int = Field(default=0, ge=0, le=255)  # 9F23
    atc_limit: int = Field(default=0xFFFF, ge=1, le=0xFFFF)  # DF01 (ours)
    pin_try_limit: int = Field(default=3, ge=1, le=15)  # 9010
    contactless: bool = True  # 9103/9105 on the card
    oda_methods: list[OdaMethod] = Field(
        default_factory=lambda: [OdaMethod.SDA, OdaMethod.DDA, OdaMethod.CDA]
    )

    @model_validator(mode="after")
    def _consistent(self) -> EmvProfile:
        tags = {
            "pdol": parse_dol(bytes.fromhex(self.pdol)),
            "cdol1": parse_dol(bytes.fromhex(self.cdol1)),
            "cdol2": parse_dol(bytes.fromhex(self.cdol2)),
        }
        if self.contactless_pdol is not None:
            tags["contactless_pdol"] = parse_dol(bytes.fromhex(self.contactless_pdol))
        for field in ("pdol", "contactless_pdol"):
            if field in tags and TTQ not in {t for t, _ in tags[field]}:
                raise ValueError(f"{field}: must include 9F66 (terminal transaction qualifiers)")
        if OdaMethod.CDA in self.oda_methods and UN not in {t for t, _ in tags["cdol1"]}:
            raise ValueError("cdol1: CDA needs 9F37 (unpredictable number) in CDOL1")
        if ARC not in {t for t, _ in tags["cdol2"]}:
            raise ValueError("cdol2: must include 8A (authorisation response code)")
        if self.lower_offline_limit > self.upper_offline_limit:
            raise ValueError("lower_offline_limit: must not exceed upper_offline_limit")
        if len(set(self.oda_methods)) != len(self.oda_methods):
            raise ValueError("oda_methods: a method is listed twice")
        return self

    @property
    def cdol1_length(self) -> int:
        return sum(n for _, n in parse_dol(bytes.fromhex(self.cdol1)))

    def offline_pin(self) -> bool:
        """Whether the CVM list names plaintext offline PIN."""
        rules = parse_cvm_list(bytes.fromhex(self.cvm_list))
        return any(code & 0x3F in OFFLINE_PIN for code, _ in rules)

    @property
    def needs_icc_key(self) -> bool:
        return bool({OdaMethod.DDA, OdaMethod.CDA} & set(self.oda_methods))

    @property
    def needs_issuer_certificate(self) -> bool:
        return bool(self.oda_methods)
