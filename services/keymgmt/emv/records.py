"""The clear DGIs of a card's EMV profile (docs/emv-profile.md): AFL records, SELECT and GPO
responses, card risk data and PIN try data. Pure: the signed and wrapped parts arrive made.

Records for ODA are SFI 2 record 1 only; the static data to be authenticated is its `70`
template's value followed by the AIP (`9F4A` = `82`), Book 3 §10.3 and Book 2 §5.4.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

from services.keymgmt.emv.profile import EmvProfile, OdaMethod
from services.keymgmt.gp.script import dgi
from services.keymgmt.hsm.rsa import RsaPublic
from shared.iso7816 import tlv
from shared.pan import mask_pan

AID = bytes.fromhex("A0000000031010")
DDOL = bytes.fromhex("9F3704")  # unpredictable number (Book 2 §6.5.1)
IAD = bytes.fromhex("06010A0300000000")  # cryptogram version 0A, CVR zero at issuance
SDA_TAG_LIST = b"\x82"
_AIP_BITS = {OdaMethod.SDA: 0x40, OdaMethod.DDA: 0x20, OdaMethod.CDA: 0x01}
# cardholder verification, terminal risk management, issuer authentication (Book 3 Annex C1)
_AIP_ALWAYS = 0x10 | 0x08 | 0x04


@dataclass(frozen=True)
class CardRecord:
    """What a card's records say about its holder (from the vault record, the order)."""

    pan: str
    psn: str  # 2 digits, "00" when the issuer has none
    expiry: str  # YYMM
    cardholder_name: str
    service_code: str  # 3 digits

    def __post_init__(self) -> None:
        if not self.pan.isdigit() or not 13 <= len(self.pan) <= 19:  # as the vault seals them
            raise ValueError("PAN must be 13-19 digits")
        if not self.psn.isdigit() or len(self.psn) != 2:
            raise ValueError("PSN must be 2 digits")
        if (
            not self.expiry.isdigit()
            or len(self.expiry) != 4
            or not 1 <= int(self.expiry[2:]) <= 12
        ):
            raise ValueError("expiry must be YYMM")
        if not self.service_code.isdigit() or len(self.service_code) != 3:
            raise ValueError("service code must be 3 digits")
        if not 2 <= len(self.cardholder_name) <= 26 or not self.cardholder_name.isascii():
            raise ValueError("cardholder name must be 2-26 ASCII characters")

    def __repr__(self) -> str:  # never print a full PAN
        return f"CardRecord(pan={mask_pan(self.pan)}, psn={self.psn}, expiry={self.expiry})"


@dataclass(frozen=True)
class IssuerOda:
    """The issuer's key and certificate as the card carries them."""

    ca_index: int
    certificate: bytes  # tag 90
    remainder: bytes  # tag 92 (may be empty)
    public: RsaPublic  # exponent: tag 9F32; size: NI


@dataclass(frozen=True)
class CardOda:
    """A card's signed data, made at preparation."""

    sda: bytes | None  # tag 93
    icc_certificate: bytes | None  # tag 9F46
    icc_remainder: bytes  # tag 9F48
    icc_exponent: bytes  # tag 9F47


def bcd(digits: str, pad: str = "F") -> bytes:
    return bytes.fromhex(digits + pad * (len(digits) % 2))


def expiry_yymmdd(yymm: str) -> bytes:
    year, month = 2000 + int(yymm[:2]), int(yymm[2:])
    return bcd(f"{yymm}{calendar.monthrange(year, month)[1]:02d}")


def track2(record: CardRecord, icvv: str | None) -> bytes:
    """Tag 57: PAN D YYMM service code, then discretionary data 00000 (PVKI and PVV
    positions) and the iCVV when the product has CVVs; F-padded (Book 3 Annex A)."""
    discretionary = "" if icvv is None else f"00000{icvv}"
    return bcd(f"{record.pan}D{record.expiry}{record.service_code}{discretionary}")


def aip(profile: EmvProfile) -> bytes:
    bits = _AIP_ALWAYS
    for method in profile.oda_methods:
        bits |= _AIP_BITS[method]
    return bytes([bits, 0x00])


def magstripe_record(record: CardRecord, icvv: str | None) -> bytes:
    """SFI 1 record 1."""
    return tlv(0x70, tlv(0x57, track2(record, icvv)) + tlv(0x5F20, record.cardholder_name.encode()))


def static_record(record: CardRecord, profile: EmvProfile, effective: str) -> bytes:
    """SFI 2 record 1: the data signed for ODA (``effective``: YYMMDD)."""
    p = profile
    body = b"".join(
        (
            tlv(0x5A, bcd(record.pan)),
            tlv(0x5F24, expiry_yymmdd(record.expiry)),
            tlv(0x5F25, bytes.fromhex(effective)),
            tlv(0x5F34, bytes.fromhex(record.psn)),
            tlv(0x5F28, bytes.fromhex("0" + p.country_code)),
            tlv(0x9F42, bytes.fromhex("0" + p.currency_code)),
            tlv(0x9F07, bytes.fromhex(p.auc)),
            tlv(0x8E, bytes.fromhex(p.cvm_list)),
            tlv(0x9F0D, bytes.fromhex(p.iac_default)),
            tlv(0x9F0E, bytes.fromhex(p.iac_denial)),
            tlv(0x9F0F, bytes.fromhex(p.iac_online)),
            tlv(0x8C, bytes.fromhex(p.cdol1)),
            tlv(0x8D, bytes.fromhex(p.cdol2)),
            tlv(0x9F08, bytes.fromhex(p.application_version)),
            tlv(0x9F4A, SDA_TAG_LIST),
        )
    )
    return tlv(0x70, body)


def static_data(static_template: bytes, aip_value: bytes) -> bytes:
    """Static data to be authenticated: the record's template value, then the AIP."""
    return _template_value(static_template) + aip_value


def _template_value(template: bytes) -> bytes:
    length = template[1]
    if length < 0x80:
        return template[2:]
    return template[2 + (length & 0x7F) :]


def oda_records(profile: EmvProfile, issuer: IssuerOda | None, card: CardOda | None) -> list[bytes]:
    """SFI 2 records 2..: the issuer key record, the SDA record, the ICC key record."""
    if not profile.oda_methods:
        return []
    if issuer is None or card is None:
        raise ValueError("the product uses ODA but the card has no issuer certificate or ODA data")
    key_record = tlv(0x8F, bytes([issuer.ca_index])) + tlv(0x90, issuer.certificate)
    if issuer.remainder:
        key_record += tlv(0x92, issuer.remainder)
    records = [tlv(0x70, key_record + tlv(0x9F32, issuer.public.exponent))]
    if OdaMethod.SDA in profile.oda_methods:
        if card.sda is None:
            raise ValueError("the product uses SDA but the card has no signed static data")
        records.append(tlv(0x70, tlv(0x93, card.sda)))
    if profile.needs_icc_key:
        if card.icc_certificate is None:
            raise ValueError("the product uses DDA/CDA but the card has no ICC certificate")
        icc = tlv(0x9F46, card.icc_certificate) + tlv(0x9F47, card.icc_exponent)
        if card.icc_remainder:
            icc += tlv(0x9F48, card.icc_remainder)
        records.append(tlv(0x70, icc + tlv(0x9F49, DDOL)))
    return records


def afl(sfi2_records: int) -> bytes:
    """SFI 1 record 1 (none for ODA), SFI 2 records 1..n (record 1 for ODA)."""
    return bytes([1 << 3, 1, 1, 0, 2 << 3, 1, sfi2_records, 1])


def fci_value(profile: EmvProfile, pdol: str) -> bytes:
    """The `A5` value of the SELECT response (DGIs 9102/9103)."""
    return b"".join(
        (
            tlv(0x50, profile.application_label.encode("ascii")),
            tlv(0x87, bytes([profile.priority])),
            tlv(0x9F38, bytes.fromhex(pdol)),
            tlv(0x5F2D, profile.language.encode("ascii")),
            tlv(0x9F11, b"\x01"),
            tlv(0x9F12, profile.preferred_name.encode("ascii")),
        )
    )


def risk_data(profile: EmvProfile) -> bytes:
    """DGI 0D01 (ours): the card's own risk management data."""
    return (
        tlv(0x9F14, bytes([profile.lower_offline_limit]))
        + tlv(0x9F23, bytes([profile.upper_offline_limit]))
        + tlv(0xDF01, profile.atc_limit.to_bytes(2, "big"))
        + tlv(0x9F10, IAD)
    )


def afl_records(
    record: CardRecord,
    profile: EmvProfile,
    icvv: str | None,
    effective: str,
    issuer: IssuerOda | None,
    card: CardOda | None,
) -> dict[str, bytes]:
    """The `70` templates of every AFL record by DGI number SSRR ("0101": SFI 1 record 1,
    "0201".. SFI 2 records 1..n), as the card answers READ RECORD and QA reads them back."""
    sfi2 = [static_record(record, profile, effective), *oda_records(profile, issuer, card)]
    out = {"0101": magstripe_record(record, icvv)}
    return out | {f"{0x0201 + n:04X}": r for n, r in enumerate(sfi2)}


def clear_dgis(
    record: CardRecord,
    profile: EmvProfile,
    icvv: str | None,
    effective: str,
    issuer: IssuerOda | None,
    card: CardOda | None,
) -> list[bytes]:
    """Every non-sensitive DGI of the card, in script order."""
    records = afl_records(record, profile, icvv, effective, issuer, card)
    gpo = tlv(0x82, aip(profile)) + tlv(0x94, afl(len(records) - 1))
    out = [dgi(int(number, 16), r) for number, r in records.items()]
    out.append(dgi(0x9102, fci_value(profile, profile.pdol)))
    if profile.contactless:
        out.append(dgi(0x9103, fci_value(profile, profile.contactless_pdol or profile.pdol)))
    out.append(dgi(0x9104, gpo))
    if profile.contactless:
        out.append(dgi(0x9105, gpo))
    pin_try = bytes([profile.pin_try_limit, profile.pin_try_limit])
    return [*out, dgi(0x0D01, risk_data(profile)), dgi(0x9010, pin_try)]


def dgi_names(profile: EmvProfile) -> list[str]:
    """The DGIs a card of this profile gets, in script order (prepared_cards.dgis)."""
    sfi2 = 1
    if profile.oda_methods:
        sfi2 += 1 + (OdaMethod.SDA in profile.oda_methods) + profile.needs_icc_key
    names = ["0101", *(f"{0x0201 + n:04X}" for n in range(sfi2)), "9102"]
    names += ["9103"] if profile.contactless else []
    names += ["9104"] + (["9105"] if profile.contactless else [])
    names += ["0D01", "9010", "8000", "8010"]
    return names + (["8201"] if profile.needs_icc_key else [])
