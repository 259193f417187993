"""The witness's own store: a directory holding its Ed25519 key and, per origin, the latest
checkpoint it cosigned. Each write goes to a temporary file, is fsynced and renamed over the
old one, so a crash leaves the old state or the new, never a torn one. Requests that failed
the consistency check are kept as evidence of the log's misbehaviour (c2sp.org/tlog-witness
allows it), one JSON line each."""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

KEY_FILE = "witness-ed25519.pem"
STATE_FILE = "cosigned.json"
EVIDENCE_FILE = "refused.jsonl"


@dataclass(frozen=True)
class Cosigned:
    tree_size: int
    root_hash: bytes
    note: str


class WitnessStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def key(self) -> Ed25519PrivateKey:
        """The witness key, made on first start (mode 0600, never overwritten)."""
        path = self.dir / KEY_FILE
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first: use that one
            else:
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
                    out.flush()
                    os.fsync(out.fileno())
        key = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return key

    def _state(self) -> dict[str, dict[str, object]]:
        path = self.dir / STATE_FILE
        if not path.exists():
            return {}
        state: dict[str, dict[str, object]] = json.loads(path.read_text())
        return state

    def latest(self, origin: str) -> Cosigned | None:
        entry = self._state().get(origin)
        if entry is None:
            return None
        root = base64.b64decode(str(entry["root_hash"]))
        return Cosigned(int(str(entry["tree_size"])), root, str(entry["note"]))

    def save(self, origin: str, cosigned: Cosigned) -> None:
        state = self._state()
        state[origin] = {
            "tree_size": cosigned.tree_size,
            "root_hash": base64.b64encode(cosigned.root_hash).decode(),
            "note": cosigned.note,
        }
        self._replace(STATE_FILE, json.dumps(state, indent=1, sort_keys=True).encode())

    def keep_evidence(self, origin: str, reason: str, request: bytes) -> None:
        line = {"at": time.time(), "origin": origin, "reason": reason, "request": request.decode()}
        with (self.dir / EVIDENCE_FILE).open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def _replace(self, name: str, content: bytes) -> None:
        tmp = self.dir / f".{name}.{os.getpid()}.tmp"
        with tmp.open("wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.dir / name)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
