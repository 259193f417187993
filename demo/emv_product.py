"""A full-profile EMV product on a running keymgmt, through its API only (docs/emv-profile.md):
the product's profile (a PIN, CVVs, the default EMV profile), the bureau's test CA, the issuer
RSA key and its certificate from the test CA, and ICC key pairs in the pool for its cards.

`make demo`, the e2e suite and the integration tests all set a product up with this one
function; each step is idempotent (keys are made once, a profile or certificate is replaced),
so a second run against the same stack changes nothing but the pool's size. The issuer's IMKs,
PIN and CVV keys come first from `python -m services.keymgmt ceremony demo-keys`.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

EMV_PRODUCT: Final[dict[str, Any]] = {
    "pin_formats": ["ISO-9564-1-FORMAT-0"],
    "cvv": True,
    "emv": {},
}
TEST_CA_INDEX: Final = "92"
TEST_CA_EXPIRES: Final = "2031-12-31"
ISSUER_CERTIFICATE_EXPIRES: Final = "2030-12-31"


class ProductSetupFailed(RuntimeError):
    """keymgmt refused a step; the message names the step and keymgmt's answer."""


def _ok(step: str, response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise ProductSetupFailed(
            f"{step}: keymgmt answered {response.status_code}: {response.text}"
        )
    return response.json()


async def set_up_emv_product(
    keymgmt: httpx.AsyncClient,
    issuer_id: str,
    product_id: str,
    *,
    bin_: str,
    pairs: int,
    profile: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """Set the product up with `keymgmt` (a client holding a custodian's or an admin's token);
    `bin_` is the PAN prefix the issuer certificate names, `pairs` the ICC pairs to add to the
    pool (one per DDA/CDA card); `headers` go with each request. Returns the test CA's public
    key (JSON)."""
    path = f"/v1/products/{issuer_id}/{product_id}"
    _ok("product profile", await keymgmt.put(path, json=profile or EMV_PRODUCT, headers=headers))
    ca = _ok(
        "test CA",
        await keymgmt.post(
            f"/v1/ca-keys/test/{TEST_CA_INDEX}", json={"expires": TEST_CA_EXPIRES}, headers=headers
        ),
    )
    _ok("issuer key", await keymgmt.post(f"/v1/issuers/{issuer_id}/issuer-key", headers=headers))
    certificate = {"ca_index": TEST_CA_INDEX, "bin": bin_, "expires": ISSUER_CERTIFICATE_EXPIRES}
    _ok(
        "issuer certificate",
        await keymgmt.post(
            f"/v1/issuers/{issuer_id}/issuer-certificate/test-ca", json=certificate, headers=headers
        ),
    )
    _ok(
        "ICC key pool",
        await keymgmt.post("/v1/icc-pool/refill", json={"count": pairs}, headers=headers),
    )
    return ca
