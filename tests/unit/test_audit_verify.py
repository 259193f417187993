"""The auditors' verifier CLI, against a fake audit API that serves a log signed by a local
P-256 key and cosigned by a local witness key (the real API, HSM key and witness process:
tests/integration/test_audit_merkle.py, test_audit_witness.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.audit.chain import canonical_json
from services.audit.merkle import (
    consistency_ranges,
    extend,
    hash_leaf,
    inclusion_ranges,
    range_hash,
)
from services.audit.verify import amain
from shared.checkpoint_note import (
    NoteSignature,
    SignedNote,
    checkpoint_text,
    cosignature,
    cosigned_message,
    cosigner_vkey,
    ecdsa_vkey,
)
from tests.support.audit_story import BatchStory

ORIGIN = "test/log"
KEY = ec.generate_private_key(ec.SECP256R1())
PEM = KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
SPKI = KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
WITNESS = Ed25519PrivateKey.generate()
WITNESS_VKEY = cosigner_vkey(
    "witness.test/w1", WITNESS.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
)


def entries(n: int) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}", "type": "card.encoded", "n": i} for i in range(n)]


class FakeLog:
    def __init__(
        self,
        payloads: list[dict[str, Any]],
        signed_sizes: list[int],
        witness: Ed25519PrivateKey | None = WITNESS,
    ) -> None:
        self.payloads = payloads
        self.witness = witness
        leaves = [hash_leaf(canonical_json(p)) for p in payloads]
        _, _, nodes = extend([], 0, leaves)
        self.stored = {(0, i): h for i, h in enumerate(leaves)} | {(lv, i): h for lv, i, h in nodes}
        self.checkpoints = {n: self.sign(n) for n in signed_sizes}

    def sign(self, n: int) -> dict[str, Any]:
        root = range_hash(0, n, self.stored)
        text = checkpoint_text(ORIGIN, n, root)
        log_key = ecdsa_vkey(ORIGIN, SPKI)
        lines = [
            NoteSignature(
                ORIGIN, log_key.key_id, KEY.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
            )
        ]
        if self.witness is not None:
            vkey = cosigner_vkey(
                "witness.test/w1",
                self.witness.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            )
            at = 1_790_000_000
            lines.append(cosignature(vkey, at, self.witness.sign(cosigned_message(text, at))))
        note = SignedNote(text, tuple(lines)).render()
        return {"origin": ORIGIN, "tree_size": n, "root_hash": root.hex(), "note": note}

    def handle(self, request: httpx.Request) -> httpx.Response:
        path, q = request.url.path, dict(request.url.params.items())
        if path == "/v1/log/checkpoints/latest":
            return httpx.Response(200, json=self.checkpoints[max(self.checkpoints)])
        if path.startswith("/v1/log/checkpoints/"):
            return httpx.Response(200, json=self.checkpoints[int(path.rsplit("/", 1)[1])])
        if path == "/v1/log/checkpoints":
            before = int(q.get("before", 1 << 62))
            older = sorted((n for n in self.checkpoints if n < before), reverse=True)
            return httpx.Response(200, json={"checkpoints": [self.checkpoints[n] for n in older]})
        if path == "/v1/log/entries":
            a, b = int(q["start"]), int(q["end"])
            rows = [
                {"log_index": i, "payload": self.payloads[i]}
                for i in range(a, min(b, len(self.payloads)))
            ]
            return httpx.Response(200, json={"entries": rows})
        if path == "/v1/log/proofs/inclusion":
            i, n = int(q["log_index"]), int(q["tree_size"])
            path_hashes = [range_hash(a, b, self.stored).hex() for a, b in inclusion_ranges(i, n)]
            return httpx.Response(
                200, json={"log_index": i, "tree_size": n, "audit_path": path_hashes}
            )
        if path == "/v1/log/proofs/consistency":
            m, n = int(q["first"]), int(q["second"])
            if n > len(self.payloads):  # as the API: the tree does not cover it
                return httpx.Response(409, json={"detail": f"the tree covers fewer than {n}"})
            proof = [range_hash(a, b, self.stored).hex() for a, b in consistency_ranges(m, n)]
            return httpx.Response(200, json={"first": m, "second": n, "proof": proof})
        return httpx.Response(404, json={"detail": "no such thing"})


async def run_cli(log: FakeLog, tmp_path: Path, *command: str) -> int:
    key = tmp_path / "checkpoint-key.pem"
    key.write_text(PEM)
    argv = ["--url", "http://audit", "--token", "t", "--public-key", str(key)]
    argv += ["--origin", ORIGIN, "--witness-vkey", WITNESS_VKEY.render()]
    argv += ["--state", str(tmp_path / "seen.json"), *command]
    return await amain(argv, transport=httpx.MockTransport(log.handle))


async def report_of(
    log: FakeLog, tmp_path: Path, capsys: pytest.CaptureFixture[str], *command: str
) -> tuple[int, dict[str, Any]]:
    status = await run_cli(log, tmp_path, *command)
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "command",
    [
        ["checkpoint"],
        ["checkpoint", "--tree-size", "5"],
        ["inclusion", "--log-index", "7"],
        ["consistency", "--first", "5", "--second", "11"],
        ["audit"],
    ],
)
async def test_the_cli_verifies_an_honest_log(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = await report_of(FakeLog(entries(11), [5, 11]), tmp_path, capsys, *command)
    assert status == 0, report
    assert report["ok"] is True


async def test_the_cli_fails_an_altered_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = FakeLog(entries(11), [11])
    log.payloads[3] = {**log.payloads[3], "n": 99}
    for command in (["audit"], ["inclusion", "--log-index", "3"]):
        status, report = await report_of(log, tmp_path, capsys, *command)
        assert status == 1
        assert report["problems"]


async def test_a_checkpoint_without_the_witness_cosignature_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for witness in (None, Ed25519PrivateKey.generate()):  # none, or another witness's key
        status, report = await report_of(
            FakeLog(entries(6), [6], witness=witness), tmp_path, capsys, "checkpoint"
        )
        assert status == 1
        assert "no valid cosignature of witness witness.test/w1" in report["problems"][0]


async def test_a_checkpoint_whose_fields_disagree_with_its_note_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = FakeLog(entries(6), [6])
    log.checkpoints[6] = log.checkpoints[6] | {"root_hash": "00" * 32}
    status, report = await report_of(log, tmp_path, capsys, "checkpoint")
    assert status == 1
    assert "disagree" in report["problems"][0]


async def test_the_verifier_remembers_what_it_saw_and_detects_a_fork(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    honest = FakeLog(entries(8), [8])
    assert (await report_of(honest, tmp_path, capsys, "audit"))[0] == 0
    # The log is rewritten (entry 5 replaced) and grows; a compromised signer and witness sign
    # the new history. On its own it is flawless; against what the verifier saw, it forks.
    forked_entries = entries(12)
    forked_entries[5] = {**forked_entries[5], "n": 555}
    forked = FakeLog(forked_entries, [12])
    status, report = await report_of(forked, tmp_path, capsys, "audit")
    assert status == 1
    assert report["problems"][0].startswith("fork: checkpoint 12")
    # The same tree head at the same size with another root is a fork too.
    status, report = await report_of(
        FakeLog(forked_entries[:8], [8]), tmp_path, capsys, "checkpoint"
    )
    assert status == 1
    assert "fork" in report["problems"][0]
    # A verifier with no memory would have passed it: the memory is what catches it.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert (await report_of(forked, fresh, capsys, "audit"))[0] == 0
    # The honest continuation is still accepted, and only successful runs were remembered.
    grown = FakeLog(entries(12), [12])
    assert (await report_of(grown, tmp_path, capsys, "audit"))[0] == 0
    seen = json.loads((tmp_path / "seen.json").read_text())["origins"][ORIGIN]
    assert sorted(int(n) for n in seen) == [8, 12]


async def test_the_audit_recomputes_each_batch_from_the_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    story = BatchStory(3)
    events = story.good_batch()
    reconciled = {
        "event_id": "00000000-0000-4000-8000-000000000001",
        "type": "batch.reconciled",
        "version": 1,
        "issuer_id": "bank-a",
        "actor": "audit",
        "occurred_at": "2026-12-07T00:00:00Z",
        "batch_id": str(story.batch_id),
        "counts": {"ordered": 3, "packed": 3},
    }
    payloads = [e.model_dump(mode="json") for e in events] + [reconciled]
    status, report = await report_of(FakeLog(payloads, [len(payloads)]), tmp_path, capsys, "audit")
    assert status == 0, report
    assert any(f"batch {story.batch_id}: reconciled" in c for c in report["checks"])
    # The projection tables said "reconciled", but the log lacks one card's packing.
    packed = next(i for i, e in enumerate(events) if e.type == "card.packed")
    short = payloads[:packed] + payloads[packed + 1 :]
    other = tmp_path / "other"
    other.mkdir()
    status, report = await report_of(FakeLog(short, [len(short)]), other, capsys, "audit")
    assert status == 1
    assert (
        f"batch {story.batch_id} is logged reconciled, but its entries do not"
        in (report["problems"][0])
    )


async def test_a_log_rolled_back_below_a_checkpoint_seen_is_a_fork(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await report_of(FakeLog(entries(12), [12]), tmp_path, capsys, "checkpoint"))[0] == 0
    shorter = FakeLog(entries(8), [8])  # its API cannot prove anything up to 12
    status, report = await report_of(shorter, tmp_path, capsys, "checkpoint")
    assert status == 1
    assert report["problems"][0].startswith("fork: the log gives no proof from 8 to 12")
