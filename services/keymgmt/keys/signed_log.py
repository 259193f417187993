"""keymgmt's record of the audit checkpoints it signed, and the rule it signs by.

The audit log cannot be rewritten and re-signed through keymgmt: it signs a checkpoint only
when the tree does not go backwards and an RFC 9162 consistency proof, which keymgmt verifies
itself, shows the tree extends the last checkpoint it signed for that origin (its own record,
never audit's word). A same-size request with the same root gets the note already signed.
Refusals are named (Refusal codes in shared/keymgmt/contract.py) and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import text

from services.keymgmt.sql import SqlRepository
from shared.errors import Conflict, NotFound
from shared.keymgmt.contract import CheckpointToSign, Refusal
from shared.tlog_proofs import verify_consistency

log = logging.getLogger(__name__)


class CheckpointSizeBackwards(Conflict):
    refusal = Refusal.CHECKPOINT_SIZE_BACKWARDS


class CheckpointOldSizeMismatch(Conflict):
    refusal = Refusal.CHECKPOINT_OLD_SIZE_MISMATCH


class CheckpointInconsistent(Conflict):
    refusal = Refusal.CHECKPOINT_INCONSISTENT


class NothingSigned(NotFound):
    pass


@dataclass(frozen=True)
class SignedCheckpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    note: str


def check_extends(last: SignedCheckpoint | None, request: CheckpointToSign) -> None:
    """Refuse (named) unless the requested tree extends `last`, the newest checkpoint signed
    for the origin. With nothing signed yet, the first tree is taken as it is (old size 0)."""
    size, root = request.tree_size, bytes.fromhex(request.root_hash)
    last_size = 0 if last is None else last.tree_size
    where = f"origin {request.origin!r}"
    if size < last_size:
        raise CheckpointSizeBackwards(
            f"{where}: tree size {size} is smaller than {last_size}, the last one signed"
        )
    if request.old_size != last_size:
        raise CheckpointOldSizeMismatch(
            f"{where}: the proof is from size {request.old_size}, keymgmt last signed {last_size}"
        )
    proof = [bytes.fromhex(h) for h in request.proof]
    old_root = b"" if last is None else last.root_hash
    if not verify_consistency(last_size, size, old_root, root, proof):
        raise CheckpointInconsistent(
            f"{where}: tree {size} with root {request.root_hash} is not consistent with the"
            f" checkpoint of size {last_size} keymgmt signed (the log was rewritten, or the"
            " proof is wrong)"
        )


class SignedLogRepository(SqlRepository):
    async def lock(self, origin: str) -> None:
        """One signer per origin at a time (transaction-scoped), across replicas."""
        await self.conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"keymgmt.signed-checkpoint:{origin}"},
        )

    async def last(self, origin: str) -> SignedCheckpoint | None:
        row = await self._one(
            "SELECT origin, tree_size, root_hash, note FROM signed_checkpoints"
            " WHERE origin = :o ORDER BY tree_size DESC LIMIT 1",
            o=origin,
        )
        return None if row is None else _signed(row)

    async def at(self, origin: str, tree_size: int) -> SignedCheckpoint | None:
        row = await self._one(
            "SELECT origin, tree_size, root_hash, note FROM signed_checkpoints"
            " WHERE origin = :o AND tree_size = :n",
            o=origin,
            n=tree_size,
        )
        return None if row is None else _signed(row)

    async def record(self, signed: SignedCheckpoint, key_id: str, signed_for: str) -> None:
        await self.conn.execute(
            _INSERT,
            {
                "o": signed.origin,
                "n": signed.tree_size,
                "r": signed.root_hash,
                "note": signed.note,
                "k": key_id,
                "who": signed_for,
            },
        )


def _signed(row: dict[str, object]) -> SignedCheckpoint:
    return SignedCheckpoint(
        str(row["origin"]),
        int(str(row["tree_size"])),
        bytes(row["root_hash"]),  # type: ignore[call-overload]
        str(row["note"]),
    )


_INSERT = text(
    "INSERT INTO signed_checkpoints (origin, tree_size, root_hash, note, key_id, signed_for)"
    " VALUES (:o, :n, :r, :note, :k, :who)"
)
