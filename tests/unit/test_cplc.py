"""shared/cplc.py: the chip's identity read from the CPLC exactly as the virtual card's factory
lays it out (vcard/store.py), from the raw 42 bytes (keymgmt) or a GET DATA answer (station, QA)."""

from __future__ import annotations

import pytest

from shared.cplc import CplcError, chip_identity, chip_identity_from_get_data
from vcard.store import build_cplc, chip_serial_of, diversification_data

CPLC = build_cplc(bytes.fromhex("CAFEBABE"), bytes.fromhex("0002"))


def test_the_identity_is_the_serial_and_the_diversification_data() -> None:
    chip = chip_identity(CPLC)
    assert chip.chip_serial == "CAFEBABE0002" == chip_serial_of(CPLC)
    assert chip.diversification_data == diversification_data(CPLC)
    assert chip_identity_from_get_data(bytes.fromhex("9F7F2A") + CPLC) == chip


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        bytes.fromhex("9F7F29") + CPLC[:41],
        bytes.fromhex("9F7E2A") + CPLC,
        bytes.fromhex("9F7F2A") + CPLC + b"\x00",
    ],
)
def test_an_answer_that_is_not_9f7f_2a_and_42_bytes_is_refused(answer: bytes) -> None:
    with pytest.raises(CplcError, match="not 9F7F 2A"):
        chip_identity_from_get_data(answer)


def test_a_cplc_is_42_bytes() -> None:
    with pytest.raises(CplcError, match="42 bytes"):
        chip_identity(CPLC[:41])
