"""The audit log's checkpoint-signing key (issue 6), held in the HSM (HSM-worker functions).

An EC P-256 key pair generated inside the HSM (private half sensitive, non-extractable) on
first use, under an advisory lock so replicas make one, and kept in the key inventory. The
audit service alone may have a checkpoint signed (signing_api.py, which first checks it extends
the last one signed: signed_log.py); anyone auditing may read the public key. SoftHSM offers
CKM_ECDSA over a digest but not CKM_ECDSA_SHA256 (INFRA.md), so keymgmt hashes the C2SP
checkpoint text itself and the result is an ordinary ECDSA-with-SHA256 signature over it
(FIPS 186-5), DER-encoded as in RFC 5480 / X9.62: a signed-note signature of type 0x02
(c2sp.org/signed-note), as transparency tooling reads it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from functools import cache
from typing import TYPE_CHECKING, cast

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import NoSuchKey
from pkcs11.util.ec import (
    encode_ec_public_key,
    encode_ecdsa_signature,
    encode_named_curve_parameters,
)
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.keymgmt.hsm.session import Hsm

if TYPE_CHECKING:
    from pkcs11 import PublicKey
    from pkcs11.types import SignMixin

log = logging.getLogger(__name__)

ALGORITHM = "ecdsa-p256-sha256"
USAGE = "audit-checkpoint"


class SigningSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUREAU_", extra="ignore")

    audit_signing_key_label: str = Field(
        default="bureau/AUDITSIGN/1", description="HSM label of the checkpoint-signing key pair"
    )
    log_origin: str = Field(
        default="cardbureau/audit",
        description="the one log origin the key signs checkpoints for (also its key name)",
    )


@cache
def signing_settings() -> SigningSettings:
    return SigningSettings()


def public_key_der(hsm: Hsm, label: str) -> bytes | None:
    """SubjectPublicKeyInfo (DER) of the key pair, or None when absent (HSM worker)."""
    try:
        public = hsm.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
    except NoSuchKey:
        return None
    return bytes(encode_ec_public_key(cast("PublicKey", public)))


def generate_signing_key(hsm: Hsm, label: str) -> bytes:
    """A P-256 pair on the token; the private key never leaves the HSM (HSM worker)."""
    params = hsm.session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
    )
    params.generate_keypair(
        store=True,
        label=label,
        public_template={Attribute.VERIFY: True, Attribute.TOKEN: True},
        private_template={
            Attribute.SIGN: True,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
        },
    )
    log.info("generated audit checkpoint signing key", extra={"label": label})
    der = public_key_der(hsm, label)
    if der is None:
        raise RuntimeError(f"key pair {label} not found after generation")
    return der


def sign_digest(hsm: Hsm, label: str, digest: bytes) -> bytes:
    key = hsm.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
    raw = cast("SignMixin", key).sign(
        digest, mechanism=Mechanism.ECDSA
    )  # r || s over the given digest
    return bytes(encode_ecdsa_signature(raw))


def key_id(der: bytes) -> str:
    """SHA-256 of the SubjectPublicKeyInfo, as RFC 6962 names a log's key."""
    return hashlib.sha256(der).hexdigest()


def pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN PUBLIC KEY-----", *lines, "-----END PUBLIC KEY-----", ""])
