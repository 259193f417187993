"""The offline PIN (DGI 8010, docs/emv-profile.md): an ISO 9564-1 format 2 PIN block
`2 N PIN F..F` (8 bytes) followed by `80 00..00`, AES-ECB under the card's K_DEK.

At preparation the block is put in the HSM as a 16-byte AES key object and wrapped at once
under the bureau PIN storage key (CKM_AES_KEY_WRAP, RFC 3394); the wrap is kept with the card's
PIN. At personalization it is unwrapped in the HSM and wrapped under K_DEK with CKM_AES_CBC and
a zero IV over its one block (= AES-ECB, as DGI 8000): the PIN never reaches Python then.

SOFTHSM SHORTCUT, as for the PIN itself (pin.py): the clear block is built in process memory
at preparation, from the same digits as the PIN blocks, and zeroed; a payment HSM forms it
inside its boundary (one "translate PIN block" command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from services.keymgmt.hsm.p11 import SymKey, as_key
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.hsm.storage import ensure_storage_key

if TYPE_CHECKING:
    from pkcs11.types import UnwrapMixin


def format2_block(pin: bytearray) -> bytearray:
    """ISO 9564-1 format 2: control 2, length N, the PIN digits, F fill to 16 nibbles, then
    `80` and zeros to 16 bytes (the card's AES block)."""
    if not 4 <= len(pin) <= 12 or any(d > 9 for d in pin):
        raise ValueError("a PIN is 4-12 digits")
    nibbles = bytearray([2, len(pin), *pin]) + bytearray([0xF] * (14 - len(pin)))
    block = bytearray((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, 16, 2))
    nibbles[:] = bytes(len(nibbles))
    return block + bytearray(b"\x80" + bytes(7))


def store_offline_pin(hsm: Hsm, storage_label: str, pin: bytearray) -> bytes:
    """The offline PIN block wrapped under the storage key (HSM worker)."""
    storage = ensure_storage_key(hsm, storage_label)
    block = format2_block(pin)
    try:
        obj = as_key(
            hsm.session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.VALUE: bytes(block),
                    Attribute.TOKEN: False,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: True,
                }
            )
        )
    finally:
        block[:] = bytes(len(block))
    try:
        return bytes(storage.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP))
    finally:
        obj.destroy()


def offline_pin_dgi(hsm: Hsm, storage_label: str, wrapped: bytes, kdek: SymKey) -> bytes:
    """DGI 8010's value: AES-ECB(K_DEK, block), formed in the HSM (HSM worker)."""
    storage = hsm.key(storage_label)
    template: dict[Attribute, Any] = {
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: True,
    }
    obj = as_key(
        cast("UnwrapMixin", storage).unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            wrapped,
            mechanism=Mechanism.AES_KEY_WRAP,
            capabilities=MechanismFlag(0),
            template=template,
        )
    )
    try:
        return bytes(kdek.wrap_key(obj, mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16)))
    finally:
        obj.destroy()
