"""keymgmt: the audit log's checkpoint-signing key (issue 6), held in the HSM.

An EC P-256 key pair generated inside the HSM (private half sensitive, non-extractable) on
first use, under an advisory lock so replicas make one, and kept in the key inventory. The
audit service alone may have a checkpoint digest signed; anyone auditing may read the public
key. SoftHSM offers CKM_ECDSA over a digest but not CKM_ECDSA_SHA256 (INFRA.md), so the caller
sends SHA-256(checkpoint) and the result is an ordinary ECDSA-with-SHA256 signature over the
checkpoint text (FIPS 186-5), DER-encoded as in RFC 5480 / X9.62.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import APIRouter, Depends, HTTPException, Request
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import NoSuchKey
from pkcs11.util.ec import (
    encode_ec_public_key,
    encode_ecdsa_signature,
    encode_named_curve_parameters,
)
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.keymgmt.hsm import Hsm
from services.keymgmt.repository import KeymgmtRepository, key_row
from shared.auth import Principal, require
from shared.checkpoint_note import checkpoint_note, note_digest

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


@cache
def signing_settings() -> SigningSettings:
    return SigningSettings()


class CheckpointToSign(BaseModel):
    """The fields of an audit checkpoint; keymgmt writes the signed text from them itself."""

    origin: str = Field(min_length=1, max_length=128, pattern=r"^[^\n]+$")
    tree_size: int = Field(ge=0)
    root_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    timestamp: datetime


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


async def ensure_signing_key(request: Request) -> tuple[Hsm, str, bytes]:
    """The HSM, the key label and its public key; generated and inventoried on first use."""
    runtime = request.app.state.runtime
    hsm: Hsm = runtime.gate.get()
    label = signing_settings().audit_signing_key_label
    async with runtime.engine.begin() as conn:
        repo = KeymgmtRepository(conn)
        row = await repo.key(label)
        if row is None:
            await repo.lock("keymgmt.audit-signing-key")
            row = await repo.key(label)  # another replica may have made it meanwhile
        if row is None:
            der = await hsm.call(public_key_der, label)
            if der is None:
                der = await hsm.call(generate_signing_key, label)
            kcv = [(key_id(der)[:6].upper(), "SHA256-SPKI")]
            await repo.add_key(key_row(label, "bureau", "EC-P256", USAGE, kcv, "generated"))
            row = await repo.key(label)
    der = await hsm.call(public_key_der, label)
    if der is None or row is None:
        raise HTTPException(409, f"signing key {label} is in the inventory but not the HSM")
    if row["state"] != "active":
        raise HTTPException(409, f"signing key {label} is {row['state']}")
    return hsm, label, der


router = APIRouter(prefix="/v1/signing", tags=["signing"])
AuditService = Annotated[Principal, Depends(require("service"))]
KeyReader = Annotated[Principal, Depends(require("auditor", "custodian", "admin", "service"))]


@router.post(
    "/audit-checkpoints", summary="Sign an audit checkpoint built from its fields (service audit)"
)
async def sign_checkpoint(body: CheckpointToSign, who: AuditService, request: Request) -> Any:
    if who.name != "audit":
        raise HTTPException(403, f"service {who.name!r} may not sign audit checkpoints")
    hsm, label, der = await ensure_signing_key(request)
    note = checkpoint_note(body.origin, body.tree_size, body.root_hash, body.timestamp)
    signature = await hsm.call(sign_digest, label, note_digest(note))
    return {
        "key_id": key_id(der),
        "algorithm": ALGORITHM,
        "signature": base64.b64encode(signature).decode(),
    }


@router.get("/audit-checkpoints/public-key", summary="The checkpoint-verification key (PEM)")
async def checkpoint_public_key(who: KeyReader, request: Request) -> dict[str, Any]:
    _, label, der = await ensure_signing_key(request)
    return {
        "label": label,
        "key_id": key_id(der),
        "algorithm": ALGORITHM,
        "public_key_pem": pem(der),
    }
