"""Station domain logic: chip identity from the CPLC, the APDU trace that never carries data,
spoil reasons, and the claim order (oldest batch first, then arrival)."""

from __future__ import annotations

import uuid

import pytest

from services.electrical.service import (
    ApduTrace,
    QueuedCard,
    WrongCard,
    check_initialize_update,
    claim_order,
    describe_command,
    describe_failure,
    initialize_update,
    next_to_claim,
    parse_cplc_response,
)
from vcard.store import build_cplc, chip_serial_of, diversification_data

CPLC = build_cplc(bytes.fromhex("1A2B3C4D"), bytes.fromhex("0001"))
SECRET = bytes.fromhex("4761739001010010D25122011234567890ABCDEF00112233")


def test_chip_identity_comes_from_the_cplc_as_the_card_factory_lays_it_out() -> None:
    chip = parse_cplc_response(bytes.fromhex("9F7F2A") + CPLC, 0x9000)
    assert chip.chip_serial == "1A2B3C4D0001" == chip_serial_of(CPLC)
    assert chip.diversification_data == diversification_data(CPLC)
    assert chip.diversification_data.hex().upper() == "434256431A2B3C4D0001"


@pytest.mark.parametrize(
    ("data", "sw", "why"),
    [
        (b"", 0x6A88, "answered 6A88 to GET DATA CPLC"),
        (bytes.fromhex("9F7F29") + CPLC[:41], 0x9000, "not 9F7F 2A"),
        (bytes.fromhex("9F7E2A") + CPLC, 0x9000, "not 9F7F 2A"),
    ],
)
def test_a_chip_without_a_proper_cplc_is_the_wrong_card(data: bytes, sw: int, why: str) -> None:
    with pytest.raises(WrongCard, match=why):
        parse_cplc_response(data, sw)


def test_the_apdu_trace_keeps_headers_and_status_words_only() -> None:
    trace = ApduTrace()
    store_data = bytes.fromhex("80E2080030") + SECRET
    trace.record(bytes.fromhex("00A4040007A000000003101000"), 0x9000)
    trace.record(store_data, 0x6581)
    trace.record(bytes.fromhex("80E28801") + b"\x10" + bytes(16), None)
    assert trace.tail() == ["00A40400 9000", "80E20800 6581", "80E28801 no-answer"]
    flat = "".join(trace.tail())
    assert SECRET.hex().upper() not in flat
    assert "4761739001010010" not in flat


def test_the_trace_keeps_the_newest_entries() -> None:
    trace = ApduTrace()
    for block in range(100):
        trace.record(bytes((0x80, 0xE2, 0x08, block)), 0x9000)
    tail = trace.tail()
    assert len(tail) == 64
    assert tail[-1] == "80E20863 9000"


def test_spoil_reasons_name_the_command_not_its_data() -> None:
    reason = describe_failure(bytes.fromhex("80E2880330") + SECRET, 0x6A80)
    assert reason == "card answered 6A80 to STORE DATA block 03 (last) (80E28803)"
    assert describe_failure(bytes.fromhex("00A4040007A000000003101000"), 0x6A82) == (
        "card answered 6A82 to SELECT (00A40400)"
    )


def card(batch_seq: int, seq: int) -> QueuedCard:
    return QueuedCard(uuid.uuid4(), uuid.uuid4(), batch_seq, seq, "acme", "acme-visa")


def test_claims_take_the_oldest_batch_first_then_arrival() -> None:
    a1, a2, b1, a3 = card(1, 10), card(1, 11), card(2, 12), card(1, 13)
    queue = [b1, a3, a2, a1]
    order = []
    while (best := next_to_claim(queue)) is not None:
        order.append(best)
        queue.remove(best)
    assert order == [a1, a2, a3, b1]
    assert claim_order(a3) < claim_order(b1)


def test_an_empty_queue_has_nothing_to_claim() -> None:
    assert next_to_claim([]) is None


def test_initialize_update_answers_are_checked_before_keymgmt_sees_them() -> None:
    chip = parse_cplc_response(bytes.fromhex("9F7F2A") + CPLC, 0x9000)
    div = diversification_data(CPLC)
    scp03 = div + bytes.fromhex("300300") + bytes(16)
    scp02 = div + bytes.fromhex("20020001") + bytes(14)
    assert check_initialize_update(scp03, 0x9000, chip) == scp03
    assert check_initialize_update(scp02, 0x9000, chip) == scp02
    with pytest.raises(WrongCard, match="6982 to INITIALIZE UPDATE"):
        check_initialize_update(scp03, 0x6982, chip)
    with pytest.raises(WrongCard, match="is 30 bytes"):
        check_initialize_update(scp03 + b"\x00", 0x9000, chip)
    other = bytes(10) + scp03[10:]
    with pytest.raises(WrongCard, match="other key diversification data"):
        check_initialize_update(other, 0x9000, chip)
    for unusable in (
        div + bytes.fromhex("300110") + bytes(16),  # SCP01 in an SCP03-sized answer
        div + bytes.fromhex("200300") + bytes(16),  # an SCP02 key version for SCP03
        div + bytes.fromhex("300310") + bytes(16),  # pseudo-random card challenge
        div + bytes.fromhex("30020001") + bytes(14),  # an SCP03 key version for SCP02
    ):
        with pytest.raises(WrongCard, match="the card offers SCP"):
            check_initialize_update(unusable, 0x9000, chip)
    command = initialize_update(bytes(range(8)))
    assert command.hex().upper() == "80500000080001020304050607" + "00"
    assert describe_command(command) == "INITIALIZE UPDATE"
