"""The auditors' verifier CLI and the checkpoint format, against a fake audit API that serves
a log signed by a local P-256 key (the real API and HSM key: test_audit_merkle.py)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.audit.chain import canonical_json
from services.audit.checkpoint import Checkpoint, checkpoint_note, public_key_id, signature_valid
from services.audit.merkle import (
    consistency_ranges,
    extend,
    hash_leaf,
    inclusion_ranges,
    range_hash,
)
from services.audit.verify import amain

KEY = ec.generate_private_key(ec.SECP256R1())
PEM = KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def entries(n: int) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}", "type": "card.encoded", "n": i} for i in range(n)]


class FakeLog:
    def __init__(self, payloads: list[dict[str, Any]], signed_sizes: list[int]) -> None:
        self.payloads = payloads
        leaves = [hash_leaf(canonical_json(p)) for p in payloads]
        _, _, nodes = extend([], 0, leaves)
        self.stored = {(0, i): h for i, h in enumerate(leaves)} | {(lv, i): h for lv, i, h in nodes}
        self.checkpoints = {n: self.sign(n) for n in signed_sizes}

    def sign(self, n: int) -> dict[str, Any]:
        at = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
        root = range_hash(0, n, self.stored).hex()
        note = checkpoint_note("test/log", n, root, at)
        signature = base64.b64encode(KEY.sign(note, ec.ECDSA(hashes.SHA256()))).decode()
        return {
            "origin": "test/log",
            "tree_size": n,
            "root_hash": root,
            "key_id": public_key_id(PEM),
        } | {"timestamp": at.isoformat(), "signature": signature}

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
            proof = [range_hash(a, b, self.stored).hex() for a, b in consistency_ranges(m, n)]
            return httpx.Response(200, json={"first": m, "second": n, "proof": proof})
        return httpx.Response(404, json={"detail": "no such thing"})


async def run_cli(log: FakeLog, tmp_path: Path, *command: str) -> int:
    key = tmp_path / "checkpoint-key.pem"
    key.write_text(PEM)
    argv = ["--url", "http://audit", "--token", "t", "--public-key", str(key), *command]
    return await amain(argv, transport=httpx.MockTransport(log.handle))


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
    status = await run_cli(FakeLog(entries(11), [5, 11]), tmp_path, *command)
    report = json.loads(capsys.readouterr().out)
    assert status == 0, report
    assert report["ok"] is True


async def test_the_cli_fails_an_altered_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = FakeLog(entries(11), [11])
    log.payloads[3] = {**log.payloads[3], "n": 99}
    for command in (["audit"], ["inclusion", "--log-index", "3"]):
        status = await run_cli(log, tmp_path, *command)
        report = json.loads(capsys.readouterr().out)
        assert status == 1
        assert report["problems"]


def test_a_checkpoint_signature_covers_every_field() -> None:
    log = FakeLog(entries(4), [4])
    checkpoint = Checkpoint.from_view(log.checkpoints[4])
    assert signature_valid(checkpoint, PEM)
    assert checkpoint.note().decode().splitlines()[0] == "cardbureau audit checkpoint v1"
    for change in ({"tree_size": 3}, {"root_hash": "00" * 32}, {"origin": "other"}):
        forged = Checkpoint.from_view(log.checkpoints[4] | change)
        assert not signature_valid(forged, PEM)
    later = Checkpoint.from_view(log.checkpoints[4] | {"timestamp": "2026-11-24T21:00:00.001Z"})
    assert not signature_valid(later, PEM)
