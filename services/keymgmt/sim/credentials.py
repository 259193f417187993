"""Per-card SIM credentials (HSM worker): PIN1, PUK1, PIN2, PUK2, ADM1 and, when the profile
asks for OTA, the keys KIc, KID and KIK (3GPP TS 31.115 / ETSI TS 102 225 key set).

- PINs: decimal digits drawn from the HSM's RNG (bytes >= 250 rejected, so each digit is
  uniform). PIN1 and PIN2 have 4 digits, PUKs 8, ADM1 8. ADM1 is drawn per card, not
  diversified from an operator ADM key: a leaked ADM1 then opens one card's administrative
  files, never a whole population, and the operator receives every ADM1 in its output file
  (docs/sim.md). The values form one 48-byte block: the five values as the UICC takes them
  (ASCII digits, FF-padded to 8 bytes, TS 102 221 §9.5.2), then a flag block (byte 0: PIN1
  enabled). The block becomes a sensitive GENERIC_SECRET session object at once, the clear
  bytearray is zeroed, and the object leaves the HSM only wrapped (RFC 3394): under the SIM
  storage key for keymgmt's table and under the operator's transport key for its file.
- OTA keys: three AES-128 keys generated in the HSM, each wrapped like Ki.

SOFTHSM SHORTCUT (as for OPc, secrets.py): SoftHSM has no mechanism that makes decimal digits
inside the token, so the digits exist for an instant in this process's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass

from services.keymgmt.hsm.p11 import SymKey, as_key
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.sim.secrets import WRAP, generate_ki

if TYPE_CHECKING:
    from pkcs11.types import UnwrapMixin

PIN_DIGITS: Final = (4, 8, 4, 8, 8)  # PIN1, PUK1, PIN2, PUK2, ADM1
PIN_NAMES: Final = ("PIN1", "PUK1", "PIN2", "PUK2", "ADM1")
OTA_NAMES: Final = ("KIc", "KID", "KIK")
BLOCK: Final = 48


@dataclass(frozen=True)
class SimCredentials:
    pins_stored: bytes = field(repr=False)
    pins_transport: bytes = field(repr=False)
    ota_stored: bytes | None = field(default=None, repr=False)
    ota_transport: bytes | None = field(default=None, repr=False)


def _digits(hsm: Hsm, count: int, out: bytearray) -> None:
    while count:
        for byte in hsm.random(count + 4):
            if byte < 250 and count:
                out.append(0x30 + byte % 10)
                count -= 1


def pin_block(hsm: Hsm, pin1_enabled: bool) -> bytearray:
    """The 48-byte PIN block of one card (the caller zeroes it)."""
    block = bytearray()
    for n in PIN_DIGITS:
        start = len(block)
        _digits(hsm, n, block)
        block.extend(b"\xff" * (8 - (len(block) - start)))
    block.append(1 if pin1_enabled else 0)
    block.extend(bytes(BLOCK - len(block)))
    return block


def _secret_object(hsm: Hsm, value: bytearray) -> SymKey:
    template: dict[Attribute, Any] = {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.VALUE: bytes(value),
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: True,
    }
    return as_key(hsm.session.create_object(template))


def make_credentials(
    hsm: Hsm, storage_label: str, transport_label: str, pin1_enabled: bool, ota: bool
) -> SimCredentials:
    storage, transport = hsm.key(storage_label), hsm.key(transport_label)
    block = pin_block(hsm, pin1_enabled)
    try:
        pins = _secret_object(hsm, block)
    finally:
        block[:] = bytes(len(block))
    created = [pins]
    try:
        stored = storage.wrap_key(pins, mechanism=WRAP)
        sent = transport.wrap_key(pins, mechanism=WRAP)
        if not ota:
            return SimCredentials(stored, sent)
        # An OTA key is made as a Ki is: a sensitive AES-128 session object, leaving only wrapped.
        keys = [generate_ki(hsm) for _ in OTA_NAMES]
        created.extend(keys)
        ota_stored = b"".join(storage.wrap_key(k, mechanism=WRAP) for k in keys)
        ota_sent = b"".join(transport.wrap_key(k, mechanism=WRAP) for k in keys)
        return SimCredentials(stored, sent, ota_stored, ota_sent)
    finally:
        for obj in created:
            obj.destroy()


def make_batch_credentials(
    hsm: Hsm, storage_label: str, transport_label: str, count: int, pin1_enabled: bool, ota: bool
) -> list[SimCredentials]:
    """`count` cards' credentials (HSM worker)."""
    return [
        make_credentials(hsm, storage_label, transport_label, pin1_enabled, ota)
        for _ in range(count)
    ]


def credential_columns(credentials: SimCredentials) -> dict[str, bytes | None]:
    return {
        "pins_stored": credentials.pins_stored,
        "pins_transport": credentials.pins_transport,
        "ota_stored": credentials.ota_stored,
        "ota_transport": credentials.ota_transport,
    }


def pin1_of(hsm: Hsm, storage_label: str, pins_stored: bytes) -> bytes:
    """PIN1 of a card for QA's VERIFY (HSM worker): the PIN block unwrapped as a short-lived
    readable session object, its first 8 bytes kept, the object destroyed. The one value
    that leaves keymgmt in clear, and only to the QA station (audited by the caller)."""
    template: dict[Attribute, Any] = {
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: False,
        Attribute.EXTRACTABLE: True,
    }
    storage = cast("UnwrapMixin", hsm.key(storage_label))
    block = storage.unwrap_key(
        ObjectClass.SECRET_KEY,
        KeyType.GENERIC_SECRET,
        pins_stored,
        mechanism=WRAP,
        capabilities=MechanismFlag(0),
        template=template,
    )
    try:
        return bytes(block[Attribute.VALUE][:8])
    finally:
        block.destroy()
