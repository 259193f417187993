"""The auditor API of the Merkle log: entries, tree head, checkpoints, inclusion and
consistency proofs (RFC 9162 section 2.1), and the checkpoint status the auditor page shows."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from services.audit.checkpoint import Checkpoint
from services.audit.deps import AuditDeps, AuditDepsDep
from services.audit.merkle import consistency_ranges, inclusion_ranges, verify_consistency
from services.audit.signer import SignerError
from services.audit.tree_repository import MerkleStore, StoredCheckpoint, TreeGapError
from shared.auth import Principal, require
from shared.checkpoint_note import NoteError
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.service import RuntimeDep, ServiceRuntime

router = APIRouter(prefix="/v1/log", tags=["log"])
Auditor = Annotated[Principal, Depends(require("auditor", "admin"))]
MAX_ENTRIES = 1000


def _bureau_wide(principal: Principal) -> None:
    """The log spans every issuer: its entries are for bureau auditors only."""
    if principal.issuer_id is not None:
        raise Forbidden("issuer auditors cannot read this")


def _gap(exc: TreeGapError) -> Conflict:
    return Conflict(f"the log is damaged: {exc}")


async def _tree_covers(store: MerkleStore, *sizes: int) -> None:
    built = await store.tree_size()
    for size in sizes:
        if size > built:
            raise Conflict(f"the tree covers {built} entries, not {size}")


@router.get("/tree", summary="The log and tree sizes, and the current (unsigned) root")
async def tree_head(principal: Auditor, runtime: RuntimeDep) -> dict[str, Any]:
    async with runtime.unit_of_work() as uow:
        store: MerkleStore = uow.repo.tree
        size = await store.tree_size()
        try:
            root = await store.root(size)
        except TreeGapError as exc:
            raise _gap(exc) from exc
        return {"tree_size": size, "root_hash": root.hex(), "log_size": await store.log_size()}


@router.get("/entries", summary="Log entries [start, end) as stored (at most 1000)")
async def log_entries(
    principal: Auditor,
    runtime: RuntimeDep,
    start: Annotated[int, Query(ge=0)],
    end: Annotated[int, Query(ge=0)],
) -> dict[str, Any]:
    _bureau_wide(principal)
    if not start <= end <= start + MAX_ENTRIES:
        raise Invalid(f"want start <= end <= start + {MAX_ENTRIES}")
    async with runtime.unit_of_work() as uow:
        entries: list[dict[str, Any]] = await uow.repo.tree.entries(start, end)
    return {"entries": entries}


@router.get("/checkpoints", summary="Signed checkpoints, newest first")
async def list_checkpoints(
    principal: Auditor,
    runtime: RuntimeDep,
    before: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    async with runtime.unit_of_work() as uow:
        found = await uow.repo.tree.checkpoints(before=before, limit=limit)
    return {"checkpoints": [c.view() for c in found]}


async def _checkpoint(runtime: ServiceRuntime, tree_size: int | None) -> StoredCheckpoint:
    async with runtime.unit_of_work() as uow:
        store: MerkleStore = uow.repo.tree
        if tree_size is None:
            found = await store.checkpoints(limit=1)
            checkpoint = found[0] if found else None
        else:
            checkpoint = await store.checkpoint(tree_size)
    if checkpoint is None:
        raise NotFound("no such checkpoint")
    return checkpoint


@router.get("/checkpoints/latest", summary="The newest signed checkpoint")
async def latest_checkpoint(principal: Auditor, runtime: RuntimeDep) -> dict[str, Any]:
    return (await _checkpoint(runtime, None)).view()


@router.get("/checkpoints/{tree_size}", summary="The checkpoint of one tree size")
async def get_checkpoint(tree_size: int, principal: Auditor, runtime: RuntimeDep) -> dict[str, Any]:
    return (await _checkpoint(runtime, tree_size)).view()


@router.get("/proofs/inclusion", summary="Audit path of an entry in the tree of tree_size")
async def inclusion_proof(
    principal: Auditor,
    runtime: RuntimeDep,
    tree_size: Annotated[int, Query(ge=1)],
    log_index: Annotated[int | None, Query(ge=0)] = None,
    event_id: UUID | None = None,
) -> dict[str, Any]:
    async with runtime.unit_of_work() as uow:
        store: MerkleStore = uow.repo.tree
        if event_id is not None:
            found = await store.log_index_of(event_id)
            if found is None or principal.issuer_id not in (None, found[1]):
                raise NotFound("no such log entry")
            log_index = found[0]
        elif log_index is None:
            raise Invalid("give log_index or event_id")
        else:
            _bureau_wide(principal)
        if log_index >= tree_size:
            raise Invalid(f"entry {log_index} is not in a tree of {tree_size}")
        await _tree_covers(store, tree_size)
        try:
            path = await store.range_hashes(inclusion_ranges(log_index, tree_size))
        except TreeGapError as exc:
            raise _gap(exc) from exc
    return {
        "log_index": log_index,
        "tree_size": tree_size,
        "audit_path": [h.hex() for h in path],
    }


@router.get("/proofs/consistency", summary="Proof that tree `first` is a prefix of `second`")
async def consistency_proof(
    principal: Auditor,
    runtime: RuntimeDep,
    first: Annotated[int, Query(ge=0)],
    second: Annotated[int, Query(ge=0)],
) -> dict[str, Any]:
    if first > second:
        raise Invalid("first must not exceed second")
    async with runtime.unit_of_work() as uow:
        store: MerkleStore = uow.repo.tree
        await _tree_covers(store, second)
        try:
            proof = await store.range_hashes(consistency_ranges(first, second))
        except TreeGapError as exc:
            raise _gap(exc) from exc
    return {"first": first, "second": second, "proof": [h.hex() for h in proof]}


async def _note_problems(newest: StoredCheckpoint, deps: AuditDeps) -> list[str]:
    """keymgmt's signature and the witness's cosignature on the stored note."""
    try:
        checkpoint = Checkpoint.from_view(newest.view())
    except NoteError as exc:
        return [f"not a C2SP checkpoint: {exc}"]
    problems: list[str] = []
    try:
        if not checkpoint.signed_by(await deps.signer.vkey(newest.origin)):
            problems.append("the signature does not verify with keymgmt's public key")
        if deps.witness is None:
            problems.append("no witness is configured: the checkpoint is not cosigned")
        elif checkpoint.cosigned_at(await deps.witness.vkey()) is None:
            problems.append("the witness's cosignature is missing or does not verify")
    except SignerError as exc:
        problems.append(f"a key is unavailable: {exc}")
    return problems


@router.get("/checkpoints/latest/status", summary="Is the newest checkpoint sound? (page)")
async def checkpoint_status(
    principal: Auditor, runtime: RuntimeDep, deps: AuditDepsDep
) -> dict[str, Any]:
    """The service's own check, for the auditor page: keymgmt's signature, the witness's
    cosignature, the signed root against the stored tree, consistency with the checkpoint
    before. Auditors who trust nothing run `python -m services.audit.verify` instead."""
    async with runtime.unit_of_work() as uow:
        store: MerkleStore = uow.repo.tree
        latest = await store.checkpoints(limit=2)
        if not latest:
            return {"checkpoint": None, "ok": False, "problems": ["no checkpoint yet"]}
        newest, previous = latest[0], (latest[1] if len(latest) > 1 else None)
        problems = await _note_problems(newest, deps)
        try:
            if (await store.root(newest.tree_size)).hex() != newest.root_hash:
                problems.append("the stored tree does not have the signed root")
            if previous is not None:
                ranges = consistency_ranges(previous.tree_size, newest.tree_size)
                proof = await store.range_hashes(ranges)
                old, new = (bytes.fromhex(c.root_hash) for c in (previous, newest))
                if not verify_consistency(previous.tree_size, newest.tree_size, old, new, proof):
                    problems.append("not consistent with the checkpoint before")
        except TreeGapError as exc:
            problems.append(f"the log is damaged: {exc}")
        log_size = await store.log_size()
    return {
        "checkpoint": newest.view(),
        "previous_tree_size": None if previous is None else previous.tree_size,
        "log_size": log_size,
        "ok": not problems,
        "problems": problems,
    }
