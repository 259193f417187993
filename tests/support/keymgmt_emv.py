"""An issuer's full-profile EMV product on a running keymgmt (docs/emv-profile.md), through its
API: PIN and CVK keys by ceremony, the product's EMV profile, the bureau's test CA, the issuer
RSA key and its test-CA certificate, ICC pairs in the pool."""

from __future__ import annotations

from typing import Any

import httpx

from demo.emv_product import EMV_PRODUCT as EMV_PRODUCT
from demo.emv_product import set_up_emv_product
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import DEMO_EMV_KEYS, CeremonySpec, run_demo_ceremony
from shared.service import ServiceRuntime
from tests.support.keymgmt import auth

CVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


async def load_pin_and_cvv_keys(runtime: ServiceRuntime, hsm: Hsm, issuer: str) -> None:
    """The PIN key and CVKs `ceremony demo-keys --emv` loads (DEMO_EMV_KEYS), on the test's HSM."""
    for usage, (key_type, key_usage, value, first) in DEMO_EMV_KEYS.items():
        spec = CeremonySpec(f"{issuer}/{usage}/1", issuer, key_type, key_usage, 2, "test")
        await run_demo_ceremony(runtime.engine, hsm, spec, value, first)


async def load_oda_keys(http: httpx.AsyncClient, unique: str, issuer: str, pairs: int) -> Any:
    """The test CA (index 92), the issuer key and certificate, ``pairs`` ICC pairs, and the
    product profile, with demo/emv_product.py (the one set-up of demo, e2e and these tests);
    returns the test CA's public key (JSON: modulus, exponent)."""
    cu = auth(f"cu-{unique}")
    return await set_up_emv_product(
        http, issuer, "visa-classic", bin_="476173", pairs=pairs, headers=cu
    )


async def emv_product(
    http: httpx.AsyncClient,
    runtime: ServiceRuntime,
    hsm: Hsm,
    unique: str,
    issuer: str,
) -> Any:
    """Everything a full-profile product needs; returns the test CA's public key."""
    await load_pin_and_cvv_keys(runtime, hsm, issuer)
    return await load_oda_keys(http, unique, issuer, 2)
