"""QA domain logic: the terminal's transaction data as the kernel puts it in the card's DOLs,
the chip identity (the print-image check: test_qa_print.py; the EMV check: test_qa_emv_check.py
and test_emv_kernel.py)."""

from __future__ import annotations

from datetime import date

import pytest

from services.qa.emv.dol import build_dol_data, parse_dol, split_dol_data
from services.qa.emv.kernel import TerminalConfig
from services.qa.service import QaFailure, Transaction, chip_serial_from_cplc
from vcard.store import build_cplc

UN = bytes.fromhex("3804823E")
# CDOL1 of docs/perso-protocol.md: the 29 bytes keymgmt's ARQC verification takes.
CDOL1 = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")


def test_cdol1_data_is_the_29_bytes_of_the_perso_protocol_in_bcd() -> None:
    config = TerminalConfig(
        {}, 1000, bytes.fromhex("0826"), bytes.fromhex("0978"), today=date(2025, 11, 24)
    )
    data = build_dol_data(parse_dol(CDOL1), config.values(UN))
    assert data.hex().upper() == (
        "000000001000"  # amount authorised, n12: 10.00
        "000000000000"  # amount other
        "0826"  # terminal country
        "0000000000"  # TVR: every terminal check passed
        "0978"  # transaction currency
        "251124"  # transaction date YYMMDD
        "00"  # transaction type: purchase
        "3804823E"  # unpredictable number
    )
    assert split_dol_data(parse_dol(CDOL1), data)[0x9F37] == UN


def test_unknown_dol_elements_are_zeros_and_lengths_are_the_dols() -> None:
    """Book 3 §5.4: a contact terminal fills the contactless TTQ '9F66' with zeros."""
    dol = parse_dol(bytes.fromhex("9F66049F1A03DF810101"))
    assert dol == [(0x9F66, 4), (0x9F1A, 3), (0xDF8101, 1)]
    assert build_dol_data(dol, {0x9F1A: b"\x08\x26"}) == bytes(4) + b"\x08\x26\x00" + b"\x00"
    with pytest.raises(ValueError, match="ends inside"):
        parse_dol(bytes.fromhex("9F02069F"))


def test_the_transaction_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="n12"):
        Transaction(10**12)
    with pytest.raises(ValueError, match="currency is 4 digits"):
        Transaction(100, "0826", "EUR")


def test_the_chip_serial_is_read_from_the_cplc() -> None:
    cplc = build_cplc(bytes.fromhex("CAFEBABE"), bytes.fromhex("0002"))
    assert chip_serial_from_cplc(bytes.fromhex("9F7F2A") + cplc, 0x9000) == "CAFEBABE0002"
    with pytest.raises(QaFailure, match="6D00"):
        chip_serial_from_cplc(b"", 0x6D00)
