"""Independent checks of C2SP signed notes for the tests, written from the specifications
(c2sp.org/signed-note, c2sp.org/tlog-checkpoint, c2sp.org/tlog-cosignature) and importing
nothing of the bureau's: a second Python reading, and the Go reference package
golang.org/x/mod/sumdb/note (tests/support/c2sp_go) when a Go toolchain is at hand."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

GO_SOURCE = Path(__file__).parent / "c2sp_go"


@dataclass(frozen=True)
class Opened:
    origin: str
    tree_size: int
    root_hash: bytes
    verified: list[str]  # key names whose signature verified


def _key(vkey: str) -> tuple[str, bytes, int, bytes]:
    name, key_id, blob = vkey.split("+", 2)
    raw = base64.b64decode(blob)
    return name, bytes.fromhex(key_id), raw[0], raw[1:]


def _valid(kind: int, key: bytes, text: bytes, sig: bytes) -> bool:
    try:
        if kind == 0x02:
            public = load_der_public_key(key)
            assert isinstance(public, ec.EllipticCurvePublicKey)
            public.verify(sig, text, ec.ECDSA(hashes.SHA256()))
        elif kind == 0x04:
            (stamp,) = struct.unpack(">Q", sig[:8])
            message = b"cosignature/v1\ntime %d\n" % stamp + text
            Ed25519PublicKey.from_public_bytes(key).verify(sig[8:], message)
        else:
            return False
    except (InvalidSignature, ValueError, struct.error):
        return False
    return True


def open_checkpoint(note: str, vkeys: list[str]) -> Opened:
    """Every signature of a given key must verify, and at least one must be present; lines of
    other keys are ignored. Raises ValueError otherwise."""
    cut = note.rindex("\n\n")
    text, lines = note[: cut + 1], note[cut + 2 :].splitlines()
    keys = {(name, key_id): (kind, key) for name, key_id, kind, key in map(_key, vkeys)}
    verified: list[str] = []
    for line in lines:
        if not line.startswith("\u2014 "):
            raise ValueError(f"not a signature line: {line!r}")
        name, blob = line[2:].split(" ")
        raw = base64.b64decode(blob, validate=True)
        found = keys.get((name, raw[:4]))
        if found is None:
            continue
        if not _valid(found[0], found[1], text.encode(), raw[4:]):
            raise ValueError(f"the signature of {name} does not verify")
        verified.append(name)
    if not verified:
        raise ValueError("no signature of a known key")
    origin, size, root = text[:-1].split("\n")
    return Opened(origin, int(size), base64.b64decode(root), verified)


def ecdsa_vkey(name: str, spki_der: bytes) -> str:
    key_id = hashlib.sha256(spki_der).digest()[:4].hex()
    blob = base64.b64encode(bytes([0x02]) + spki_der).decode()
    return f"{name}+{key_id}+{blob}"


def go_notecheck(build_dir: Path) -> Path | None:
    """Build the Go checker (module from the Go proxy) once; None without a Go toolchain."""
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        return None
    binary = build_dir / "notecheck"
    if not binary.exists():
        env = os.environ | {
            "GOCACHE": str(build_dir / "cache"),
            "GOPATH": str(build_dir / "gopath"),
            "GOFLAGS": "-mod=mod",
        }
        subprocess.run(
            [go, "build", "-o", str(binary), "."], cwd=GO_SOURCE, env=env, check=True, timeout=300
        )
    return binary


def go_open(binary: Path, note: str, vkeys: list[str]) -> dict[str, object]:
    done = subprocess.run(
        [str(binary), *vkeys], input=note.encode(), capture_output=True, timeout=30
    )
    if done.returncode != 0:
        raise ValueError(done.stderr.decode().strip())
    result: dict[str, object] = json.loads(done.stdout)
    return result
