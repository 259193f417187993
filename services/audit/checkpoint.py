"""Signed checkpoints as audit stores and serves them (no I/O): C2SP signed notes
(c2sp.org/tlog-checkpoint; the format itself is shared/checkpoint_note.py).

The stored note is the whole signed note: the three checkpoint lines, a blank line, keymgmt's
ECDSA P-256 line (signature type 0x02, key name = the log's origin) and the witness's
cosignature/v1 line(s). Anyone holding keymgmt's public key and the witness's vkey checks it
with any C2SP implementation; nothing audit says beyond the note is needed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from shared.checkpoint_note import NoteError, SignedNote, Vkey, ecdsa_vkey, parse_note, verify_with

ALGORITHM = "ecdsa-p256-sha256"
LEGACY_HEADER = "cardbureau audit checkpoint v1"  # issue 6's format, before C2SP notes


def spki_der(public_key_pem: str) -> bytes:
    key = load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("the checkpoint key is not an EC P-256 public key")
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def public_key_id(public_key_pem: str) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo (DER), the id keymgmt reports."""
    return hashlib.sha256(spki_der(public_key_pem)).hexdigest()


def log_vkey(origin: str, public_key_pem: str) -> Vkey:
    """The C2SP verifier key of the log's signature lines (key name = origin)."""
    return ecdsa_vkey(origin, spki_der(public_key_pem))


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as served: its fields, and the signed note they must agree with."""

    origin: str
    tree_size: int
    root_hash: str  # hex
    note: SignedNote

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> Checkpoint:
        """Raises NoteError when the note is not a C2SP checkpoint or says something else
        than the fields beside it."""
        text = str(view["note"])
        if text.startswith(LEGACY_HEADER):
            raise NoteError(f"checkpoint {view['tree_size']} is in the pre-C2SP format")
        note = parse_note(text)
        body = note.body()
        fields = (str(view["origin"]), int(view["tree_size"]), str(view["root_hash"]))
        if (body.origin, body.tree_size, body.root_hash.hex()) != fields:
            raise NoteError(f"checkpoint {fields[1]}: the note and its fields disagree")
        return cls(body.origin, body.tree_size, body.root_hash.hex(), note)

    def signed_by(self, vkey: Vkey) -> bool:
        return verify_with(self.note, vkey) is not None

    def cosigned_at(self, vkey: Vkey) -> int | None:
        """The POSIX time of the witness's valid cosignature, or None."""
        return verify_with(self.note, vkey)
