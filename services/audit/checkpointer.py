"""The Merkle keeper: a background worker that extends the tree over new log entries and, at
the checkpoint interval, has keymgmt sign a checkpoint, stored and emitted as log.checkpoint."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from datetime import UTC, datetime

from services.audit.checkpoint import ALGORITHM, Checkpoint
from services.audit.deps import AuditDeps
from services.audit.merkle import consistency_ranges
from services.audit.settings import AuditSettings
from services.audit.signer import KeymgmtSigner, SignerError
from services.audit.tree_repository import (
    MerkleStore,
    StoredCheckpoint,
    TreeGapError,
    build_tree,
)
from services.audit.witness_client import WitnessClient
from shared import outage
from shared.checkpoint_note import NoteError
from shared.events import LogCheckpoint
from shared.service import ServiceRuntime

log = logging.getLogger(__name__)

_CHECKPOINT_NAMESPACE = uuid.UUID("5d1c3a8e-2f4b-4c6d-8e9f-a0b1c2d3e4f5")


async def checkpoint_once(
    runtime: ServiceRuntime,
    settings: AuditSettings,
    signer: KeymgmtSigner,
    witness: WitnessClient | None = None,
) -> StoredCheckpoint | None:
    """Sign the tree as it is now (keymgmt, then the witness), unless nothing but checkpoints
    was logged since the last one. Returns the new checkpoint, if any."""
    await build_tree(runtime.engine, runtime.schema)
    origin = settings.log_origin
    async with runtime.unit_of_work() as uow:
        store: MerkleStore = uow.repo.tree
        size = await store.tree_size(lock=True)  # one signer at a time, however many replicas
        latest = await store.checkpoints(limit=1)
        if latest and (
            latest[0].tree_size >= size or not await store.news_since(latest[0].tree_size)
        ):
            return None
        stored = await sign_tree(store, origin, size, latest, signer, witness)
        root = stored.root_hash
        event = LogCheckpoint(
            event_id=uuid.uuid5(_CHECKPOINT_NAMESPACE, f"{origin}/{size}/{root}"),
            issuer_id=settings.bureau_issuer_id,
            actor="audit",
            occurred_at=stored.signed_at,
            tree_size=size,
            root_hash=root,
            signature=stored.signature,
        )
        await store.add_checkpoint(stored, event.event_id)
        await uow.emit(event)
    log.info("checkpoint signed", extra={"tree_size": size, "root_hash": root})
    return stored


async def sign_tree(
    store: MerkleStore,
    origin: str,
    size: int,
    latest: list[StoredCheckpoint],
    signer: KeymgmtSigner,
    witness: WitnessClient | None,
) -> StoredCheckpoint:
    """The tree of `size` signed by keymgmt (with the consistency proof from the last tree it
    signed) and cosigned by the witness (from the last it cosigned), as it is to be stored.
    The caller holds the tree_head lock."""
    root = await store.root(size)

    async def proof_from(old: int) -> list[bytes]:
        if old > size:
            raise SignerError(f"a checkpoint of size {old} was signed; the tree has {size}")
        return await store.range_hashes(consistency_ranges(old, size))

    last = await signer.last_signed(origin)
    old = 0 if last is None else last[0]
    note = await signer.sign(origin, size, root, old, await proof_from(old))
    if witness is not None:
        note = await witness.cosign(note, _witnessed_size(latest), proof_from)
    signature = note.signatures[0].signature  # keymgmt's line, verified by the signer
    key = await signer.public_key()
    return StoredCheckpoint(
        size,
        root.hex(),
        datetime.now(UTC),
        origin,
        note.render(),
        key.key_id,
        ALGORITHM,
        base64.b64encode(signature).decode(),
    )


def _witnessed_size(latest: list[StoredCheckpoint]) -> int:
    """The size of the newest stored checkpoint, which the witness cosigned (0 for none, or
    for one from before witnessing: the witness says its size if that guess is wrong)."""
    if not latest:
        return 0
    try:
        Checkpoint.from_view(latest[0].view())
    except NoteError:
        return 0
    return latest[0].tree_size


async def keep_merkle_tree(runtime: ServiceRuntime) -> None:
    deps: AuditDeps = runtime.deps
    settings, signer, witness = deps.settings, deps.signer, deps.witness
    loop = asyncio.get_running_loop()
    next_checkpoint = loop.time() + settings.tree_interval_seconds
    reported = ""
    signing = outage.named("checkpoint signing")
    while True:
        await asyncio.sleep(settings.tree_interval_seconds)
        try:
            await build_tree(runtime.engine, runtime.schema)
            if settings.checkpoint_interval_seconds and loop.time() >= next_checkpoint:
                next_checkpoint = loop.time() + settings.checkpoint_interval_seconds
                await checkpoint_once(runtime, settings, signer, witness)
                signing.up()
            outage.report_recovery()
        except asyncio.CancelledError:
            raise
        except TreeGapError as exc:
            # Someone removed an entry behind the service's back: say so (once per gap),
            # never build over it; auditors' verifiers will find the same.
            if str(exc) != reported:
                log.error("the audit log is damaged: %s", exc)
                reported = str(exc)
        except SignerError as exc:
            # keymgmt or the witness down or refusing (a refusal names why: a rewritten log
            # stays unsigned): the tree keeps growing, the next round tries again. Logged when
            # signing stops and when it works again, with how long and how many rounds.
            signing.down(f"checkpoint not signed: {exc}")
        except Exception as exc:
            if not outage.report_failure(exc):  # the database away: one line down, one back
                log.exception("merkle keeper round failed")
