"""The UICC's file tree (ETSI TS 102 221 §13, 3GPP TS 31.102 §4.2) and default contents.

Every EF's contents live in the card's NVM (CardState.dgis) under one tag: the DGI that
personalisation writes it with (docs/sim.md, "DGIs"), or an NVM-only tag (DFxx) for files the
handset keeps up to date (LOCI, Keys, ...). After the last STORE DATA the card gives every file
that personalisation did not write its initial contents (`initial_contents`), as a card
manufacturer's profile does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from shared.iso7816 import tlv
from vcard.uicc.arr import RECORD_LENGTH as ARR_RECORD_LENGTH
from vcard.uicc.arr import arr_content

# RID A000000087 (3GPP), PIX 1002 = USIM, then country and provider fields (here the bureau's).
USIM_AID: Final = bytes.fromhex("A0000000871002FFFFFFFF8907090000")
USIM_LABEL: Final = b"USIM"
FID_MF: Final = 0x3F00
FID_ADF: Final = 0x7FFF  # the current ADF (TS 102 221 §8.3)
FID_ARR: Final = 0x2F06
ARR_DF: Final = 7  # the EF.ARR record of the MF and the ADF

Structure = Literal["transparent", "linear"]

# Personalisation DGIs that are file contents (docs/perso-protocol.md, "SIM products").
DGI_ICCID: Final = 0x0201
DGI_IMSI: Final = 0x0202
DGI_AD: Final = 0x0203
DGI_SPN: Final = 0x0204
DGI_HPPLMN: Final = 0x0205
DGI_FPLMN: Final = 0x0206
DGI_ACC: Final = 0x0207
DGI_UST: Final = 0x0208
DGI_EST: Final = 0x0209
DGI_PL: Final = 0x020A
DGI_MSISDN: Final = 0x020B
DGI_SMSP: Final = 0x020C
DGI_ECC: Final = 0x020D


@dataclass(frozen=True)
class Ef:
    """An elementary file: where it is, how it is built and who may read or update it."""

    fid: int
    name: str
    tag: int  # where its contents live in the card's NVM
    arr: int  # its EF.ARR record
    sfi: int | None = None
    structure: Structure = "transparent"
    record_length: int = 0
    size: int | None = None  # fixed size in bytes (transparent), None: what was written


MF_FILES: Final = (
    Ef(0x2F00, "EF.DIR", 0xDF10, 2, sfi=0x1E, structure="linear", record_length=0x20),
    Ef(0x2FE2, "EF.ICCID", DGI_ICCID, 1, sfi=0x02, size=10),
    Ef(0x2F05, "EF.PL", DGI_PL, 5, sfi=0x05),
    Ef(FID_ARR, "EF.ARR", 0xDF11, 2, sfi=0x06, structure="linear", record_length=ARR_RECORD_LENGTH),
)
USIM_FILES: Final = (
    Ef(0x6F07, "EF.IMSI", DGI_IMSI, 3, sfi=0x07, size=9),
    Ef(0x6F08, "EF.Keys", 0xDF12, 4, sfi=0x08, size=33),
    Ef(0x6F09, "EF.KeysPS", 0xDF13, 4, sfi=0x09, size=33),
    Ef(0x6F31, "EF.HPPLMN", DGI_HPPLMN, 3, sfi=0x12, size=1),
    Ef(0x6F38, "EF.UST", DGI_UST, 3, sfi=0x04),
    Ef(0x6F40, "EF.MSISDN", DGI_MSISDN, 4, structure="linear", record_length=14),
    Ef(0x6F42, "EF.SMSP", DGI_SMSP, 4, structure="linear", record_length=28),
    Ef(0x6F46, "EF.SPN", DGI_SPN, 2, size=17),
    Ef(0x6F56, "EF.EST", DGI_EST, 6, sfi=0x05),
    Ef(0x6F5B, "EF.START-HFN", 0xDF14, 4, sfi=0x0F, size=6),
    Ef(0x6F5C, "EF.THRESHOLD", 0xDF15, 3, sfi=0x10, size=3),
    Ef(0x6F73, "EF.PSLOCI", 0xDF16, 4, sfi=0x0C, size=14),
    Ef(0x6F78, "EF.ACC", DGI_ACC, 3, sfi=0x06, size=2),
    Ef(0x6F7B, "EF.FPLMN", DGI_FPLMN, 4, sfi=0x0D),
    Ef(0x6F7E, "EF.LOCI", 0xDF17, 4, sfi=0x0B, size=11),
    Ef(0x6FAD, "EF.AD", DGI_AD, 2, sfi=0x03),
    Ef(0x6FB7, "EF.ECC", DGI_ECC, 2, sfi=0x01, structure="linear", record_length=4),
    Ef(0x6FC4, "EF.NETPAR", 0xDF18, 4, size=16),
)
ALL_FILES: Final = MF_FILES + USIM_FILES
# File contents personalisation may write: DGI -> the file
PERSO_FILES: Final = {ef.tag: ef for ef in ALL_FILES if ef.tag < 0xDF00}

# USIM service table (TS 31.102 §4.2.8): service n is bit (n-1)%8 of byte (n-1)//8.
SERVICE_SMSP: Final = 12
SERVICE_SPN: Final = 19
SERVICE_MSISDN: Final = 21


def service_table(services: set[int]) -> bytes:
    table = bytearray((max(services, default=1) - 1) // 8 + 1)
    for n in services:
        table[(n - 1) // 8] |= 1 << ((n - 1) % 8)
    return bytes(table)


def ef_dir() -> bytes:
    """EF.DIR's first record: the USIM's application template (TS 102 221 §13.1)."""
    template = tlv(0x61, tlv(0x4F, USIM_AID) + tlv(0x50, USIM_LABEL))
    return template.ljust(0x20, b"\xff") + b"\xff" * 0x20


def acc_of_imsi(imsi_digits: str) -> bytes:
    """EF.ACC: the access class 0-9 drawn from the IMSI's last digit (TS 22.011 §4.2)."""
    bit = 1 << int(imsi_digits[-1])
    return bit.to_bytes(2, "big")


INITIAL: Final[dict[int, bytes]] = {
    0xDF10: ef_dir(),
    DGI_PL: b"en" + b"\xff" * 8,  # English, then four free entries
    0xDF11: arr_content(),
    0xDF12: b"\x07" + b"\xff" * 32,  # KSI 07: no key available (TS 31.102 §4.2.3)
    0xDF13: b"\x07" + b"\xff" * 32,
    DGI_HPPLMN: b"\x05",  # a higher priority PLMN search every 30 minutes
    DGI_UST: service_table({SERVICE_SMSP, SERVICE_MSISDN}),
    DGI_MSISDN: b"\xff" * 14,
    DGI_SMSP: b"\xff" * 28,
    DGI_SPN: b"\xff" * 17,
    DGI_EST: b"\x00",  # no FDN, BDN or APN control list enabled
    0xDF14: bytes.fromhex("F00000F00000"),  # START-HFN at its initial value
    0xDF15: b"\xff" * 3,  # THRESHOLD: the maximum
    0xDF16: b"\xff" * 7 + b"\xff" * 3 + bytes.fromhex("FFFEFF01"),  # no P-TMSI, RAUS not updated
    DGI_FPLMN: b"\xff" * 12,  # four free entries
    0xDF17: b"\xff" * 4 + b"\xff" * 3 + bytes.fromhex("FFFEFF01"),  # no TMSI, not updated
    DGI_ECC: bytes.fromhex("11F2FF00") + bytes.fromhex("19F1FF00"),  # 112 and 911
    0xDF18: b"\xff" * 16,
}


def initial_contents(imsi_digits: str) -> dict[int, bytes]:
    """The contents of every file personalisation left unwritten (ACC follows the IMSI)."""
    return INITIAL | {DGI_ACC: acc_of_imsi(imsi_digits)}
