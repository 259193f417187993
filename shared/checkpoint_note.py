"""The text of an audit checkpoint, the one thing keymgmt signs for audit (docs/audit.md).

Both sides build it from the fields: audit to ask for a signature and to verify one, keymgmt to
sign it, so the HSM key only ever signs well-formed checkpoint statements, never a bare digest.

    cardbureau audit checkpoint v1
    origin <the log's name>
    tree_size <n>
    root_hash <MTH of the first n entries, hex>
    timestamp <UTC, ISO 8601 with milliseconds>
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

HEADER = "cardbureau audit checkpoint v1"


def signing_time(at: datetime) -> datetime:
    """Checkpoint times carry milliseconds, so they survive storage and JSON unchanged."""
    at = at.astimezone(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def checkpoint_note(origin: str, tree_size: int, root_hash: str, at: datetime) -> bytes:
    if "\n" in origin or not origin:
        raise ValueError("the origin is one non-empty line")
    stamp = signing_time(at).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    lines = [HEADER, f"origin {origin}", f"tree_size {tree_size}"]
    lines += [f"root_hash {root_hash}", f"timestamp {stamp}"]
    return ("\n".join(lines) + "\n").encode()


def note_digest(note: bytes) -> bytes:
    return hashlib.sha256(note).digest()
