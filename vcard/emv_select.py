"""Application selection on the card (EMV 4.3 Book 1 §11.3, §12.2-12.3): the PSE with its
directory in SFI 1, the PPSE with its directory in the FCI (EMV Contactless Book B), and the
application's FCI per interface. Built from the installed application's AID and the label and
priority of DGIs 9102/9103; the card holds no separate directory DGIs.
"""

from __future__ import annotations

from typing import Final

from shared.iso7816 import tlv
from vcard.emv_data import Interface

PSE_NAME: Final = b"1PAY.SYS.DDF01"
PPSE_NAME: Final = b"2PAY.SYS.DDF01"
PSE_DIRECTORY_SFI: Final = 1


def directory_entry(aid: bytes, face: Interface) -> bytes:
    """'61' application template: '4F' AID, '50' label, '87' priority (Book 1 §12.2.3)."""
    body = tlv(0x4F, aid)
    if face.label:
        body += tlv(0x50, face.label)
    if face.priority is not None:
        body += tlv(0x87, face.priority)
    return tlv(0x61, body)


def pse_fci() -> bytes:
    return tlv(0x6F, tlv(0x84, PSE_NAME) + tlv(0xA5, tlv(0x88, bytes((PSE_DIRECTORY_SFI,)))))


def pse_record(aid: bytes, contact: Interface) -> bytes:
    return tlv(0x70, directory_entry(aid, contact))


def ppse_fci(aid: bytes, contactless: Interface) -> bytes:
    entry = directory_entry(aid, contactless)
    return tlv(0x6F, tlv(0x84, PPSE_NAME) + tlv(0xA5, tlv(0xBF0C, entry)))


def application_fci(aid: bytes, face: Interface) -> bytes:
    return tlv(0x6F, tlv(0x84, aid) + tlv(0xA5, face.fci_proprietary))
