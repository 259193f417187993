"""The Merkle keeper: a background worker that extends the tree over new log entries and, at
the checkpoint interval, has keymgmt sign a checkpoint, stored and emitted as log.checkpoint."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

from services.audit.checkpoint import (
    Checkpoint,
    checkpoint_note,
    signature_valid,
    signing_time,
)
from services.audit.deps import AuditDeps
from services.audit.settings import AuditSettings
from services.audit.signer import KeymgmtSigner, SignerError
from services.audit.tree_repository import (
    MerkleStore,
    StoredCheckpoint,
    TreeGapError,
    build_tree,
)
from shared.events import LogCheckpoint
from shared.service import ServiceRuntime

log = logging.getLogger(__name__)

_CHECKPOINT_NAMESPACE = uuid.UUID("5d1c3a8e-2f4b-4c6d-8e9f-a0b1c2d3e4f5")


async def checkpoint_once(
    runtime: ServiceRuntime, settings: AuditSettings, signer: KeymgmtSigner
) -> StoredCheckpoint | None:
    """Sign the tree as it is now, unless nothing but checkpoints was logged since the last
    one. Returns the new checkpoint, if any."""
    await build_tree(runtime.engine, runtime.schema)
    key = await signer.public_key()
    origin = settings.log_origin
    async with runtime.unit_of_work() as uow:
        store: MerkleStore = uow.repo.tree
        size = await store.tree_size(lock=True)  # one signer at a time, however many replicas
        latest = await store.checkpoints(limit=1)
        if latest and (
            latest[0].tree_size >= size or not await store.news_since(latest[0].tree_size)
        ):
            return None
        root = (await store.root(size)).hex()
        at = signing_time(datetime.now(UTC))
        note = checkpoint_note(origin, size, root, at)
        signed = await signer.sign(origin, size, root, at)
        checkpoint = Checkpoint(origin, size, root, at, signed.signature, signed.key_id)
        if signed.key_id != key.key_id or not signature_valid(checkpoint, key.public_key_pem):
            raise SignerError("keymgmt's signature does not verify with its public key")
        stored = StoredCheckpoint(
            size, root, at, origin, note.decode(), signed.key_id, signed.algorithm, signed.signature
        )
        event = LogCheckpoint(
            event_id=uuid.uuid5(_CHECKPOINT_NAMESPACE, f"{origin}/{size}/{root}"),
            issuer_id=settings.bureau_issuer_id,
            actor="audit",
            occurred_at=at,
            tree_size=size,
            root_hash=root,
            signature=signed.signature,
        )
        await store.add_checkpoint(stored, event.event_id)
        await uow.emit(event)
    log.info("checkpoint signed", extra={"tree_size": size, "root_hash": root})
    return stored


async def keep_merkle_tree(runtime: ServiceRuntime) -> None:
    deps: AuditDeps = runtime.deps
    settings, signer = deps.settings, deps.signer
    loop = asyncio.get_running_loop()
    next_checkpoint = loop.time() + settings.tree_interval_seconds
    reported = ""
    while True:
        await asyncio.sleep(settings.tree_interval_seconds)
        try:
            await build_tree(runtime.engine, runtime.schema)
            if settings.checkpoint_interval_seconds and loop.time() >= next_checkpoint:
                next_checkpoint = loop.time() + settings.checkpoint_interval_seconds
                await checkpoint_once(runtime, settings, signer)
        except asyncio.CancelledError:
            raise
        except TreeGapError as exc:
            # Someone removed an entry behind the service's back: say so (once per gap),
            # never build over it; auditors' verifiers will find the same.
            if str(exc) != reported:
                log.error("the audit log is damaged: %s", exc)
                reported = str(exc)
        except SignerError as exc:
            # keymgmt down or refusing: the tree keeps growing, the next round signs it.
            log.warning("checkpoint not signed: %s", exc)
        except Exception:
            log.exception("merkle keeper round failed")
