"""C2SP checkpoints and signed notes (shared/checkpoint_note.py), read back by independent
implementations written from the specifications: tests/support/c2sp.py in Python and the Go
reference package golang.org/x/mod/sumdb/note (tests/support/c2sp_go)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared.checkpoint_note import (
    NoteError,
    NoteSignature,
    SignedNote,
    checkpoint_text,
    cosignature,
    cosigned_message,
    cosigner_vkey,
    ecdsa_vkey,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    verify_with,
)
from tests.support import c2sp

LOG_KEY = ec.generate_private_key(ec.SECP256R1())
SPKI = LOG_KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
WITNESS_KEY = Ed25519PrivateKey.generate()
WITNESS_PUBLIC = WITNESS_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
ROOT = hashlib.sha256(b"root").digest()


def signed(size: int = 20852163, root: bytes = ROOT, at: int = 1679315147) -> SignedNote:
    text = checkpoint_text("example.com/log", size, root)
    log = ecdsa_vkey("example.com/log", SPKI)
    sig = LOG_KEY.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
    witness = cosigner_vkey("witness.example/w1", WITNESS_PUBLIC)
    cosig = cosignature(witness, at, WITNESS_KEY.sign(cosigned_message(text, at)))
    return SignedNote(text, (NoteSignature(log.name, log.key_id, sig), cosig))


def vkeys() -> list[str]:
    log = ecdsa_vkey("example.com/log", SPKI).render()
    return [log, cosigner_vkey("witness.example/w1", WITNESS_PUBLIC).render()]


def test_a_checkpoint_is_three_lines_origin_size_base64_root() -> None:
    text = checkpoint_text("example.com/log", 20852163, ROOT)
    assert text == f"example.com/log\n20852163\n{base64.b64encode(ROOT).decode()}\n"
    assert parse_checkpoint(text).tree_size == 20852163
    for bad in (
        text.replace("20852163", "020852163"),  # leading zero
        text + "extension\n",
        text.rstrip("\n"),
        text.replace(base64.b64encode(ROOT).decode(), "not base64!"),
        "\n0\n" + base64.b64encode(ROOT).decode() + "\n",  # empty origin
    ):
        with pytest.raises(NoteError):
            parse_checkpoint(bad)


def test_the_cosigned_message_is_the_tlog_cosignature_v1_layout() -> None:
    text = checkpoint_text("example.com/behind-the-sofa", 20852163, ROOT)
    message = cosigned_message(text, 1679315147).decode()
    assert message.startswith("cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n")


def test_key_ids_follow_signed_note() -> None:
    assert ecdsa_vkey("x", SPKI).key_id == hashlib.sha256(SPKI).digest()[:4]
    expected = hashlib.sha256(b"w\n\x04" + WITNESS_PUBLIC).digest()[:4]
    assert cosigner_vkey("w", WITNESS_PUBLIC).key_id == expected
    vkey = cosigner_vkey("w", WITNESS_PUBLIC).render()
    assert parse_vkey(vkey).public_key == WITNESS_PUBLIC
    name, key_id, blob = vkey.split("+", 2)
    with pytest.raises(NoteError, match="names key id"):
        parse_vkey(f"{name}+00000000+{blob}")
    with pytest.raises(NoteError):
        parse_vkey("has space+00000000+AA==")


def test_our_notes_verify_and_tampering_does_not() -> None:
    note = parse_note(signed().render())
    log, witness = (parse_vkey(v) for v in vkeys())
    assert verify_with(note, log) == 0
    assert verify_with(note, witness) == 1679315147
    tampered = parse_note(signed().render().replace("20852163", "20852164", 1))
    assert verify_with(tampered, log) is None
    assert verify_with(tampered, witness) is None
    # A cosignature whose timestamp was changed no longer verifies.
    line = note.signatures[1]
    moved = NoteSignature(line.name, line.key_id, (1).to_bytes(8, "big") + line.signature[8:])
    assert verify_with(SignedNote(note.text, (moved,)), witness) is None


def test_malformed_notes_are_refused_by_name() -> None:
    good = signed().render()
    for bad, message in (
        (good.replace("\n\n", "\n"), "blank line"),
        (good.replace("\u2014 ", "-- ", 1), "em dash"),
        (good.replace("\n", "\r\n", 1), "control"),
    ):
        with pytest.raises(NoteError, match=message):
            parse_note(bad)


def test_an_independent_python_reading_of_the_spec_opens_our_note() -> None:
    opened = c2sp.open_checkpoint(signed().render(), vkeys())
    assert (opened.origin, opened.tree_size, opened.root_hash) == (
        "example.com/log",
        20852163,
        ROOT,
    )
    assert opened.verified == ["example.com/log", "witness.example/w1"]
    assert c2sp.ecdsa_vkey("example.com/log", SPKI) == vkeys()[0]
    with pytest.raises(ValueError, match="does not verify"):
        c2sp.open_checkpoint(signed().render().replace("20852163", "1", 1), vkeys())


@pytest.fixture(scope="module")
def notecheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = c2sp.go_notecheck(Path("/tmp/bureau-c2sp-go"))
    if binary is None:
        pytest.skip(
            "no Go toolchain: the Go reference check (golang.org/x/mod/sumdb/note) needs it"
        )
    return binary


def test_the_go_reference_implementation_opens_our_note(notecheck: Path) -> None:
    note = signed().render()
    opened = c2sp.go_open(notecheck, note, vkeys())
    assert opened["text"] == checkpoint_text("example.com/log", 20852163, ROOT)
    assert opened["verified"] == ["example.com/log", "witness.example/w1"]
    with pytest.raises(ValueError, match="invalid signature"):
        c2sp.go_open(notecheck, note.replace("20852163", "1", 1), vkeys())
    with pytest.raises(ValueError, match="no verifiable signatures"):
        c2sp.go_open(notecheck, note, [c2sp.ecdsa_vkey("other.example/log", SPKI)])
