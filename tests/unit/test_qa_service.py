"""QA domain logic: the CDOL1 QA sends with GENERATE AC, the card's answer, the terminal APDUs,
(the print-image check: test_qa_print.py)."""

from __future__ import annotations

from datetime import date

import pytest

from services.qa.service import (
    QaFailure,
    Transaction,
    chip_serial_from_cplc,
    generate_ac,
    parse_generate_ac,
    read_record,
    unpredictable_number,
)
from shared.iso7816 import CommandAPDU
from vcard.store import build_cplc

UN = bytes.fromhex("3804823E")


def test_cdol1_is_the_29_bytes_of_the_perso_protocol_in_bcd() -> None:
    cdol1 = Transaction(1000, "0826", "0978", date(2025, 11, 24)).cdol1(UN)
    assert cdol1.hex().upper() == (
        "000000001000"  # amount authorised, n12: 10.00
        "000000000000"  # amount other
        "0826"  # terminal country
        "0000000000"  # TVR: every terminal check passed
        "0978"  # transaction currency
        "251124"  # transaction date YYMMDD
        "00"  # transaction type: purchase
        "3804823E"  # unpredictable number
    )
    assert len(cdol1) == 29


def test_cdol1_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="BCD"):
        Transaction(10**12).cdol1(UN)
    with pytest.raises(ValueError, match="4 bytes"):
        Transaction().cdol1(b"\x01\x02")


def test_the_unpredictable_number_is_fresh_each_time() -> None:
    numbers = {unpredictable_number() for _ in range(50)}
    assert len(numbers) == 50
    assert all(len(n) == 4 for n in numbers)


def test_terminal_apdus_are_those_of_the_perso_protocol() -> None:
    assert read_record(1) == bytes.fromhex("00B2010C00")
    assert read_record(2) == bytes.fromhex("00B2020C00")
    cdol1 = Transaction(day=date(2025, 1, 2)).cdol1(UN)
    command = CommandAPDU.parse(generate_ac(cdol1))
    assert (command.cla, command.ins, command.p1, command.p2) == (0x80, 0xAE, 0x80, 0x00)
    assert (command.data, command.le) == (cdol1, 256)


def test_the_generate_ac_answer_must_be_an_arqc_in_format_1() -> None:
    answer = bytes.fromhex("800B80") + bytes.fromhex("0007") + bytes(range(8))
    cryptogram = parse_generate_ac(answer)
    assert (cryptogram.cid, cryptogram.atc, cryptogram.arqc) == (0x80, b"\x00\x07", bytes(range(8)))
    with pytest.raises(QaFailure, match="not an ARQC"):
        parse_generate_ac(bytes.fromhex("800B00") + bytes(10))
    with pytest.raises(QaFailure, match="format 1"):
        parse_generate_ac(bytes.fromhex("770B80") + bytes(10))


def test_the_chip_serial_is_read_from_the_cplc() -> None:
    cplc = build_cplc(bytes.fromhex("CAFEBABE"), bytes.fromhex("0002"))
    assert chip_serial_from_cplc(bytes.fromhex("9F7F2A") + cplc, 0x9000) == "CAFEBABE0002"
    with pytest.raises(QaFailure, match="6D00"):
        chip_serial_from_cplc(b"", 0x6D00)
