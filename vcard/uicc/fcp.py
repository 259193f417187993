"""File control parameters returned by SELECT and STATUS (ETSI TS 102 221 §11.1.1.3).

EF (Table 11.5): '82' file descriptor, '83' file identifier, '8A' life cycle status, '8B'
security attributes (EF.ARR's FID and record number), '80' file size, '88' short file
identifier. MF/ADF (Table 11.4): '82', '83', '84' DF name (ADF), 'A5' proprietary
information (the MF's UICC characteristics), '8A', '8B', 'C6' PIN status template.
"""

from __future__ import annotations

from typing import Final

from shared.iso7816 import tlv
from vcard.uicc.files import ARR_DF, FID_ARR, FID_MF, Ef

DATA_CODING: Final = 0x21  # TS 102 221 §11.1.1.4.3
OPERATIONAL_ACTIVATED: Final = b"\x05"
UICC_CHARACTERISTICS: Final = b"\x61"  # clock stop allowed, 3 V / 1.8 V (§14.5.2; as the ATR)


def _security(record: int) -> bytes:
    return tlv(0x8B, FID_ARR.to_bytes(2, "big") + bytes((record,)))


def ef_fcp(ef: Ef, content: bytes) -> bytes:
    if ef.structure == "linear":
        count = len(content) // ef.record_length
        descriptor = bytes((0x42, DATA_CODING, 0x00, ef.record_length, count))
    else:
        descriptor = bytes((0x41, DATA_CODING))
    # '88' empty: the file has no SFI; absent would mean the FID's low five bits.
    sfi = tlv(0x88, b"") if ef.sfi is None else tlv(0x88, bytes((ef.sfi << 3,)))
    body = (
        tlv(0x82, descriptor)
        + tlv(0x83, ef.fid.to_bytes(2, "big"))
        + tlv(0x8A, OPERATIONAL_ACTIVATED)
        + _security(ef.arr)
        + tlv(0x80, len(content).to_bytes(2, "big"))
        + sfi
    )
    return tlv(0x62, body)


def pin_status(enabled: list[tuple[int, bool]]) -> bytes:
    """'C6': PS_DO (one bit per key reference, b8 first: enabled) then the key references."""
    ps_do = 0
    for i, (_ref, on) in enumerate(enabled):
        if on:
            ps_do |= 0x80 >> i
    refs = b"".join(tlv(0x83, bytes((ref,))) for ref, _on in enabled)
    return tlv(0xC6, tlv(0x90, bytes((ps_do,))) + refs)


def df_fcp(fid: int, aid: bytes | None, pins: list[tuple[int, bool]], size: int) -> bytes:
    proprietary = tlv(0xA5, tlv(0x80, UICC_CHARACTERISTICS)) if fid == FID_MF else b""
    body = (
        tlv(0x82, bytes((0x78, DATA_CODING)))  # DF or ADF, shareable
        + tlv(0x83, fid.to_bytes(2, "big"))
        + (tlv(0x84, aid) if aid is not None else b"")
        + proprietary
        + tlv(0x8A, OPERATIONAL_ACTIVATED)
        + _security(ARR_DF)
        + pin_status(pins)
        + tlv(0x81, size.to_bytes(2, "big"))
    )
    return tlv(0x62, body)
