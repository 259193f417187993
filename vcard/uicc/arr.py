"""Access rules in EF.ARR, expanded format (ETSI TS 102 221 §9.2.4, ISO/IEC 7816-4 §9.3).

A record is a sequence of access-mode data objects ('80', one AM byte) each followed by the
security-condition data object that guards the operations of its AM byte: '90 00' always,
'97 00' never, 'A4' a control reference template naming a key reference ('83') with its usage
qualifier ('95' 08: user authentication, knowledge based), 'A0' any one of its conditions,
'AF' all of them. The card evaluates the record named by a file's '8B' security attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from shared.iso7816 import Tlv, decode_tlv, tlv

# AM byte bits for EFs (ISO/IEC 7816-4 Table 17)
AM_READ: Final = 0x01  # READ BINARY / READ RECORD / SEARCH
AM_UPDATE: Final = 0x02  # UPDATE BINARY / UPDATE RECORD
AM_DEACTIVATE: Final = 0x08
AM_ACTIVATE: Final = 0x10
AM_DF_ALL: Final = 0x7F  # a DF's delete/create/deactivate/activate/terminate bits

KEY_PIN1: Final = 0x01  # PIN Appl 1, global (TS 102 221 Table 9.3)
KEY_PIN2: Final = 0x81  # second application PIN, local to the ADF
KEY_ADM1: Final = 0x0A  # first administrative key
USER_AUTH_PIN: Final = 0x08  # usage qualifier: user authentication, knowledge based

ALWAYS: Final = tlv(0x90, b"")
NEVER: Final = tlv(0x97, b"")


def key(reference: int) -> bytes:
    """The SC DO 'A4' asking that the key `reference` be verified."""
    return tlv(0xA4, tlv(0x83, bytes((reference,))) + tlv(0x95, bytes((USER_AUTH_PIN,))))


def rule(*pairs: tuple[int, bytes]) -> bytes:
    """One EF.ARR record's body: (AM byte, SC DO) pairs."""
    return b"".join(tlv(0x80, bytes((am,))) + sc for am, sc in pairs)


ADM = key(KEY_ADM1)
LIFECYCLE = AM_DEACTIVATE | AM_ACTIVATE
# The records of the MF's EF.ARR (record number -> rule); files name them in their FCP '8B'.
RECORDS: Final[dict[int, bytes]] = {
    1: rule((AM_READ, ALWAYS), (AM_UPDATE, NEVER), (LIFECYCLE, ADM)),
    2: rule((AM_READ, ALWAYS), (AM_UPDATE, ADM), (LIFECYCLE, ADM)),
    3: rule((AM_READ, key(KEY_PIN1)), (AM_UPDATE, ADM), (LIFECYCLE, ADM)),
    4: rule((AM_READ, key(KEY_PIN1)), (AM_UPDATE, key(KEY_PIN1)), (LIFECYCLE, ADM)),
    5: rule((AM_READ, ALWAYS), (AM_UPDATE, key(KEY_PIN1)), (LIFECYCLE, ADM)),
    6: rule((AM_READ, key(KEY_PIN1)), (AM_UPDATE, key(KEY_PIN2)), (LIFECYCLE, ADM)),
    7: rule((AM_DF_ALL, ADM)),  # the MF and the ADF: only the administrator changes them
}
RECORD_LENGTH: Final = 40


def arr_content() -> bytes:
    return b"".join(RECORDS[n].ljust(RECORD_LENGTH, b"\xff") for n in sorted(RECORDS))


def _condition(sc: Tlv, granted: Callable[[int], bool]) -> bool:
    if sc.tag == 0x90:
        return True
    if sc.tag == 0xA4:
        refs = [c.value for c in sc.children if c.tag == 0x83]
        return len(refs) == 1 and len(refs[0]) == 1 and granted(refs[0][0])
    if sc.tag == 0xA0:
        return any(_condition(c, granted) for c in sc.children)
    if sc.tag == 0xAF:
        return bool(sc.children) and all(_condition(c, granted) for c in sc.children)
    return False  # '97' never, and anything this card does not know


def allowed(record: bytes, operation: int, granted: Callable[[int], bool]) -> bool:
    """Whether `operation` (an AM bit) is allowed by this EF.ARR record, given which key
    references the security status grants. No access mode for it: never."""
    body = record.rstrip(b"\xff")
    try:
        items = decode_tlv(body)
    except ValueError:
        return False
    for am, sc in zip(items[::2], items[1::2], strict=False):
        if am.tag == 0x80 and len(am.value) == 1 and am.value[0] & operation:
            return _condition(sc, granted)
    return False
