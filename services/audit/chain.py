"""The hash chain over the event log: the first tamper-evidence step (no I/O here).

Each entry's leaf hash is the RFC 6962 leaf hash, SHA-256(0x00 || canonical JSON), so that the
signed Merkle checkpoints of a later step (RFC 9162 section 2.1) can be built over the same
leaves. The chain links them in log order: entry_hash = SHA-256(prev_hash || leaf_hash), with
32 zero bytes before the first entry. Changing, removing or reordering any stored entry changes
every entry_hash after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.events import Event

GENESIS_HASH = "0" * 64
_LEAF_PREFIX = b"\x00"


def event_document(event: Event) -> dict[str, Any]:
    """The JSON document stored for an event (contracts never carry a clear PAN)."""
    return event.model_dump(mode="json")


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the same bytes after a jsonb round trip
    (events hold strings, integers, booleans, lists and objects only; no floats)."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def leaf_hash(document: Mapping[str, Any]) -> str:
    return hashlib.sha256(_LEAF_PREFIX + canonical_json(document)).hexdigest()


def chain_hash(prev_hash: str, leaf: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + bytes.fromhex(leaf)).hexdigest()


@dataclass(frozen=True)
class ChainEntry:
    """What verification reads back from the log."""

    seq: int
    log_index: int
    payload: Mapping[str, Any]
    leaf_hash: str
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class ChainVerdict:
    checked: int
    last_index: int | None
    head_hash: str
    ok: bool
    first_bad_seq: int | None = None
    problem: str | None = None


def verify_chain(
    entries: Iterable[ChainEntry], *, prev_hash: str = GENESIS_HASH, next_index: int = 0
) -> ChainVerdict:
    """Recompute every hash from the stored payload; stop at the first entry that disagrees.

    `prev_hash` and `next_index` say where the range starts (the genesis for the whole log).
    """
    checked = 0
    last_index: int | None = None
    for entry in entries:
        problem = None
        if entry.log_index != next_index:
            problem = f"log index {entry.log_index}, expected {next_index} (entry missing)"
        elif entry.prev_hash != prev_hash:
            problem = "prev_hash does not link to the entry before"
        elif leaf_hash(entry.payload) != entry.leaf_hash:
            problem = "payload does not match its leaf hash (entry altered)"
        elif chain_hash(prev_hash, entry.leaf_hash) != entry.entry_hash:
            problem = "entry_hash does not match prev_hash and leaf hash"
        if problem is not None:
            return ChainVerdict(checked, last_index, prev_hash, False, entry.seq, problem)
        checked += 1
        last_index = entry.log_index
        prev_hash = entry.entry_hash
        next_index += 1
    return ChainVerdict(checked, last_index, prev_hash, True)
