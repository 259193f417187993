"""The fault suite's print check (tests/support/fault_check.py printed_twice) on fabricated rows:
one print job and one card.printed per card passes; a second of either, for one card, is a card
printed twice."""

from __future__ import annotations

from typing import Any

from tests.support.fault_check import printed_twice

A, B = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def printed(*cards: str) -> list[tuple[str, str | None, Any]]:
    return [("card.printed", card, {}) for card in cards]


def test_one_print_job_and_one_card_printed_per_card_is_no_double() -> None:
    events = [*printed(A, B), ("card.encoded", A, {}), ("card.encoded", A, {}), ("x", None, {})]
    assert printed_twice([A, B], events) == set()


def test_a_second_print_job_for_one_card_is_a_double() -> None:
    assert printed_twice([A, B, A], printed(A, B)) == {A}


def test_a_second_card_printed_for_one_card_is_a_double() -> None:
    assert printed_twice([A, B], printed(A, B, B)) == {B}


def test_a_double_seen_only_in_the_events_counts_without_a_print_job() -> None:
    assert printed_twice([], printed(A, A)) == {A}
