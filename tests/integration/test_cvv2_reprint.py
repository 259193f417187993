"""A card face reprinted after the purge still carries its CVV2 (issue 16), on the real keymgmt
(Postgres, Kafka, a fresh SoftHSM token with the issuer's CVK pair loaded by ceremony).

Once QA passes, the purge deletes the card's sealed CVV/iCVV row with the rest of its sensitive
authentication data; the print data graphical asks for later is computed again in the HSM under
the product's CVK pair. The oracle is psec's CVV (service code 000) for the PAN, expiry and the
test CVK, never our own code; and the CVV2 is in none of keymgmt's tables afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from psec import cvv

from services.keymgmt.emv.cvv import CVV2_SERVICE_CODE
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.keymgmt import CVK, auth, ordered, prepared_events, publish, vault
from tests.support.purge_scan import short_secret, table_hits
from tests.support.retention import issuer_with_products, milestone, rows_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

PAN, EXPIRY = "4761739001010077", "2812"  # vault() orders expiry 2812


async def test_a_reprint_after_the_purge_gets_the_cvv2_from_the_hsm_again(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
) -> None:
    runtime, http = keymgmt
    products = {"cvv-only": {"cvv": True}, "plain": {}}
    issuer, custodian = await issuer_with_products(settings, keymgmt, keymgmt_hsm, unique, products)
    graphical = auth(f"gr-{unique}")
    card = await vault(http, unique, issuer, PAN)
    other = await vault(http, unique, issuer, "4761739001010085")
    await publish(
        settings,
        ordered(card, issuer).model_copy(update={"product_id": "cvv-only"}),
        ordered(other, issuer).model_copy(update={"product_id": "plain"}),
    )
    assert len(await prepared_events(settings, 2)) == 2
    expected = cvv.generate_cvv(CVK, PAN, EXPIRY, CVV2_SERVICE_CODE)
    path = f"/v1/vault/cards/{card['card_id']}/print-data"
    first = await http.get(path, headers=graphical)
    assert first.status_code == 200, first.text
    assert first.json()["cvv2"] == expected

    passed = events.CardQaPassed(
        issuer_id=issuer,
        actor="qa",
        card_id=uuid.UUID(card["card_id"]),
        batch_id=uuid.uuid4(),
        chip_serial="CS-REPRINT",
        checks=["readback"],
    )
    await publish(settings, passed, stream="qa")
    await milestone(runtime, card["card_id"], "personalized_at")
    purged = await http.post("/v1/vault/purge", headers=custodian)
    assert purged.json()["sensitive_authentication_data"] == 1, purged.text
    sealed = await rows_of(runtime, card["card_id"], ["card_verification_values"])
    assert sealed == {"card_verification_values": 0}, "the sealed CVV/iCVV are gone"

    again = await http.get(path, headers=graphical)
    assert again.status_code == 200, again.text
    assert again.json()["cvv2"] == expected, "the reprint carries the CVV2, computed again"
    assert again.json()["expiry"] == EXPIRY
    plain = await http.get(f"/v1/vault/cards/{other['card_id']}/print-data", headers=graphical)
    assert plain.status_code == 200, plain.text
    assert "cvv2" not in plain.json(), "a product without a CVK pair prints no CVV2"
    secret = short_secret("CVV2", expected, "cvv2")
    assert await table_hits(runtime.engine, [runtime.schema], [secret]) == []
