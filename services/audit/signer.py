"""Audit checkpoints signed by keymgmt (the HSM's only door), through the shared keymgmt client.

keymgmt signs only a tree that extends the last one it signed (its own record), so each request
carries the RFC 9162 consistency proof from that size, which audit first asks keymgmt for.
Every note is checked against keymgmt's public key before a checkpoint is stored, so a
misconfigured or substituted signer can never produce a checkpoint auditors would reject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.audit.checkpoint import ALGORITHM, log_vkey, public_key_id
from shared.checkpoint_note import NoteError, SignedNote, Vkey, parse_note, verify_with
from shared.keymgmt.contract import (
    CheckpointSignature,
    CheckpointToSign,
    LastSignedCheckpoint,
    SigningPublicKey,
)
from shared.keymgmt.errors import KeymgmtError


class SignerError(RuntimeError):
    """keymgmt (or the witness) did not sign, or answered something unusable: the checkpoint
    waits a round."""


class CheckpointSigning(Protocol):
    """keymgmt's checkpoint-signing endpoints (shared/keymgmt/client.py), tried once: the
    Merkle keeper tries again next round."""

    async def checkpoint_public_key(self) -> SigningPublicKey: ...

    async def last_signed_checkpoint(self, origin: str) -> LastSignedCheckpoint | None: ...

    async def sign_checkpoint(self, request: CheckpointToSign) -> CheckpointSignature: ...


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    public_key_pem: str


class KeymgmtSigner:
    """keymgmt's signing key as audit trusts it: the public key is checked against its key id
    and algorithm once, then kept."""

    def __init__(self, keymgmt: CheckpointSigning) -> None:
        self._keymgmt = keymgmt
        self._key: SigningKey | None = None

    async def public_key(self) -> SigningKey:
        if self._key is None:
            try:
                answer = await self._keymgmt.checkpoint_public_key()
            except KeymgmtError as exc:
                raise SignerError(str(exc)) from exc
            pem, key_id = answer.public_key_pem, answer.key_id
            if public_key_id(pem) != key_id or answer.algorithm != ALGORITHM:
                raise SignerError("keymgmt's public key does not match its key id or algorithm")
            self._key = SigningKey(key_id, pem)
        return self._key

    async def vkey(self, origin: str) -> Vkey:
        return log_vkey(origin, (await self.public_key()).public_key_pem)

    async def last_signed(self, origin: str) -> tuple[int, bytes] | None:
        """keymgmt's record of the newest checkpoint it signed (size, root)."""
        try:
            last = await self._keymgmt.last_signed_checkpoint(origin)
        except KeymgmtError as exc:
            raise SignerError(str(exc)) from exc
        return None if last is None else (last.tree_size, bytes.fromhex(last.root_hash))

    async def sign(
        self, origin: str, tree_size: int, root: bytes, old_size: int, proof: list[bytes]
    ) -> SignedNote:
        """keymgmt writes the checkpoint text from these fields itself and signs that."""
        request = CheckpointToSign(
            origin=origin,
            tree_size=tree_size,
            root_hash=root.hex(),
            old_size=old_size,
            proof=[h.hex() for h in proof],
        )
        vkey = await self.vkey(origin)
        try:
            answer = await self._keymgmt.sign_checkpoint(request)
            note = parse_note(answer.note)
            body = note.body()
        except KeymgmtError as exc:
            raise SignerError(str(exc)) from exc
        except NoteError as exc:
            raise SignerError(f"keymgmt's note is not a checkpoint: {exc}") from exc
        if (body.origin, body.tree_size, body.root_hash) != (origin, tree_size, root):
            raise SignerError("keymgmt signed another checkpoint than the one asked for")
        if verify_with(note, vkey) is None:
            raise SignerError("keymgmt's signature does not verify with its public key")
        return note
