"""The ICC key pool's audit events: their shapes, what they refuse, and emit_draws (one
`icc_key_pair.drawn` per card, naming the pair by the SHA-256 of its modulus, nothing private)."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest

from services.keymgmt.emv.icc_pool import emit_draws, fingerprint
from services.keymgmt.hsm.storage import ICC_POOL_KEY
from shared import events

MODULUS = bytes(range(1, 129))  # a 1024-bit modulus' length; its value does not matter here
FP = hashlib.sha256(MODULUS).hexdigest()


class _Uow:
    """Collects what a transaction would put in the outbox."""

    def __init__(self) -> None:
        self.emitted: list[events.Event] = []

    async def emit(self, event: events.Event, topic: str | None = None) -> None:
        self.emitted.append(event)


def _refilled(**over: Any) -> events.IccKeyPoolRefilled:
    fields: dict[str, Any] = {
        "issuer_id": "bureau",
        "actor": "custodian:alice",
        "pool_key_label": ICC_POOL_KEY,
        "bits": 1024,
        "count": 2,
        "pool_ids": [7, 8],
        "fingerprints": [FP, "ab" * 32],
        "pool_size": 12,
    }
    return events.IccKeyPoolRefilled(**(fields | over))


def test_fingerprint_is_the_sha256_of_the_modulus() -> None:
    assert fingerprint(MODULUS) == FP
    assert len(FP) == 64


def test_refill_event_round_trips_and_is_a_declared_contract() -> None:
    event = _refilled()
    assert events.decode_event(events.encode_event(event)) == event
    assert {"icc_key_pool.refilled", "icc_key_pair.drawn"} <= set(events.event_types())
    assert event.partition_key() == str(event.event_id)  # no card: the pool is bureau-wide


def test_refill_event_refuses_counts_that_disagree() -> None:
    with pytest.raises(ValueError, match="count 3, 2 pool ids and 2 fingerprints must agree"):
        _refilled(count=3)
    with pytest.raises(ValueError, match="fingerprints"):
        _refilled(fingerprints=[FP, "not-a-digest"])
    with pytest.raises(ValueError, match="bits"):
        _refilled(bits=64)


def test_draw_event_refuses_a_private_part_or_a_bad_fingerprint() -> None:
    base: dict[str, Any] = {
        "issuer_id": "acme",
        "actor": "keymgmt",
        "card_id": uuid.uuid4(),
        "pool_id": 7,
        "pool_key_label": ICC_POOL_KEY,
        "fingerprint": FP,
    }
    drawn = events.IccKeyPairDrawn(**base)
    assert drawn.partition_key() == str(base["card_id"])  # keyed with the card's other events
    with pytest.raises(ValueError, match="Extra inputs"):
        events.IccKeyPairDrawn(**base, wrapped="00" * 64)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="fingerprint"):
        events.IccKeyPairDrawn(**(base | {"fingerprint": MODULUS.hex()}))
    with pytest.raises(ValueError, match="pool_id"):
        events.IccKeyPairDrawn(**(base | {"pool_id": 0}))


async def test_emit_draws_names_each_card_its_pair_and_nothing_private() -> None:
    uow = _Uow()
    cards = [uuid.uuid4(), uuid.uuid4()]
    other = bytes(reversed(MODULUS))
    await emit_draws(uow, [(cards[0], "acme", 7, MODULUS), (cards[1], "zeta", 9, other)], "km")
    drawn = [e for e in uow.emitted if isinstance(e, events.IccKeyPairDrawn)]
    assert [(e.card_id, e.issuer_id, e.pool_id, e.fingerprint) for e in drawn] == [
        (cards[0], "acme", 7, FP),
        (cards[1], "zeta", 9, hashlib.sha256(other).hexdigest()),
    ]
    assert all(e.actor == "km" and e.pool_key_label == ICC_POOL_KEY for e in drawn)
    payload = json.loads(events.encode_event(drawn[0]))
    assert MODULUS.hex() not in json.dumps(payload)
    assert set(payload) == {
        "event_id",
        "type",
        "version",
        "occurred_at",
        "issuer_id",
        "actor",
        "trace",
        "card_id",
        "pool_id",
        "pool_key_label",
        "fingerprint",
    }


async def test_emit_draws_of_no_card_emits_nothing() -> None:
    uow = _Uow()
    await emit_draws(uow, [], "km")
    assert uow.emitted == []
