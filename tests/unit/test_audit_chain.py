"""The hash chain over the audit log: recomputable from stored payloads, broken by any change."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from uuid import uuid4

from services.audit.chain import (
    GENESIS_HASH,
    ChainEntry,
    canonical_json,
    chain_hash,
    event_document,
    leaf_hash,
    verify_chain,
)
from shared.events import CardPrepared, StockIssued


def chain_of(count: int) -> list[ChainEntry]:
    entries: list[ChainEntry] = []
    prev = GENESIS_HASH
    for index in range(count):
        event = StockIssued(
            issuer_id="bank-ä", actor="olga", batch_id=uuid4(), product_id="p", quantity=index + 1
        )
        # What Postgres hands back from jsonb: the same document, keys in another order.
        document = json.loads(json.dumps(event_document(event), sort_keys=False))
        leaf = leaf_hash(document)
        entry = chain_hash(prev, leaf)
        entries.append(ChainEntry(index * 2 + 1, index, document, leaf, prev, entry))
        prev = entry
    return entries


def test_leaf_hash_is_the_rfc6962_leaf_of_the_canonical_json() -> None:
    event = CardPrepared(
        issuer_id="bank-a",
        actor="keymgmt",
        card_id=uuid4(),
        batch_id=uuid4(),
        product_id="p",
        masked_pan="411111******1111",
        application="emv",
        key_scheme="EMV-OPTION-A",
    )
    document = event_document(event)
    canonical = canonical_json(document)
    assert canonical == canonical_json(dict(reversed(list(document.items()))))
    assert b" " not in canonical.replace(b"EMV-OPTION-A", b"")
    assert leaf_hash(document) == hashlib.sha256(b"\x00" + canonical).hexdigest()


def test_an_untouched_chain_verifies_and_reports_its_head() -> None:
    entries = chain_of(5)
    verdict = verify_chain(entries)
    assert verdict.ok
    assert verdict.checked == 5
    assert verdict.head_hash == entries[-1].entry_hash
    assert verdict.last_index == 4


def test_a_range_verifies_from_the_entry_before_it() -> None:
    entries = chain_of(5)
    verdict = verify_chain(entries[2:], prev_hash=entries[1].entry_hash, next_index=2)
    assert verdict.ok
    assert verdict.checked == 3


def test_an_altered_payload_is_found() -> None:
    entries = chain_of(4)
    altered = {**entries[2].payload, "quantity": 999}
    entries[2] = replace(entries[2], payload=altered)
    verdict = verify_chain(entries)
    assert not verdict.ok
    assert verdict.first_bad_seq == entries[2].seq
    assert verdict.checked == 2
    assert verdict.problem is not None
    assert "altered" in verdict.problem


def test_a_removed_entry_is_found() -> None:
    entries = chain_of(4)
    del entries[1]
    verdict = verify_chain(entries)
    assert not verdict.ok
    assert verdict.first_bad_seq == entries[1].seq


def test_a_rehashed_entry_no_longer_links_to_the_next() -> None:
    entries = chain_of(3)
    forged = {**entries[0].payload, "quantity": 2}
    leaf = leaf_hash(forged)
    entries[0] = replace(
        entries[0], payload=forged, leaf_hash=leaf, entry_hash=chain_hash(GENESIS_HASH, leaf)
    )
    verdict = verify_chain(entries)
    assert not verdict.ok
    assert verdict.first_bad_seq == entries[1].seq
