"""Checkpoints as C2SP signed notes (c2sp.org/tlog-checkpoint, c2sp.org/signed-note,
c2sp.org/tlog-cosignature), shared by keymgmt (which signs), audit (which asks and stores),
the witness (which cosigns) and the verifier. No I/O.

A checkpoint's note text is three lines: the log's origin, the tree size in decimal, and the
base64 RFC 6962 root hash. Signature lines follow a blank line:

    cardbureau/audit
    1234
    <base64 root>

    — cardbureau/audit <base64(4-byte key ID || ECDSA P-256 signature, DER)>
    — witness.cardbureau.local/w1 <base64(4-byte key ID || 8-byte time || Ed25519 signature)>

keymgmt's HSM key is EC P-256, so the log's line is signature type 0x02 (ECDSA over SHA-256 of
the note text; key ID = the first four bytes of SHA-256 of the key's SubjectPublicKeyInfo). A
witness's line is type 0x04, cosignature/v1: Ed25519 over "cosignature/v1\\ntime <t>\\n" and
the note text. A verifier key (vkey) is "<name>+<hex key ID>+<base64(type || public key)>".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

ECDSA = 0x02
COSIGNATURE_V1 = 0x04
DASH = "\u2014 "
MAX_SIGNATURES = 64
_NAME = re.compile(r"^[^\s+]+$")
_SIZE = re.compile(r"^(0|[1-9][0-9]{0,18})$")


class NoteError(ValueError):
    """The text is not a well-formed checkpoint or signed note; the message says what."""


@dataclass(frozen=True)
class CheckpointBody:
    origin: str
    tree_size: int
    root_hash: bytes

    def text(self) -> str:
        return checkpoint_text(self.origin, self.tree_size, self.root_hash)


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes  # 4 bytes
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{DASH}{self.name} {blob}\n"


@dataclass(frozen=True)
class SignedNote:
    text: str  # ends in a newline; what the signatures cover
    signatures: tuple[NoteSignature, ...]

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def body(self) -> CheckpointBody:
        return parse_checkpoint(self.text)

    def adding(self, *more: NoteSignature) -> SignedNote:
        return SignedNote(self.text, self.signatures + more)


@dataclass(frozen=True)
class Vkey:
    name: str
    key_id: bytes
    kind: int
    public_key: bytes  # SPKI DER for ECDSA, 32 raw bytes for Ed25519

    def render(self) -> str:
        blob = base64.b64encode(bytes([self.kind]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"


def check_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def checkpoint_text(origin: str, tree_size: int, root_hash: bytes) -> str:
    if not origin or "\n" in origin or any(ord(c) < 0x20 for c in origin):
        raise NoteError("the origin is one non-empty line")
    if tree_size < 0 or len(root_hash) != 32:
        raise NoteError("a checkpoint has a tree size >= 0 and a 32-byte root hash")
    return f"{origin}\n{tree_size}\n{base64.b64encode(root_hash).decode()}\n"


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what} is not base64") from exc


def parse_checkpoint(text: str) -> CheckpointBody:
    """The three lines of a checkpoint's note text (extension lines are refused: we make
    none, and nothing signed should go unread)."""
    if not text.endswith("\n"):
        raise NoteError("the checkpoint text does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        raise NoteError(f"a checkpoint has 3 lines (origin, size, root), not {len(lines)}")
    origin, size, root = lines
    if not origin:
        raise NoteError("the origin line is empty")
    if not _SIZE.match(size):
        raise NoteError(f"tree size {size!r} is not a decimal without leading zeros")
    root_hash = _b64(root, "the root hash")
    if len(root_hash) != 32:
        raise NoteError("the root hash is not 32 bytes")
    return CheckpointBody(origin, int(size), root_hash)


def parse_note(note: str) -> SignedNote:
    """Split a signed note at its last blank line and read every signature line."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("a signed note holds no control characters other than newline")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("no blank line before the signatures")
    text, lines = note[: cut + 1], note[cut + 2 : -1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(DASH):
            raise NoteError(f"signature line {line[:40]!r} does not start with an em dash")
        name, _, blob = line[len(DASH) :].partition(" ")
        raw = _b64(blob, f"the signature of {name}")
        if len(raw) < 5:
            raise NoteError(f"the signature of {name} is too short")
        signatures.append(NoteSignature(check_name(name), raw[:4], raw[4:]))
    return SignedNote(text, tuple(signatures))


# -- keys -------------------------------------------------------------------------------------
def ecdsa_key_id(spki_der: bytes) -> bytes:
    return hashlib.sha256(spki_der).digest()[:4]


def ecdsa_vkey(name: str, spki_der: bytes) -> Vkey:
    return Vkey(check_name(name), ecdsa_key_id(spki_der), ECDSA, spki_der)


def cosigner_vkey(name: str, ed25519_public: bytes) -> Vkey:
    if len(ed25519_public) != 32:
        raise NoteError("an Ed25519 public key is 32 bytes")
    digest = hashlib.sha256(check_name(name).encode() + b"\n" + bytes([COSIGNATURE_V1]))
    digest.update(ed25519_public)
    return Vkey(name, digest.digest()[:4], COSIGNATURE_V1, ed25519_public)


def parse_vkey(text: str) -> Vkey:
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("a vkey is <name>+<hex key id>+<base64 key>")
    name, hex_id, blob = parts
    raw = _b64(blob, "the vkey's key")
    if len(hex_id) != 8 or not raw:
        raise NoteError("the vkey's key id is not 8 hex digits, or its key is empty")
    kind, key = raw[0], raw[1:]
    expected = {ECDSA: ecdsa_vkey, COSIGNATURE_V1: cosigner_vkey}.get(kind)
    if expected is None:
        raise NoteError(f"signature type {kind:#04x} is not one we verify")
    vkey = expected(name, key)
    if vkey.key_id.hex() != hex_id.lower():
        raise NoteError(f"the vkey of {name} names key id {hex_id}, its key has another")
    return vkey


# -- signing and verifying --------------------------------------------------------------------
def cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


def cosignature(vkey: Vkey, timestamp: int, ed25519_signature: bytes) -> NoteSignature:
    return NoteSignature(vkey.name, vkey.key_id, struct.pack(">Q", timestamp) + ed25519_signature)


def signatures_by(note: SignedNote, vkey: Vkey) -> list[NoteSignature]:
    return [s for s in note.signatures if s.name == vkey.name and s.key_id == vkey.key_id]


def verify_with(note: SignedNote, vkey: Vkey) -> int | None:
    """Verify the note's signatures by this key (C2SP: lines from other keys are ignored).
    Returns None unless one is present and every one present verifies; for a cosignature,
    returns its time (POSIX seconds), else 0."""
    found = signatures_by(note, vkey)
    if not found:
        return None
    stamp = 0
    for sig in found:
        if vkey.kind == ECDSA:
            ok = _ecdsa_ok(vkey.public_key, sig.signature, note.text.encode())
        else:
            if len(sig.signature) != 72:
                return None
            (stamp,) = struct.unpack(">Q", sig.signature[:8])
            message = cosigned_message(note.text, stamp)
            ok = _ed25519_ok(vkey.public_key, sig.signature[8:], message)
        if not ok:
            return None
    return stamp


def _ecdsa_ok(spki_der: bytes, signature: bytes, message: bytes) -> bool:
    key = load_der_public_key(spki_der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _ed25519_ok(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def note_digest(text: str) -> bytes:
    """SHA-256 of the note text: what keymgmt's HSM signs with CKM_ECDSA (type 0x02)."""
    return hashlib.sha256(text.encode()).digest()
