"""The set-up and the look-ups keymgmt's retention tests share: an issuer whose PIN, PVV and CVV
keys are loaded by ceremony with its products defined, how many rows of a card each sensitive
table holds, and waiting for a retention milestone (card_retention) to be noted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from sqlalchemy import text

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared.db import checked_identifier
from shared.service import ServiceRuntime
from tests.support.bus import wait_for
from tests.support.keymgmt import auth, load_security_keys

# keymgmt's tables of a card's sensitive data: the vaulted record, PIN blocks, sealed CVV/iCVV.
SENSITIVE = ("vault_cards", "card_pins", "card_verification_values")


async def issuer_with_products(
    settings: KeymgmtSettings,
    keymgmt: tuple[ServiceRuntime, httpx.AsyncClient],
    hsm: Hsm,
    unique: str,
    products: Mapping[str, Any],
) -> tuple[str, dict[str, str]]:
    """A fresh issuer `ia<unique>` with the demo keys and its PIN/PVK/CVK keys by ceremony, and
    each product's profile PUT by its custodian. Returns the issuer and the custodian's headers."""
    runtime, http = keymgmt
    issuer, custodian = f"ia{unique}", auth(f"cu-{unique}")
    await load_demo_keys(settings, issuer)
    await load_security_keys(runtime, hsm, issuer)
    for product, profile in products.items():
        put = await http.put(f"/v1/products/{issuer}/{product}", json=profile, headers=custodian)
        assert put.status_code == 200, put.text
    return issuer, custodian


async def rows_of(
    runtime: ServiceRuntime, card_id: object, tables: Iterable[str] = SENSITIVE
) -> dict[str, int]:
    """How many rows of the card each table holds."""
    found = {}
    async with runtime.engine.connect() as conn:
        for table in tables:
            count = await conn.execute(
                text(f"SELECT count(*) FROM {checked_identifier(table)} WHERE card_id = :c"),  # noqa: S608
                {"c": card_id},
            )
            found[table] = int(count.scalar_one())
    return found


async def milestone(runtime: ServiceRuntime, card_id: object, column: str) -> None:
    """Wait until keymgmt notes the card's milestone (`personalized_at`, `finished_at`...)."""

    async def noted() -> bool:
        async with runtime.engine.connect() as conn:
            found = await conn.execute(
                text(
                    f"SELECT {checked_identifier(column)} FROM card_retention WHERE card_id = :c"  # noqa: S608
                ),
                {"c": card_id},
            )
            return found.scalar_one_or_none() is not None

    await wait_for(noted, timeout=60)
