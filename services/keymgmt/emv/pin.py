"""Cardholder PINs: generated from HSM random, kept only as encrypted ISO 9564-1 PIN blocks,
with the issuer's PIN verification data (Visa PVV or IBM 3624 offset). HSM-worker functions.

- ISO 9564-1 format 0: PIN field 0 || N || PIN || F fill, xor the PAN field
  0000 || 12 rightmost PAN digits excluding the check digit; enciphered with 3DES-ECB under
  the issuer's PIN key (DES2/DES3).
- ISO 9564-1 format 4: 16-byte PIN field 4 || N || PIN || A fill to 14 digits ||
  8 random bytes; PAN field M || PAN (M = length - 12) zero-padded; block =
  AES(K, AES(K, PIN field) xor PAN field). That is AES-CBC with a zero IV over PIN field ||
  PAN field, last block, so both encipherments and the xor happen in ONE HSM call.
- Visa PVV: TSP = 11 rightmost PAN digits excluding the
  check digit || PVKI || 4 leftmost PIN digits, 3DES-ECB under the PVK, decimalised (digits
  0-9 left to right, then A-F as 0-5), first 4.
- IBM 3624 offset: validation data (the issuer's PAN digits, by default the 12
  rightmost excluding the check digit; F-padded to 16) 3DES-ECB under the PVK, decimalised with the
  issuer's table, the first N digits are the natural PIN; offset = PIN - natural (mod 10).

SOFTHSM SHORTCUT (test and development tokens only). A payment HSM generates the PIN and
forms, encrypts and verifies PIN blocks inside its boundary (e.g. one "generate random PIN"
command returning the block, PVV or offset). SoftHSM has no such commands, so the PIN digits
are drawn from the HSM's RNG into a bytearray here, the clear PIN block/field and the PVV
input are built in process memory, encrypted by the HSM, and every buffer we own is zeroed.
The bytes() copies python-pkcs11 needs for C_Encrypt are outside our control. The clear PIN
and clear block are never returned, logged or stored: only ciphertexts, PVV and offset are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pkcs11 import Mechanism

from services.keymgmt.hsm.p11 import encrypt
from services.keymgmt.hsm.session import Hsm, HsmError, key_label

MIN_PIN, MAX_PIN = 4, 12
DEFAULT_DECIMALISATION = "0123456789012345"


class PinBlockFormat(StrEnum):
    ISO0 = "ISO-9564-1-FORMAT-0"
    ISO4 = "ISO-9564-1-FORMAT-4"


class PinVerification(StrEnum):
    NONE = "none"
    VISA_PVV = "visa-pvv"
    IBM3624_OFFSET = "ibm-3624-offset"


@dataclass(frozen=True)
class PinPolicy:
    """The issuer's product choice (keymgmt's pin_profiles table)."""

    length: int = 4
    formats: tuple[PinBlockFormat, ...] = (PinBlockFormat.ISO0,)
    verification: PinVerification = PinVerification.NONE
    pvki: str = "1"
    decimalisation: str = DEFAULT_DECIMALISATION
    validation_offset: int | None = None  # IBM 3624: None = 12 rightmost but the check digit
    validation_length: int = 12

    def validation_data(self, pan: str) -> bytes:
        """IBM 3624 validation data: the chosen PAN digits, F-padded to 16 digits."""
        digits = _pan_digits(pan)
        start = len(digits) - 13 if self.validation_offset is None else self.validation_offset
        chosen = digits[start : start + self.validation_length] if start >= 0 else ""
        if len(chosen) != self.validation_length:
            raise ValueError("IBM 3624 validation data must lie within the PAN")
        return bytes.fromhex(chosen.ljust(16, "F"))

    def __post_init__(self) -> None:
        if not MIN_PIN <= self.length <= MAX_PIN:
            raise ValueError(f"a PIN is {MIN_PIN}-{MAX_PIN} digits")
        if not self.formats:
            raise ValueError("at least one PIN block format")
        if len(self.pvki) != 1 or not self.pvki.isdigit():
            raise ValueError("PVKI is one digit")
        if len(self.decimalisation) != 16 or not self.decimalisation.isdigit():
            raise ValueError("a decimalisation table is 16 digits")
        if not 1 <= self.validation_length <= 16:
            raise ValueError("IBM 3624 validation data is 1-16 PAN digits")


@dataclass(frozen=True)
class PinKeys:
    """Labels of the issuer's PIN keys: 3DES for format 0, AES for format 4, the PVK."""

    iso0: str | None = None
    iso4: str | None = None
    pvk: str | None = None

    @classmethod
    def for_issuer(cls, issuer: str, version: int = 1) -> PinKeys:
        return cls(
            key_label(issuer, "PIN-3DES", version),
            key_label(issuer, "PIN-AES", version),
            key_label(issuer, "PVK", version),
        )


@dataclass(frozen=True)
class IssuedPin:
    """What is kept of a PIN: encrypted blocks (by format, with the key label), PVV, offset."""

    blocks: dict[PinBlockFormat, tuple[str, bytes]] = field(repr=False)
    pvv: str | None = field(default=None, repr=False)
    offset: str | None = field(default=None, repr=False)


def _pan_digits(pan: str) -> str:
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise ValueError("a PAN is 12-19 digits")
    return pan


def _check_pin(pin: bytearray) -> None:
    if not MIN_PIN <= len(pin) <= MAX_PIN or any(d > 9 for d in pin):
        raise ValueError(f"a PIN is {MIN_PIN}-{MAX_PIN} digits")


def random_pin(hsm: Hsm, length: int) -> bytearray:
    """PIN digits (values 0-9) from the HSM's RNG, unbiased: bytes >= 250 are rejected."""
    if not MIN_PIN <= length <= MAX_PIN:
        raise ValueError(f"a PIN is {MIN_PIN}-{MAX_PIN} digits")
    pin = bytearray()
    while len(pin) < length:
        pool = bytearray(hsm.random(2 * length))
        pin += bytearray(b % 10 for b in pool if b < 250)[: length - len(pin)]
        pool[:] = bytes(len(pool))
    return pin


def _nibbles(digits: bytearray | list[int]) -> bytearray:
    if len(digits) % 2:
        raise ValueError("an even number of nibbles")
    return bytearray((digits[i] << 4) | digits[i + 1] for i in range(0, len(digits), 2))


def iso0_block(pin: bytearray, pan: str) -> bytearray:
    """The CLEAR format 0 block (SoftHSM shortcut: zero it once encrypted)."""
    _check_pin(pin)
    nib = [0, len(pin), *pin] + [0xF] * (14 - len(pin))
    block = _nibbles(nib)
    pan_field = bytes.fromhex("0000" + _pan_digits(pan)[:-1][-12:].rjust(12, "0"))
    for i, b in enumerate(pan_field):
        block[i] ^= b
    return block


def iso4_pin_field(pin: bytearray, fill: bytes) -> bytearray:
    """The CLEAR format 4 plain-text PIN field (SoftHSM shortcut: zero it once encrypted)."""
    _check_pin(pin)
    if len(fill) != 8:
        raise ValueError("format 4 random fill is 8 bytes")
    return _nibbles([4, len(pin), *pin] + [0xA] * (14 - len(pin))) + fill


def iso4_pan_field(pan: str) -> bytes:
    digits = _pan_digits(pan)
    m = max(len(digits) - 12, 0)
    return bytes.fromhex((str(m) + digits.rjust(12, "0")).ljust(32, "0"))


def encrypt_iso0(hsm: Hsm, key_label: str, pin: bytearray, pan: str) -> bytes:
    block = iso0_block(pin, pan)
    try:
        return encrypt(hsm.key(key_label), bytes(block), Mechanism.DES3_ECB)
    finally:
        block[:] = bytes(8)


def encrypt_iso4(
    hsm: Hsm, key_label: str, pin: bytearray, pan: str, fill: bytes | None = None
) -> bytes:
    """AES-CBC(zero IV) over PIN field || PAN field, last block = the format 4 PIN block.
    ``fill``: the 8 random fill bytes, from the HSM's RNG unless a test vector gives them."""
    pin_field = iso4_pin_field(pin, hsm.random(8) if fill is None else fill)
    data = pin_field + iso4_pan_field(pan)
    try:
        out = encrypt(hsm.key(key_label), bytes(data), Mechanism.AES_CBC, bytes(16))
        return out[16:32]
    finally:
        pin_field[:] = bytes(16)
        data[:] = bytes(32)


def decimalise(ciphertext: bytes, count: int) -> str:
    """Visa decimalisation: hex digits 0-9 left to right, then A-F as 0-5; the first count."""
    hexed = ciphertext.hex().upper()
    digits = [c for c in hexed if c.isdigit()]
    digits += [str(int(c, 16) - 10) for c in hexed if not c.isdigit()]
    return "".join(digits[:count])


def visa_pvv(hsm: Hsm, pvk_label: str, pvki: str, pin: bytearray, pan: str) -> str:
    _check_pin(pin)
    tsp = _nibbles([int(c) for c in _pan_digits(pan)[-12:-1] + pvki] + list(pin[:4]))
    try:
        return decimalise(encrypt(hsm.key(pvk_label), bytes(tsp), Mechanism.DES3_ECB), 4)
    finally:
        tsp[:] = bytes(8)


def ibm3624_offset(hsm: Hsm, pvk_label: str, policy: PinPolicy, pin: bytearray, pan: str) -> str:
    _check_pin(pin)
    validation = policy.validation_data(pan)
    natural = encrypt(hsm.key(pvk_label), validation, Mechanism.DES3_ECB).hex().upper()
    natural_pin = [int(policy.decimalisation[int(c, 16)]) for c in natural[: len(pin)]]
    return "".join(str((p - n) % 10) for p, n in zip(pin, natural_pin, strict=True))


def protect_pin(hsm: Hsm, pin: bytearray, pan: str, policy: PinPolicy, keys: PinKeys) -> IssuedPin:
    """Encrypt a PIN in every format the policy names and compute its verification data."""
    blocks: dict[PinBlockFormat, tuple[str, bytes]] = {}
    for fmt in policy.formats:
        label = keys.iso0 if fmt is PinBlockFormat.ISO0 else keys.iso4
        if label is None:
            raise HsmError(f"the issuer has no PIN key for {fmt}")
        enc = encrypt_iso0 if fmt is PinBlockFormat.ISO0 else encrypt_iso4
        blocks[fmt] = (label, enc(hsm, label, pin, pan))
    if policy.verification is PinVerification.NONE:
        return IssuedPin(blocks)
    if keys.pvk is None:
        raise HsmError("the issuer has no PVK")
    if policy.verification is PinVerification.VISA_PVV:
        return IssuedPin(blocks, pvv=visa_pvv(hsm, keys.pvk, policy.pvki, pin, pan))
    return IssuedPin(blocks, offset=ibm3624_offset(hsm, keys.pvk, policy, pin, pan))


def issue_pin(hsm: Hsm, pan: str, policy: PinPolicy, keys: PinKeys) -> IssuedPin:
    """A new random PIN for a card (HSM worker): only its protected forms come back."""
    pin = random_pin(hsm, policy.length)
    try:
        return protect_pin(hsm, pin, pan, policy, keys)
    finally:
        pin[:] = bytes(len(pin))
