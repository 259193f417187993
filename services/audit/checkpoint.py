"""Signed checkpoints of the log (no I/O): the text that is signed, and checking a signature.

A checkpoint commits to the tree at one size, in the spirit of an RFC 9162 signed tree head
(section 4.10) written as text, one field per line:

    cardbureau audit checkpoint v1
    origin <the log's name>
    tree_size <n>
    root_hash <MTH of the first n entries, hex>
    timestamp <UTC, ISO 8601 with milliseconds>

keymgmt signs SHA-256 of that text with an HSM-held EC P-256 key, i.e. an ordinary
ECDSA-with-SHA256 signature over it (DER, base64 in the API). An auditor rebuilds the text from
the fields and checks the signature with the public key alone.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from shared.checkpoint_note import HEADER, checkpoint_note, note_digest, signing_time

__all__ = ["ALGORITHM", "HEADER", "checkpoint_note", "note_digest", "signing_time"]

ALGORITHM = "ecdsa-p256-sha256"


@dataclass(frozen=True)
class Checkpoint:
    """The signed fields, as an auditor reads them from the API."""

    origin: str
    tree_size: int
    root_hash: str
    timestamp: datetime
    signature: str  # base64 DER
    key_id: str = ""

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> Checkpoint:
        return cls(
            origin=str(view["origin"]),
            tree_size=int(view["tree_size"]),
            root_hash=str(view["root_hash"]),
            timestamp=datetime.fromisoformat(str(view["timestamp"]).replace("Z", "+00:00")),
            signature=str(view["signature"]),
            key_id=str(view.get("key_id", "")),
        )

    def note(self) -> bytes:
        return checkpoint_note(self.origin, self.tree_size, self.root_hash, self.timestamp)


def public_key_id(pem: str) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo (DER), the id keymgmt reports."""
    key = load_pem_public_key(pem.encode())
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


def signature_valid(checkpoint: Checkpoint, public_key_pem: str) -> bool:
    """ECDSA P-256 with SHA-256 over the rebuilt checkpoint text; nothing else is trusted."""
    key = load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("the checkpoint key is not an EC P-256 public key")
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        key.verify(signature, checkpoint.note(), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
