"""A card's ODA data at preparation (EMV Book 2): its ICC key pair drawn from the pool, its ICC
public key certificate (format '04') and its signed static application data (format '03'),
signed with the issuer private key in the HSM over the card's static data (HSM worker).

The ICC key pool: pairs generated in the HSM and wrapped at once under the pool key
(hsm/rsa.py, hsm/storage.py); keymgmt's table counts them, a batch draws them, a background task
refills them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.keymgmt.emv.oda import OdaError, icc_certificate_block, sda_block
from services.keymgmt.emv.profile import EmvProfile, OdaMethod
from services.keymgmt.emv.records import (
    CardOda,
    CardRecord,
    IssuerOda,
    aip,
    static_data,
    static_record,
)
from services.keymgmt.hsm.rsa import PooledPair, RsaPublic, generate_pooled_pair, rsa_raw_sign
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.hsm.storage import ICC_POOL_KEY, ensure_storage_key

ICC_BITS = 1024


def generate_pool_pairs(
    hsm: Hsm, count: int, bits: int = ICC_BITS, pool_label: str = ICC_POOL_KEY
) -> list[PooledPair]:
    """``count`` ICC key pairs for the pool, each private key wrapped under the pool key."""
    pool_key = ensure_storage_key(hsm, pool_label)
    return [generate_pooled_pair(hsm, pool_key, bits) for _ in range(count)]


@dataclass(frozen=True)
class SignedCard:
    oda: CardOda
    static_hash: bytes  # SHA-256 of the static data the signatures cover


def sign_card_oda(
    hsm: Hsm,
    issuer_label: str,
    issuer: IssuerOda,
    record: CardRecord,
    profile: EmvProfile,
    effective: str,
    icc: RsaPublic | None,
    serial: bytes,
) -> SignedCard:
    """The card's SDA (format 03) and ICC PK certificate (format 04), both signed with the
    issuer private key in the HSM over the card's static data (HSM worker)."""
    static = static_data(static_record(record, profile, effective), aip(profile))
    ni = issuer.public.size
    sda = None
    if OdaMethod.SDA in profile.oda_methods:
        sda = rsa_raw_sign(hsm, issuer_label, sda_block(serial[-2:], static, ni))
    certificate, remainder, exponent = None, b"", b""
    if profile.needs_icc_key:
        if icc is None:
            raise OdaError("the product uses DDA/CDA but the card has no ICC key pair")
        block = icc_certificate_block(icc, record.pan, record.expiry, serial, static, ni)
        certificate = rsa_raw_sign(hsm, issuer_label, block.block)
        remainder, exponent = block.remainder, block.exponent
    oda = CardOda(sda, certificate, remainder, exponent)
    return SignedCard(oda, hashlib.sha256(static).digest())
