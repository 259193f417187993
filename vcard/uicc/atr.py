"""The UICC's Answer To Reset (ETSI TS 102 221 §6.3, coded per ISO/IEC 7816-3 §8 and the
historical bytes per ISO/IEC 7816-4 §8.1.1).

    3B      TS  direct convention
    9C      T0  TA1 and TD1 follow; 12 historical bytes
    95      TA1 Fi=512, Di=16: the speed enhancement every UICC supports (TS 102 221 §6.3.2)
    80      TD1 TD2 follows; T=0 (the UICC's protocol, §7)
    1F      TD2 TA3 follows; T=15: global interface bytes
    C6      TA3 clock stop supported, no preferred level; classes B and C (3 V and 1.8 V, §6.2.1)
    80 ...  historical bytes: category indicator 80 (COMPACT-TLV), then
            31 E0       card service data: selection by full and by partial DF name, EF.DIR
                        holds the applications' BER-TLV records, the card has an MF
            73 F6 21 00 card capabilities: selection by DF name (full, partial), by path, by
                        FID; SFI and record numbers supported; data coding byte 21 (one-byte
                        data units); no command chaining, extended lengths or logical channels
            64 43 42 56 43  pre-issuing data: the chip maker and type, as in the CPLC ("CB", "VC")
    xx      TCK (present: a protocol other than T=0 is indicated, ISO/IEC 7816-3 §8.2.5)

The class indicator agrees with the MF's UICC characteristics in its FCP (fcp.py).
"""

from __future__ import annotations

from typing import Final

CLOCK_STOP_NO_PREFERENCE: Final = 0xC0  # X = 11 (ISO/IEC 7816-3 §8.3, first TA for T=15)
CLASS_B: Final = 0x02  # 3 V (TS 102 221 Table 6.1)
CLASS_C: Final = 0x04  # 1.8 V
CLASS_INDICATOR: Final = CLOCK_STOP_NO_PREFERENCE | CLASS_B | CLASS_C

CARD_SERVICE_DATA: Final = bytes((0x31, 0xE0))
CARD_CAPABILITIES: Final = bytes((0x73, 0xF6, 0x21, 0x00))
PRE_ISSUING_DATA: Final = bytes((0x64,)) + b"CBVC"
HISTORICAL_BYTES: Final = b"\x80" + CARD_SERVICE_DATA + CARD_CAPABILITIES + PRE_ISSUING_DATA

TA1_SPEED: Final = 0x95  # FI=9 (F=512), DI=5 (D=16)
TD1_T0: Final = 0x80  # TD2 present, protocol T=0
TD2_T15: Final = 0x1F  # TA3 present, T=15 (global interface bytes)


def _tck(body: bytes) -> int:
    check = 0
    for byte in body:
        check ^= byte
    return check


def uicc_atr() -> bytes:
    t0 = 0x90 | len(HISTORICAL_BYTES)  # Y1: TA1 and TD1; K historical bytes
    body = bytes((t0, TA1_SPEED, TD1_T0, TD2_T15, CLASS_INDICATOR)) + HISTORICAL_BYTES
    return b"\x3b" + body + bytes((_tck(body),))


UICC_ATR: Final = uicc_atr()
