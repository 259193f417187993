"""The witness's rule (c2sp.org/tlog-witness, add-checkpoint), without HTTP.

A request is an `old <size>` line, up to 63 base64 consistency-proof lines, a blank line and a
signed checkpoint. The witness answers with a cosignature/v1 line only if: the origin is one
it witnesses (else 404); a trusted log key signed it (else 403); old <= size (else 400); old is
the size it last cosigned (else 409, body = that size); the same size has the same root (else
409); the RFC 9162 proof from its own stored root verifies (else 422, and the request is kept
as evidence). Checking and storing happen under one lock, so no two requests interleave.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.audit.witness.store import Cosigned, WitnessStore
from shared.checkpoint_note import (
    NoteError,
    NoteSignature,
    SignedNote,
    Vkey,
    cosignature,
    cosigned_message,
    cosigner_vkey,
    parse_note,
    verify_with,
)
from shared.tlog_proofs import MAX_PROOF_HASHES, verify_consistency

log = logging.getLogger(__name__)
MAX_REQUEST = 64 * 1024
_OLD = re.compile(r"^old (0|[1-9][0-9]{0,18})$")


class WitnessRefusal(Exception):
    """Not cosigned: the HTTP status the protocol names, and what was wrong."""

    def __init__(self, status: int, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.size = size  # for 409 on a stale old size: the size last cosigned


def parse_request(body: bytes) -> tuple[int, list[bytes], SignedNote]:
    if len(body) > MAX_REQUEST:
        raise WitnessRefusal(400, f"the request is over {MAX_REQUEST} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WitnessRefusal(400, "the request is not UTF-8") from exc
    head, sep, note_text = text.partition("\n\n")
    lines = head.split("\n")
    match = _OLD.match(lines[0])
    if not sep or match is None:
        raise WitnessRefusal(400, "the request starts with 'old <size>', proof lines, a blank line")
    if len(lines) - 1 > MAX_PROOF_HASHES:
        raise WitnessRefusal(400, f"more than {MAX_PROOF_HASHES} consistency proof lines")
    try:
        proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
        note = parse_note(note_text)
        note.body()
    except (binascii.Error, ValueError) as exc:  # NoteError is a ValueError
        raise WitnessRefusal(400, f"malformed request: {exc}") from exc
    if any(len(h) != 32 for h in proof):
        raise WitnessRefusal(400, "a consistency proof line is not a 32-byte hash")
    return int(match.group(1)), proof, note


class Witness:
    def __init__(
        self,
        name: str,
        key: Ed25519PrivateKey,
        logs: dict[str, list[Vkey]],
        store: WitnessStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.vkey = cosigner_vkey(name, public)
        self._key, self._logs, self._store, self._clock = key, logs, store, clock
        self._lock = asyncio.Lock()

    async def add_checkpoint(self, body: bytes) -> NoteSignature:
        old, proof, note = parse_request(body)
        checkpoint = note.body()
        origin = checkpoint.origin
        keys = self._logs.get(origin)
        if not keys:
            raise WitnessRefusal(404, f"origin {origin!r} is not a log this witness follows")
        if not any(verify_with(note, vkey) is not None for vkey in keys):
            raise WitnessRefusal(403, f"no trusted key of {origin!r} signed the checkpoint")
        if old > checkpoint.tree_size:
            raise WitnessRefusal(400, f"old size {old} is over the size {checkpoint.tree_size}")
        async with self._lock:
            last = self._store.latest(origin)
            last_size = 0 if last is None else last.tree_size
            if old != last_size:
                raise WitnessRefusal(409, f"last cosigned size is {last_size}", size=last_size)
            last_root = b"" if last is None else last.root_hash
            size, root = checkpoint.tree_size, checkpoint.root_hash
            if last is not None and size == last_size and root != last_root:
                self._store.keep_evidence(origin, "same size, other root", body)
                raise WitnessRefusal(409, f"size {size} was cosigned with another root hash")
            if not verify_consistency(last_size, size, last_root, root, proof):
                self._store.keep_evidence(origin, "consistency proof failed", body)
                log.warning("refused an inconsistent checkpoint", extra={"origin": origin})
                raise WitnessRefusal(
                    422, f"tree {size} is not proved consistent with tree {last_size}"
                )
            signature = self.cosign(note.text)
            if last is None or size > last_size:
                self._store.save(origin, Cosigned(size, root, note.adding(signature).render()))
        return signature

    def cosign(self, text: str) -> NoteSignature:
        stamp = int(self._clock())
        raw = self._key.sign(cosigned_message(text, stamp))
        return cosignature(self.vkey, stamp, raw)

    def latest(self, origin: str) -> str | None:
        found = self._store.latest(origin)
        return None if found is None else found.note


__all__ = ["NoteError", "Witness", "WitnessRefusal", "parse_request"]
