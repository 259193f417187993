"""The witness's rule (c2sp.org/tlog-witness) on its own file store, over its HTTP interface
in process: it cosigns only checkpoints signed by the log's key that extend the last one it
cosigned, refuses everything else with the status the protocol names, and remembers across a
restart. (The witness as its own process: tests/integration/test_audit_witness.py.)"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.audit.merkle import consistency_ranges, extend, hash_leaf, range_hash
from services.audit.witness.app import build_app, build_witness
from services.audit.witness.settings import WitnessSettings
from services.audit.witness.store import EVIDENCE_FILE
from shared.checkpoint_note import (
    NoteSignature,
    SignedNote,
    checkpoint_text,
    ecdsa_vkey,
    parse_note,
    parse_vkey,
    verify_with,
)

ORIGIN = "test.example/log"
LOG_KEY = ec.generate_private_key(ec.SECP256R1())
SPKI = LOG_KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
LOG_VKEY = ecdsa_vkey(ORIGIN, SPKI)


class Tree:
    def __init__(self, leaves: list[bytes]) -> None:
        hashes_ = [hash_leaf(x) for x in leaves]
        _, _, nodes = extend([], 0, hashes_)
        self.stored = {(0, i): h for i, h in enumerate(hashes_)} | {(a, b): h for a, b, h in nodes}

    def root(self, n: int) -> bytes:
        return range_hash(0, n, self.stored)

    def proof(self, m: int, n: int) -> list[bytes]:
        return [range_hash(a, b, self.stored) for a, b in consistency_ranges(m, n)]


def signed(tree: Tree, n: int, key: ec.EllipticCurvePrivateKey = LOG_KEY) -> str:
    text = checkpoint_text(ORIGIN, n, tree.root(n))
    signature = key.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
    return SignedNote(text, (NoteSignature(ORIGIN, LOG_VKEY.key_id, signature),)).render()


def request(old: int, proof: list[bytes], note: str) -> bytes:
    lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return f"old {old}\n{lines}\n{note}".encode()


def client(directory: Path) -> httpx.AsyncClient:
    settings = WitnessSettings(name="witness.test/w1", dir=directory, log_vkeys=LOG_VKEY.render())
    transport = httpx.ASGITransport(app=build_app(build_witness(settings)))
    return httpx.AsyncClient(transport=transport, base_url="http://witness")


HONEST = Tree([b"entry %d" % i for i in range(20)])
REWRITTEN = Tree([b"entry %d" % i if i != 5 else b"entry five, rewritten" for i in range(20)])


async def test_the_witness_cosigns_a_consistent_history(tmp_path: Path) -> None:
    async with client(tmp_path) as witness:
        vkey = parse_vkey((await witness.get("/vkey")).text)
        first = await witness.post("/add-checkpoint", content=request(0, [], signed(HONEST, 7)))
        assert first.status_code == 200, first.text
        cosigned = parse_note(signed(HONEST, 7) + first.text)
        assert verify_with(cosigned, vkey) is not None
        body = request(7, HONEST.proof(7, 12), signed(HONEST, 12))
        assert (await witness.post("/add-checkpoint", content=body)).status_code == 200
        again = await witness.post("/add-checkpoint", content=request(12, [], signed(HONEST, 12)))
        assert again.status_code == 200  # the same tree head again: cosigned again
        latest = await witness.get(f"/latest/{ORIGIN}")
        assert parse_note(latest.text).body().tree_size == 12


async def test_an_inconsistent_checkpoint_is_refused_and_kept_as_evidence(tmp_path: Path) -> None:
    async with client(tmp_path) as witness:
        await witness.post("/add-checkpoint", content=request(0, [], signed(HONEST, 7)))
        # The rewritten log (entry 5 replaced) signed by the log's own key, with the best
        # proof it can make: the witness checks it against the root it stored and refuses.
        forged = request(7, REWRITTEN.proof(7, 12), signed(REWRITTEN, 12))
        refused = await witness.post("/add-checkpoint", content=forged)
        assert refused.status_code == 422
        assert "not proved consistent" in refused.text
        evidence = [json.loads(x) for x in (tmp_path / EVIDENCE_FILE).read_text().splitlines()]
        assert evidence[0]["reason"] == "consistency proof failed"
        # The same size with another root is a 409.
        same = await witness.post("/add-checkpoint", content=request(7, [], signed(REWRITTEN, 7)))
        assert same.status_code == 409
        assert "another root" in same.text
        # Nothing moved: the honest continuation is still cosigned.
        honest = request(7, HONEST.proof(7, 12), signed(HONEST, 12))
        assert (await witness.post("/add-checkpoint", content=honest)).status_code == 200


async def test_a_stale_old_size_gets_409_with_the_size_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    async with client(tmp_path) as witness:
        await witness.post("/add-checkpoint", content=request(0, [], signed(HONEST, 7)))
    async with client(tmp_path) as restarted:  # same store, same key
        stale = await restarted.post("/add-checkpoint", content=request(0, [], signed(HONEST, 9)))
        assert stale.status_code == 409
        assert stale.headers["content-type"].startswith("text/x.tlog.size")
        assert stale.text == "7\n"
        backwards = await restarted.post(
            "/add-checkpoint", content=request(7, [], signed(HONEST, 5))
        )
        assert backwards.status_code == 400


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"old 0\n\nnot a note", 400),
        (b"garbage", 400),
        (b"old 01\n\n" + signed(HONEST, 3).encode(), 400),
        (request(0, [], signed(HONEST, 3).replace(ORIGIN, "other.example/log")), 404),
        (request(0, [], signed(HONEST, 3, ec.generate_private_key(ec.SECP256R1()))), 403),
        (request(0, [HONEST.root(1)], signed(HONEST, 3)), 422),  # old 0 takes no proof
    ],
)
async def test_bad_requests_get_the_protocols_status(
    tmp_path: Path, body: bytes, status: int
) -> None:
    async with client(tmp_path) as witness:
        answer = await witness.post("/add-checkpoint", content=body)
    assert answer.status_code == status, answer.text
    assert not (tmp_path / "cosigned.json").exists()
