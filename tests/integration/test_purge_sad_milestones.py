"""Sensitive authentication data goes at the right milestone, on the real keymgmt (Postgres,
Kafka, a fresh SoftHSM token), the milestones coming as the other services' events:

- a card with CVVs and no PIN loses them as soon as QA passes (no mailer to wait for), its
  cardholder data staying for the issuer's window;
- a card cancelled by its issuer after keymgmt prepared it loses its PIN blocks, CVVs and
  vault record at once.

(A PIN card keeps its blocks until its mailer is printed: test_retention_purge.py; and loses
them once the mailer is really printed: test_purge_leaves_nothing.py.)
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.keymgmt import PROFILE, ordered, prepared_events, publish, vault
from tests.support.retention import SENSITIVE, issuer_with_products, milestone, rows_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]


async def test_cvvs_without_a_pin_go_at_qa_and_a_cancelled_card_loses_everything(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
) -> None:
    runtime, http = keymgmt
    products = {"visa-classic": PROFILE, "cvv-only": {"cvv": True}}
    issuer, custodian = await issuer_with_products(settings, keymgmt, keymgmt_hsm, unique, products)
    plain = await vault(http, unique, issuer, "4761739001010051")
    pinned = await vault(http, unique, issuer, "4761739001010069")
    plain_order = ordered(plain, issuer).model_copy(update={"product_id": "cvv-only"})
    pinned_order = ordered(pinned, issuer)
    await publish(settings, plain_order, pinned_order)
    assert len(await prepared_events(settings, 2)) == 2
    assert await rows_of(runtime, plain["card_id"]) == {
        "vault_cards": 1,
        "card_pins": 0,
        "card_verification_values": 1,
    }
    assert await rows_of(runtime, pinned["card_id"]) == dict.fromkeys(SENSITIVE, 1)

    common = {"issuer_id": issuer}
    passed = events.CardQaPassed(
        **common,
        actor="qa",
        card_id=uuid.UUID(plain["card_id"]),
        batch_id=plain_order.batch_id,
        chip_serial="CS-PLAIN",
        checks=["readback"],
    )
    cancelled = events.CardCancelled(
        **common,
        actor="intake",
        card_id=uuid.UUID(pinned["card_id"]),
        batch_id=pinned_order.batch_id,
        order_id=pinned_order.order_id,
        reason="issuer cancelled",
    )
    await publish(settings, passed, stream="qa")
    await publish(settings, cancelled)
    await milestone(runtime, plain["card_id"], "personalized_at")
    await milestone(runtime, pinned["card_id"], "finished_at")

    purged = await http.post("/v1/vault/purge", headers=custodian)
    assert purged.json() == {"sensitive_authentication_data": 2, "cardholder_data": 1}
    assert await rows_of(runtime, plain["card_id"]) == {
        "vault_cards": 1,  # cardholder data: until the window after dispatch
        "card_pins": 0,
        "card_verification_values": 0,
    }
    assert await rows_of(runtime, pinned["card_id"]) == dict.fromkeys(SENSITIVE, 0)
    again = await http.post("/v1/vault/purge", headers=custodian)
    assert again.json() == {"sensitive_authentication_data": 0, "cardholder_data": 0}
