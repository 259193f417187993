"""Fulfillment rules: destruction, card states, carrier ids
(services/fulfillment/service.py)."""

from __future__ import annotations

import re
import uuid

import pytest

from services.fulfillment.service import (
    CardState,
    DestructionRefused,
    carrier_id_for,
    check_destruction,
    state_after_packing,
    state_after_rejection,
)


def test_destruction_of_cards_all_awaiting_it_is_allowed() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    states: dict[uuid.UUID, CardState] = {a: "awaiting_destruction", b: "awaiting_destruction"}
    assert check_destruction([a, b], states) == [a, b]


def test_destruction_is_all_or_nothing() -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    states: dict[uuid.UUID, CardState] = {a: "awaiting_destruction", b: "packed"}
    with pytest.raises(DestructionRefused) as refused:
        check_destruction([a, b, c], states)
    assert refused.value.conflict
    assert len(refused.value.problems) == 2
    assert any(str(b) in p and "packed" in p for p in refused.value.problems)
    assert any(str(c) in p and "unknown" in p for p in refused.value.problems)


def test_a_card_named_twice_or_no_card_at_all_is_refused() -> None:
    a = uuid.uuid4()
    with pytest.raises(DestructionRefused, match="named twice"):
        check_destruction([a, a], {a: "awaiting_destruction"})
    with pytest.raises(DestructionRefused, match="no cards"):
        check_destruction([], {})


def test_only_a_card_seen_for_the_first_time_is_packed() -> None:
    assert state_after_packing(None) == "packed"
    for state in ("packed", "awaiting_destruction", "destroyed", "dispatched"):
        assert state_after_packing(state) is None


def test_a_reject_pulls_a_packed_card_but_not_a_dispatched_or_destroyed_one() -> None:
    assert state_after_rejection(None) == "awaiting_destruction"
    assert state_after_rejection("packed") == "awaiting_destruction"
    assert state_after_rejection("awaiting_destruction") is None
    assert state_after_rejection("dispatched") is None
    assert state_after_rejection("destroyed") is None


def test_carrier_id_follows_from_the_card_and_holds_no_long_digit_run() -> None:
    card = uuid.uuid4()
    carrier = carrier_id_for(card)
    assert carrier == carrier_id_for(card)
    assert carrier != carrier_id_for(uuid.uuid4())
    assert re.fullmatch(r"CR-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}", carrier)
