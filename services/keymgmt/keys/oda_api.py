"""ODA key endpoints (docs/emv-profile.md): the CA public keys the bureau trusts (by RID and
index), the bureau's test CA (test and demo only), an issuer's RSA key pair generated in the
HSM, its public key certificate (imported and checked against the CA, or signed by the test CA),
and the ICC key pool."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter

from services.keymgmt.deps import Conductor, KeymgmtDepsDep, KeyReader, Qa, who_of
from services.keymgmt.emv.icc_pool import refill_pool
from services.keymgmt.emv.oda import (
    TEST_RID,
    OdaError,
    bureau_test_ca_label,
    issuer_key_label,
)
from services.keymgmt.hsm.rsa import RsaPublic, rsa_public
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.oda import (
    CA_BITS,
    ISSUER_BITS,
    check_imported_certificate,
    ensure_rsa_pair,
    sign_with_test_ca,
)
from services.keymgmt.keys.oda_schemas import (
    CaPublicKeyIn,
    CertificateRefused,
    IssuerCertificateIn,
    NoCaKey,
    NoIssuerKey,
    NotInProduction,
    PoolRefillIn,
    TestCaIn,
    TestCertificateIn,
    UnknownCa,
)
from shared.keymgmt.contract import CaPublicKey
from shared.service import RuntimeDep

router = APIRouter(prefix="/v1", tags=["oda"])


def _public_json(public: RsaPublic) -> dict[str, Any]:
    return {"modulus": public.modulus.hex().upper(), "exponent": public.exponent.hex().upper()}


@router.put("/ca-keys/{rid}/{ca_index}", summary="Trust a scheme CA public key (RID + index)")
async def put_ca_key(
    rid: str, ca_index: str, body: CaPublicKeyIn, who: Conductor, runtime: RuntimeDep
) -> Any:
    row: dict[str, Any] = {
        "rid": rid.upper(),
        "ca_index": ca_index.upper(),
        "modulus": bytes.fromhex(body.modulus),
        "exponent": bytes.fromhex(body.exponent),
        "expires": body.expires,
        "source": "scheme",
        "added_by": who_of(who),
    }
    if len(row["rid"]) != 10 or len(row["ca_index"]) != 2:
        raise UnknownCa("rid must be 5 bytes hex and ca_index 1 byte hex")
    async with runtime.unit_of_work() as uow:
        await uow.repo.oda.put_ca_key(row)
    return {"rid": row["rid"], "ca_index": row["ca_index"], "expires": body.expires}


@router.get("/ca-keys/{rid}/{ca_index}", response_model=CaPublicKey)
async def get_ca_key(rid: str, ca_index: str, who: Qa, runtime: RuntimeDep) -> Any:
    """A trusted CA public key, for QA's terminal-side ODA checks."""
    async with runtime.unit_of_work() as uow:
        row = await uow.repo.oda.ca_key(rid.upper(), ca_index.upper())
    if row is None:
        raise NoCaKey(f"no trusted CA public key {rid.upper()}/{ca_index.upper()}")
    return CaPublicKey(
        rid=row["rid"],
        ca_index=row["ca_index"],
        modulus=bytes(row["modulus"]).hex().upper(),
        exponent=bytes(row["exponent"]).hex().upper(),
        expires=row["expires"],
    )


@router.post("/ca-keys/test/{ca_index}", summary="The bureau's test CA key pair (test, demo)")
async def make_test_ca(
    ca_index: str, body: TestCaIn, who: Conductor, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    if deps.settings.environment not in ("dev", "test"):
        raise NotInProduction("the test CA exists only in dev and test environments")
    index = int(ca_index, 16)
    public = await deps.hsm().call(ensure_rsa_pair, bureau_test_ca_label(index), CA_BITS)
    row: dict[str, Any] = {"rid": TEST_RID, "ca_index": f"{index:02X}"}
    row |= {"modulus": public.modulus}
    row |= {"exponent": public.exponent, "expires": body.expires, "source": "test-ca"}
    async with runtime.unit_of_work() as uow:
        await uow.repo.oda.put_ca_key(row | {"added_by": who_of(who)})
    return {"rid": TEST_RID, "ca_index": f"{index:02X}"} | _public_json(public)


@router.post("/issuers/{issuer_id}/issuer-key", summary="Generate the issuer RSA key pair")
async def make_issuer_key(issuer_id: str, who: Conductor, deps: KeymgmtDepsDep) -> Any:
    """The pair is generated in the HSM once; the public key goes to the scheme CA."""
    label = issuer_key_label(issuer_id)
    public = await deps.hsm().call(ensure_rsa_pair, label, ISSUER_BITS)
    return {"label": label} | _public_json(public)


@router.get("/issuers/{issuer_id}/issuer-key")
async def get_issuer_key(issuer_id: str, who: KeyReader, deps: KeymgmtDepsDep) -> Any:
    label = issuer_key_label(issuer_id)
    public = await deps.hsm().call(rsa_public, label)
    if public is None:
        raise NoIssuerKey(f"no issuer RSA key {label}")
    return {"label": label} | _public_json(public)


async def _trusted_ca(runtime: RuntimeDep, rid: str, ca_index: str, today: date) -> RsaPublic:
    async with runtime.unit_of_work() as uow:
        ca = await uow.repo.oda.ca_key(rid, ca_index)
    if ca is None:
        raise UnknownCa(f"issuer certificate: CA {rid}/{ca_index} is not a trusted CA public key")
    if ca["expires"] < today:
        raise CertificateRefused(f"issuer certificate: CA {rid}/{ca_index} expired")
    return RsaPublic(bytes(ca["modulus"]), bytes(ca["exponent"]))


@router.put("/issuers/{issuer_id}/issuer-certificate", summary="Import the issuer certificate")
async def import_issuer_certificate(
    issuer_id: str,
    body: IssuerCertificateIn,
    who: Conductor,
    runtime: RuntimeDep,
    deps: KeymgmtDepsDep,
) -> Any:
    """Checked against the CA public key and the issuer key (Book 2 §5.3) before it is kept."""
    rid, index, today = body.rid.upper(), body.ca_index.upper(), date.today()
    ca = await _trusted_ca(runtime, rid, index, today)
    label = issuer_key_label(issuer_id)
    cert, remainder = bytes.fromhex(body.certificate), bytes.fromhex(body.remainder)
    exponent = bytes.fromhex(body.exponent)
    try:
        facts = await deps.hsm().call(
            check_imported_certificate, label, cert, remainder, exponent, ca, today
        )
    except OdaError as exc:
        raise CertificateRefused(f"issuer certificate refused: {exc}") from exc
    row: dict[str, Any] = {"issuer_id": issuer_id, "key_label": label, "rid": rid}
    row |= {"ca_index": index}
    row |= {"certificate": cert, "remainder": remainder, "exponent": exponent}
    row |= {"serial": facts.serial.hex().upper(), "expires": facts.expires, "origin": "imported"}
    async with runtime.unit_of_work() as uow:
        await uow.repo.oda.put_issuer_certificate(row | {"added_by": who_of(who)})
    return {"issuer_id": issuer_id, "key_label": label, "expires": facts.expires}


@router.post("/issuers/{issuer_id}/issuer-certificate/test-ca")
async def sign_issuer_certificate(
    issuer_id: str,
    body: TestCertificateIn,
    who: Conductor,
    runtime: RuntimeDep,
    deps: KeymgmtDepsDep,
) -> Any:
    """The issuer certificate signed by the bureau's test CA in the HSM (test and demo)."""
    if deps.settings.environment not in ("dev", "test"):
        raise NotInProduction("the test CA signs only in dev and test environments")
    index = body.ca_index.upper()
    await _trusted_ca(runtime, TEST_RID, index, date.today())
    label, hsm = issuer_key_label(issuer_id), deps.hsm()
    if await hsm.call(rsa_public, label) is None:
        raise NoIssuerKey(f"no issuer RSA key {label}: generate it first")
    serial = await hsm.call(Hsm.random, 3)
    cert = await hsm.call(sign_with_test_ca, int(index, 16), label, body.bin, body.expires, serial)
    row: dict[str, Any] = {"issuer_id": issuer_id, "key_label": label, "rid": TEST_RID}
    row |= {"ca_index": index}
    row |= {"certificate": cert.certificate, "remainder": cert.remainder}
    row |= {"exponent": cert.exponent, "serial": serial.hex().upper(), "origin": "test-ca"}
    async with runtime.unit_of_work() as uow:
        await uow.repo.oda.put_issuer_certificate(
            row | {"expires": body.expires, "added_by": who_of(who)}
        )
    return {"issuer_id": issuer_id, "key_label": label, "certificate": cert.certificate.hex()}


@router.get("/icc-pool", summary="Free ICC key pairs in the pool")
async def pool_status(who: KeyReader, runtime: RuntimeDep) -> Any:
    async with runtime.unit_of_work() as uow:
        return {"free": await uow.repo.oda.free_pool_pairs()}


@router.post("/icc-pool/refill", summary="Generate ICC key pairs for the pool now")
async def pool_refill(
    body: PoolRefillIn, who: Conductor, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    return {"free": await refill_pool(runtime, deps.hsm(), body.count, who_of(who))}
