"""The PIN mailer's domain: the PIN read back from its encrypted block in the HSM (HSM-worker
functions) and the mailer laid out in memory. No database, no printer here.

SOFTHSM SHORTCUT (as in emv/pin.py). A payment HSM prints PIN mailers from the encrypted block
inside its boundary (a "print PIN mailer" command driving an attached printer). SoftHSM has no
such command, so the PIN block is decrypted by the HSM and the PIN field is read here, in a
bytearray zeroed after use. Pillow needs the digits as a str to draw them, and the rendered
image lives until the request ends: both stay in this process and reach only the printer. The
issuer's PIN key must allow decryption (ceremony usage `encrypt`, not `encrypt-only`).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from PIL import Image, ImageDraw, ImageFont
from pkcs11 import Mechanism
from pkcs11.exceptions import PKCS11Error

from services.keymgmt.emv.pin import MAX_PIN, MIN_PIN, iso4_pan_field
from services.keymgmt.hsm.p11 import decrypt
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.vault.service import OpenedCard, open_card
from shared.fonts import truetype

_NAMESPACE = uuid.UUID("5b0f1f0e-8f0b-4c55-a4e3-2f1a7c6d9e42")
MAILER_SIZE = (1240, 874)  # A5 landscape at 150 dpi
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


class PinMailerError(Exception):
    """The PIN cannot be revealed for a mailer (the message names why, never a value)."""


def mailer_id_for(card_id: UUID) -> UUID:
    return uuid.uuid5(_NAMESPACE, f"pin-mailer/{card_id}")


# -- HSM worker functions -------------------------------------------------------------------
def _digits_from_field(field: bytes, control: int, fill: int) -> bytearray:
    """The PIN digits of an ISO 9564-1 PIN field: control nibble, length, digits, fill."""
    nibbles = bytearray()
    for b in field:
        nibbles += bytes((b >> 4, b & 0xF))
    try:
        length = nibbles[1]
        if nibbles[0] != control or not MIN_PIN <= length <= MAX_PIN:
            raise PinMailerError("the decrypted PIN block is not a PIN field of its format")
        pin = nibbles[2 : 2 + length]
        if any(d > 9 for d in pin) or any(d != fill for d in nibbles[2 + length : 16]):
            raise PinMailerError("the decrypted PIN block is malformed")
        return bytearray(pin)
    finally:
        nibbles[:] = bytes(len(nibbles))


def pin_from_iso0(hsm: Hsm, key_label: str, block: bytes, pan: str) -> bytearray:
    """ISO 9564-1 format 0: 3DES-ECB decrypt, xor the PAN field, read the PIN field."""
    clear = bytearray(decrypt(hsm.key(key_label), block, Mechanism.DES3_ECB))
    try:
        pan_field = bytes.fromhex("0000" + pan[:-1][-12:].rjust(12, "0"))
        for i, b in enumerate(pan_field):
            clear[i] ^= b
        return _digits_from_field(bytes(clear), 0, 0xF)
    finally:
        clear[:] = bytes(len(clear))


def pin_from_iso4(hsm: Hsm, key_label: str, block: bytes, pan: str) -> bytearray:
    """ISO 9564-1 format 4: block = AES(K, AES(K, PIN field) xor PAN field), undone."""
    key = hsm.key(key_label)
    middle = bytearray(decrypt(key, block, Mechanism.AES_ECB))
    try:
        for i, b in enumerate(iso4_pan_field(pan)):
            middle[i] ^= b
        field = bytearray(decrypt(key, bytes(middle), Mechanism.AES_ECB))
        try:
            return _digits_from_field(bytes(field[:8]), 4, 0xA)
        finally:
            field[:] = bytes(len(field))
    finally:
        middle[:] = bytes(len(middle))


def reveal_pin(
    hsm: Hsm, vaulted: Mapping[str, Any], pin_row: Mapping[str, Any]
) -> tuple[bytearray, OpenedCard]:
    """The card's PIN digits (zero them after use) and its opened vault record."""
    card = open_card(hsm, vaulted)
    try:
        if pin_row.get("iso0_block") is not None:
            label, block = pin_row["iso0_key_label"], bytes(pin_row["iso0_block"])
            return pin_from_iso0(hsm, label, block, card.pan), card
        label, block = pin_row["iso4_key_label"], bytes(pin_row["iso4_block"])
        return pin_from_iso4(hsm, label, block, card.pan), card
    except (PKCS11Error, AttributeError) as exc:
        # python-pkcs11 gives a key without CKA_DECRYPT no decrypt() at all: AttributeError.
        raise PinMailerError(
            f"the PIN key {label} cannot decrypt ({exc.__class__.__name__}): a PIN printed"
            " from its block needs a key imported with usage 'encrypt'"
        ) from exc


# -- the mailer -----------------------------------------------------------------------------
@dataclass(frozen=True)
class MailerText:
    issuer_name: str
    cardholder_name: str
    address_lines: tuple[str, ...]
    card_last4: str


def _font(path: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return truetype(path, size) or ImageFont.load_default(size)


def render_pin_mailer(mailer: MailerText, pin: bytearray) -> bytes:
    """The PIN mailer as a greyscale PNG (PIN mailers go to a monochrome printer; a third of
    an RGB image's bytes to encode, spool and send): address for the envelope window, the PIN
    in a sealed panel."""
    image = Image.new("L", MAILER_SIZE, "white")
    draw = ImageDraw.Draw(image)
    draw.text((70, 50), mailer.issuer_name, font=_font(FONT_BOLD, 40), fill="#1f3a5f")
    y = 160
    for line in (mailer.cardholder_name, *mailer.address_lines):
        draw.text((70, y), line, font=_font(FONT, 28), fill="black")
        y += 38
    body = _font(FONT, 24)
    draw.text(
        (70, 470), f"The PIN of your card ending {mailer.card_last4}:", font=body, fill="black"
    )
    draw.rectangle((70, 520, 620, 680), outline="#1f3a5f", width=4, fill="#e8eef5")
    digits = "  ".join(str(d) for d in pin)  # an immutable copy Pillow needs: see the module doc
    draw.text((110, 555), digits, font=_font(FONT_BOLD, 72), fill="black")
    del digits
    draw.text((70, 720), "Learn your PIN, then destroy this letter.", font=body, fill="black")
    draw.text((70, 760), "Your card travels separately.", font=body, fill="black")
    out = io.BytesIO()
    # Saved as an 8-bit grey palette (the same pixels: Pillow's L to P keeps a grey ramp):
    # Pillow tries five PNG filters on every row of an L image and none on a palette one, which
    # makes the encoding three times cheaper. zlib level 1: the default level took 12 % of
    # keymgmt's CPU in a 10,000-card run.
    image.convert("P").save(out, format="PNG", dpi=(150, 150), compress_level=1)
    return out.getvalue()


def mailer_text(issuer_id: str, card: OpenedCard) -> MailerText:
    """What the mailer shows: the envelope window's address and the card's last four digits."""
    address = card.address
    return MailerText(
        issuer_name=issuer_id,
        cardholder_name=card.cardholder_name,
        address_lines=(
            *address.get("lines", []),
            f"{address.get('postcode', '')} {address.get('city', '')}".strip(),
            address.get("country", ""),
        ),
        card_last4=card.pan[-4:],
    )
