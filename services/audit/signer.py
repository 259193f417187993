"""Audit checkpoints signed by keymgmt (the HSM's only door), through the shared keymgmt client.

Every signature is checked against the public key before a checkpoint is stored, so a
misconfigured or substituted signer can never produce a checkpoint auditors would reject.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.audit.checkpoint import ALGORITHM, public_key_id
from shared.keymgmt.contract import CheckpointSignature, CheckpointToSign, SigningPublicKey
from shared.keymgmt.errors import KeymgmtError


class SignerError(RuntimeError):
    """keymgmt did not sign, or answered something unusable: the checkpoint waits a round."""


class CheckpointSigning(Protocol):
    """keymgmt's checkpoint-signing endpoints (shared/keymgmt/client.py), tried once: the
    Merkle keeper tries again next round."""

    async def checkpoint_public_key(self) -> SigningPublicKey: ...

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

    async def sign(
        self, origin: str, tree_size: int, root_hash: str, at: datetime
    ) -> CheckpointSignature:
        """keymgmt builds the checkpoint text from these fields itself and signs that."""
        request = CheckpointToSign(
            origin=origin, tree_size=tree_size, root_hash=root_hash, timestamp=at
        )
        try:
            return await self._keymgmt.sign_checkpoint(request)
        except KeymgmtError as exc:
            raise SignerError(str(exc)) from exc
