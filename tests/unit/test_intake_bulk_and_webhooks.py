"""intake's pure parts: splitting a streamed file into numbered lines, checking a line,
the sealed spool, webhook signatures and backoff, and batch planning."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import date

import pytest

from services.intake.bulk import BadHeader, Spool, check_line, csv_header, numbered_lines
from services.intake.service import plan_batches
from services.intake.webhooks import SecretBox, backoff, sign, verify

TODAY = date(2026, 11, 24)
HEADER = csv_header(b"pan,expiry,cardholder_name,address_line1,postcode,city,country")


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_lines_are_numbered_across_chunk_boundaries_and_long_lines_dropped() -> None:
    body = chunks(b"one\r\ntw", b"o\n", b"x" * 50 + b"\nthree", b"")
    got = [item async for item in numbered_lines(body, max_line=10)]
    assert got == [(1, b"one"), (2, b"two"), (3, None), (4, b"three")]


def test_a_csv_line_is_a_card_or_named_problems_without_its_values() -> None:
    good, problems = check_line(
        2, "csv", HEADER, b"4111111111111111,2911,ADA LOVELACE,1 Main St,1000,Brussels,BE", TODAY
    )
    assert good is not None
    assert problems == []
    card, problems = check_line(
        3, "csv", HEADER, b"4111111111111112,2001,ADA LOVELACE,1 Main St,1000,Brussels,BE", TODAY
    )
    assert {(p.line, p.field) for p in problems} == {(3, "pan"), (3, "expiry")}
    assert all("4111111111111112" not in p.problem for p in problems)


def test_a_bad_header_names_what_is_missing_and_unknown() -> None:
    with pytest.raises(BadHeader, match="missing column.*expiry.*unknown column.*colour"):
        csv_header(b"pan,colour,cardholder_name,address_line1,postcode,city,country")


def test_the_spool_gives_back_its_chunks_and_keeps_no_clear_pan_on_disk() -> None:
    spool = Spool()
    spool.write([{"pan": "4111111111111111", "line": 2}])
    spool.write([{"pan": "5555555555554444", "line": 3}])
    spool._file.seek(0)
    assert b"4111111111111111" not in spool._file.read()
    assert [c[0]["line"] for c in spool.read()] == [2, 3]
    spool.close()


def test_a_signature_verifies_only_with_the_secret_body_and_a_fresh_timestamp() -> None:
    now = int(time.time())
    header = sign("s" * 32, now, b'{"a":1}')
    assert verify("s" * 32, header, b'{"a":1}', now)
    assert not verify("t" * 32, header, b'{"a":1}', now)
    assert not verify("s" * 32, header, b'{"a":2}', now)
    assert not verify("s" * 32, header, b'{"a":1}', now + 301)
    assert not verify("s" * 32, "garbage", b'{"a":1}', now)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n, 2.0, 20.0) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 20.0]


def test_a_sealed_secret_opens_only_for_its_issuer() -> None:
    box = SecretBox("key")
    blob = box.seal("bank-a", "whsec_x")
    assert box.open("bank-a", blob) == "whsec_x"
    with pytest.raises(ValueError, match="authentication"):
        box.open("bank-b", blob)


def test_orders_are_grouped_per_product_by_priority_without_splitting_an_order() -> None:
    o = [uuid.uuid4() for _ in range(4)]
    rows = [
        {"issuer_id": "a", "product_id": "debit", "priority": 9, "order_id": o[0], "waiting": 3},
        {"issuer_id": "a", "product_id": "debit", "priority": 0, "order_id": o[1], "waiting": 2},
        {"issuer_id": "a", "product_id": "debit", "priority": 0, "order_id": o[2], "waiting": 4},
        {"issuer_id": "a", "product_id": "sim", "priority": 5, "order_id": o[3], "waiting": 1},
    ]
    runs = plan_batches(rows, max_cards=5)
    assert [(r.product_id, r.priority, r.card_count, r.orders) for r in runs] == [
        ("debit", 9, 5, [o[0], o[1]]),
        ("sim", 5, 1, [o[3]]),
        ("debit", 0, 4, [o[2]]),
    ]
