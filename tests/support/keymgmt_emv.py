"""An issuer's full-profile EMV product on a running keymgmt (docs/emv-profile.md), through its
API: PIN and CVK keys by ceremony, the product's EMV profile, the bureau's test CA, the issuer
RSA key and its test-CA certificate, ICC pairs in the pool."""

from __future__ import annotations

from typing import Any

import httpx

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import CeremonySpec, run_demo_ceremony
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from shared.service import ServiceRuntime
from tests.support.keymgmt import PIN_3DES, auth

CVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
EMV_PRODUCT: dict[str, Any] = {"pin_formats": ["ISO-9564-1-FORMAT-0"], "cvv": True, "emv": {}}


async def load_pin_and_cvv_keys(runtime: ServiceRuntime, hsm: Hsm, issuer: str) -> None:
    for usage, kt, key_usage, value in (
        ("PIN-3DES", CeremonyKeyType.DES2, KeyUsage.ENCRYPT_ONLY, PIN_3DES),
        ("CVK-A", CeremonyKeyType.DES1, KeyUsage.ENCRYPT, CVK[:8]),
        ("CVK-B", CeremonyKeyType.DES1, KeyUsage.ENCRYPT, CVK[8:]),
    ):
        spec = CeremonySpec(f"{issuer}/{usage}/1", issuer, kt, key_usage, 2, "test")
        first = bytes(range(0x31, 0x31 + len(value))).hex()
        await run_demo_ceremony(runtime.engine, hsm, spec, value.hex(), first)


async def load_oda_keys(http: httpx.AsyncClient, unique: str, issuer: str, pairs: int) -> Any:
    """The test CA (index 92), the issuer key and certificate, ``pairs`` ICC pairs; returns the
    test CA's public key (JSON: modulus, exponent)."""
    cu = auth(f"cu-{unique}")
    ca = await http.post("/v1/ca-keys/test/92", json={"expires": "2031-12-31"}, headers=cu)
    assert ca.status_code == 200, ca.text
    key = await http.post(f"/v1/issuers/{issuer}/issuer-key", headers=cu)
    assert key.status_code == 200, key.text
    signed = await http.post(
        f"/v1/issuers/{issuer}/issuer-certificate/test-ca",
        json={"ca_index": "92", "bin": "476173", "expires": "2030-12-31"},
        headers=cu,
    )
    assert signed.status_code == 200, signed.text
    refill = await http.post("/v1/icc-pool/refill", json={"count": pairs}, headers=cu)
    assert refill.status_code == 200, refill.text
    return ca.json()


async def emv_product(
    http: httpx.AsyncClient,
    runtime: ServiceRuntime,
    hsm: Hsm,
    unique: str,
    issuer: str,
    product: str = "visa-classic",
) -> Any:
    """Everything a full-profile product needs; returns the test CA's public key."""
    await load_pin_and_cvv_keys(runtime, hsm, issuer)
    path = f"/v1/products/{issuer}/{product}"
    put = await http.put(path, json=EMV_PRODUCT, headers=auth(f"cu-{unique}"))
    assert put.status_code == 200, put.text
    return await load_oda_keys(http, unique, issuer, 2)
