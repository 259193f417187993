"""`python -m services.audit.verify`: the auditors' verifier. It trusts the keys it is given
(keymgmt's PEM public key and the witness's C2SP vkey, obtained out of band) and its own memory
of the checkpoints it saw before (a local file), and nothing the audit service says: every
checkpoint must carry keymgmt's signature AND the witness's cosignature, every leaf hash is
recomputed from the entry itself, every proof is verified with the RFC 9162 algorithms, each
new checkpoint must be consistent with the largest one remembered (else the log forked), and
`audit` recomputes every reconciled or closed batch from the entries (replay.py).

    verify --url URL --public-key key.pem --witness-vkey VKEY [--state FILE] \
           checkpoint [--tree-size N]
    verify ... inclusion (--log-index I | --event-id UUID) [--tree-size N]
    verify ... consistency --first M [--second N]
    verify ... audit [--tree-size N]   every entry, every older checkpoint, every batch

The bearer token comes from --token or BUREAU_AUDITOR_TOKEN. Prints a JSON report; exit status
0 when everything verified, 1 when anything did not, 2 when the API could not be used. Only a
run that verified everything adds its checkpoints to the state file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.audit.chain import canonical_json
from services.audit.checkpoint import Checkpoint, log_vkey
from services.audit.merkle import extend, fold, hash_leaf, verify_consistency, verify_inclusion
from services.audit.replay import Replay
from services.audit.verify_state import SeenCheckpoints, default_state_path
from shared.checkpoint_note import NoteError, Vkey, parse_vkey

PAGE = 1000


class ApiError(RuntimeError):
    """The API did not answer usably (not a verification failure in itself)."""


@dataclass
class Report:
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


class Verifier:
    def __init__(
        self,
        api: httpx.AsyncClient,
        log_key: Vkey,
        witnesses: Sequence[Vkey],
        seen: SeenCheckpoints,
    ) -> None:
        if not witnesses:
            raise ValueError("the verifier requires at least one witness vkey")
        self.api, self.log_key, self.witnesses, self.seen = api, log_key, list(witnesses), seen
        self.report = Report()
        self.verified: dict[int, str] = {}

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        query = {k: v for k, v in params.items() if v is not None}
        response = await self.api.get(path, params=query)
        if response.status_code == 404:
            raise LookupError(f"{path} {query}: not found")
        if response.status_code != 200:
            raise ApiError(f"{path} answered {response.status_code}: {response.text[:300]}")
        body: dict[str, Any] = response.json()
        return body

    def _fail(self, problem: str) -> None:
        self.report.problems.append(problem)

    async def checkpoint(self, tree_size: int | None = None) -> Checkpoint | None:
        """A checkpoint signed by the log's key and cosigned by every given witness, and
        consistent with what this verifier saw before."""
        which = "latest" if tree_size is None else str(tree_size)
        view = await self.get(f"/v1/log/checkpoints/{which}")
        where = f"checkpoint {view.get('tree_size')}"
        try:
            checkpoint = Checkpoint.from_view(view)
        except (NoteError, KeyError, ValueError) as exc:
            self._fail(f"{where}: {exc}")
            return None
        if checkpoint.origin != self.log_key.name or not checkpoint.signed_by(self.log_key):
            self._fail(f"{where}: not signed by the log key {self.log_key.name} given")
            return None
        for witness in self.witnesses:
            if checkpoint.cosigned_at(witness) is None:
                self._fail(f"{where}: no valid cosignature of witness {witness.name}")
                return None
        if not await self._consistent_with_seen(checkpoint):
            return None
        if checkpoint.tree_size not in self.verified:
            self.report.checks.append(
                f"{where}: signed and cosigned by {len(self.witnesses)} witness(es)"
                f" (root {checkpoint.root_hash})"
            )
        self.verified[checkpoint.tree_size] = checkpoint.root_hash
        return checkpoint

    async def _consistent_with_seen(self, checkpoint: Checkpoint) -> bool:
        """The largest checkpoint remembered and this one are one history (a fork otherwise)."""
        seen = self.seen.largest()
        if seen is None:
            return True
        (size, root), n = seen, checkpoint.tree_size
        if size == n:
            ok = root == checkpoint.root_hash
        else:
            (a, root_a), (b, root_b) = sorted([(size, root), (n, checkpoint.root_hash)])
            try:
                proof = await self.get("/v1/log/proofs/consistency", first=a, second=b)
            except (ApiError, LookupError) as exc:  # e.g. the tree no longer reaches `size`
                self._fail(f"fork: the log gives no proof from {a} to {b} ({exc})")
                return False
            hashes = [bytes.fromhex(h) for h in proof["proof"]]
            ok = verify_consistency(a, b, bytes.fromhex(root_a), bytes.fromhex(root_b), hashes)
        if not ok:
            self._fail(
                f"fork: checkpoint {n} (root {checkpoint.root_hash}) is not consistent with"
                f" checkpoint {size} (root {root}) this verifier saw before"
            )
        return ok

    async def entry_leaf(self, log_index: int) -> tuple[bytes, dict[str, Any]] | None:
        entries = (await self.get("/v1/log/entries", start=log_index, end=log_index + 1))["entries"]
        if not entries or entries[0]["log_index"] != log_index:
            self._fail(f"entry {log_index} is missing from the log")
            return None
        payload = entries[0]["payload"]
        return hash_leaf(canonical_json(payload)), payload

    async def inclusion(
        self, *, log_index: int | None, event_id: str | None, tree_size: int | None
    ) -> None:
        checkpoint = await self.checkpoint(tree_size)
        if checkpoint is None:
            return
        proof = await self.get(
            "/v1/log/proofs/inclusion",
            tree_size=checkpoint.tree_size,
            log_index=log_index,
            event_id=event_id,
        )
        index = int(proof["log_index"])
        found = await self.entry_leaf(index)
        if found is None:
            return
        leaf, payload = found
        if event_id is not None and payload.get("event_id") != event_id:
            self._fail(f"entry {index} is event {payload.get('event_id')}, not {event_id}")
            return
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        root = bytes.fromhex(checkpoint.root_hash)
        if verify_inclusion(index, checkpoint.tree_size, leaf, path, root):
            self.report.checks.append(
                f"entry {index} ({payload.get('type')}) is in checkpoint {checkpoint.tree_size}"
            )
        else:
            self._fail(f"entry {index} as stored is not in checkpoint {checkpoint.tree_size}")

    async def consistency(self, first: int, second: int | None) -> None:
        old, new = await self.checkpoint(first), await self.checkpoint(second)
        if old is None or new is None:
            return
        proof = await self.get(
            "/v1/log/proofs/consistency", first=old.tree_size, second=new.tree_size
        )
        hashes = [bytes.fromhex(h) for h in proof["proof"]]
        roots = bytes.fromhex(old.root_hash), bytes.fromhex(new.root_hash)
        if verify_consistency(old.tree_size, new.tree_size, *roots, hashes):
            self.report.checks.append(f"checkpoint {old.tree_size} is a prefix of {new.tree_size}")
        else:
            self._fail(f"checkpoint {old.tree_size} is not consistent with {new.tree_size}")

    async def audit(self, tree_size: int | None) -> None:
        """Every entry of the checkpoint, rehashed into the root and replayed into the batches'
        reconciliation; then every older checkpoint proved a prefix of it."""
        checkpoint = await self.checkpoint(tree_size)
        if checkpoint is None:
            return
        n, frontier, size, replay = checkpoint.tree_size, list[bytes](), 0, Replay()
        while size < n:
            page = await self.get("/v1/log/entries", start=size, end=min(size + PAGE, n))
            leaves: list[bytes] = []
            for entry in page["entries"]:
                if entry["log_index"] != size + len(leaves):
                    break
                leaves.append(hash_leaf(canonical_json(entry["payload"])))
                replay.add(entry["payload"])
            if not leaves:
                self._fail(f"entry {size} is missing: the log holds fewer than {n} entries")
                return
            frontier, size, _ = extend(frontier, size, leaves)
        if fold(frontier).hex() != checkpoint.root_hash:
            self._fail(f"the {n} entries do not hash to the signed root: the log was altered")
            return
        self.report.checks.append(f"all {n} entries hash to the signed root")
        checks, problems = replay.verdicts()
        self.report.checks += checks
        self.report.problems += problems
        await self._older_checkpoints(n)

    async def _older_checkpoints(self, n: int) -> None:
        before: int | None = n
        while before:
            page = (await self.get("/v1/log/checkpoints", before=before, limit=100))["checkpoints"]
            for older in page:
                if str(older.get("note", "")).startswith("cardbureau audit checkpoint v1"):
                    self.report.checks.append(
                        f"checkpoint {older['tree_size']}: pre-C2SP, not witnessed; skipped"
                    )
                    continue
                await self.consistency(int(older["tree_size"]), n)
            before = int(page[-1]["tree_size"]) if page else None

    def remember(self) -> None:
        """After a run that verified everything: the checkpoints join the local memory."""
        if self.report.ok:
            for size, root in self.verified.items():
                self.seen.remember(size, root)
            self.seen.save()


async def run(verifier: Verifier, command: str, args: argparse.Namespace) -> Report:
    try:
        if command == "checkpoint":
            await verifier.checkpoint(args.tree_size)
        elif command == "inclusion":
            await verifier.inclusion(
                log_index=args.log_index, event_id=args.event_id, tree_size=args.tree_size
            )
        elif command == "consistency":
            await verifier.consistency(args.first, args.second)
        else:
            await verifier.audit(args.tree_size)
    except LookupError as exc:
        verifier.report.problems.append(str(exc))
    verifier.remember()
    return verifier.report


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.audit.verify", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8107", help="the audit service")
    parser.add_argument("--token", default=os.environ.get("BUREAU_AUDITOR_TOKEN"))
    parser.add_argument("--public-key", type=Path, required=True, help="keymgmt's key (PEM)")
    parser.add_argument("--origin", default="cardbureau/audit", help="the log's origin")
    parser.add_argument(
        "--witness-vkey",
        action="append",
        required=True,
        help="a witness's C2SP vkey (repeat: every one must have cosigned)",
    )
    parser.add_argument("--state", type=Path, default=None, help="checkpoints seen before")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("checkpoint", "audit"):
        commands.add_parser(name).add_argument("--tree-size", type=int)
    inclusion = commands.add_parser("inclusion")
    inclusion.add_argument("--tree-size", type=int)
    which = inclusion.add_mutually_exclusive_group(required=True)
    which.add_argument("--log-index", type=int)
    which.add_argument("--event-id")
    consistency = commands.add_parser("consistency")
    consistency.add_argument("--first", type=int, required=True)
    consistency.add_argument("--second", type=int)
    return parser.parse_args(argv)


async def amain(argv: Sequence[str], transport: httpx.AsyncBaseTransport | None = None) -> int:
    args = parse_args(argv)
    if not args.token:
        raise SystemExit("give --token or set BUREAU_AUDITOR_TOKEN")
    try:
        log_key = log_vkey(args.origin, args.public_key.read_text())
        witnesses = [parse_vkey(v) for v in args.witness_vkey]
    except ValueError as exc:  # NoteError too
        raise SystemExit(f"a key given is unusable: {exc}") from exc
    seen = SeenCheckpoints(args.state or default_state_path(), args.origin)
    headers = {"Authorization": f"Bearer {args.token}"}
    client = httpx.AsyncClient(
        base_url=args.url, headers=headers, timeout=30.0, transport=transport
    )
    async with client as api:
        verifier = Verifier(api, log_key, witnesses, seen)
        try:
            report = await run(verifier, args.command, args)
        except (ApiError, httpx.HTTPError) as exc:
            print(json.dumps({"ok": False, "error": str(exc)}))  # noqa: T201 (CLI output)
            return 2
    print(json.dumps(report.as_dict(), indent=2))  # noqa: T201 (CLI output)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(amain(sys.argv[1:])))
