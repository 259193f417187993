"""Retention on the real keymgmt (real Postgres, Kafka, a fresh SoftHSM token): a card's CVV/iCVV
and PIN blocks stay while its PIN mailer is unprinted, a destroyed card loses everything at
once, a dispatched card loses everything after its issuer's window; each deletion is an
audited card.data_purged event, and afterwards nothing of either card is left in any table."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.bus import collect
from tests.support.keymgmt import ADDRESS, PROFILE, ordered, prepared_events, publish, vault
from tests.support.purge_scan import pan_secret, table_hits, text_secret
from tests.support.retention import SENSITIVE, issuer_with_products, milestone, rows_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

PAN_B = "4761739001010028"


async def test_sad_and_cardholder_data_go_on_time_audited_and_leave_nothing(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
) -> None:
    runtime, http = keymgmt
    products = {"visa-classic": PROFILE}
    issuer, custodian = await issuer_with_products(settings, keymgmt, keymgmt_hsm, unique, products)
    a, b = await vault(http, unique, issuer), await vault(http, unique, issuer, PAN_B)
    await publish(settings, ordered(a, issuer), ordered(b, issuer))
    prepared = await prepared_events(settings, 2)
    assert {type(e) for e in prepared} == {events.CardPrepared}
    assert await rows_of(runtime, a["card_id"]) == dict.fromkeys(SENSITIVE, 1)

    batch, common = uuid.uuid4(), {"issuer_id": issuer}
    card_a, card_b = uuid.UUID(a["card_id"]), uuid.UUID(b["card_id"])
    await publish(
        settings,
        events.CardQaPassed(
            **common, actor="qa", card_id=card_a, batch_id=batch, chip_serial="C1", checks=["x"]
        ),
        stream="qa",
    )
    await publish(
        settings,
        events.CardDestroyed(
            **common,
            actor="fulfillment",
            card_id=card_b,
            batch_id=batch,
            reason="damaged",
            witnesses=("olga", "omar"),
        ),
        stream="fulfillment",
    )
    await milestone(runtime, a["card_id"], "personalized_at")
    await milestone(runtime, b["card_id"], "finished_at")
    purged = await http.post("/v1/vault/purge", headers=custodian)
    assert purged.json() == {"sensitive_authentication_data": 1, "cardholder_data": 1}
    # A: personalized, its PIN mailer not printed yet, so its PIN blocks and CVVs stay.
    assert await rows_of(runtime, a["card_id"]) == dict.fromkeys(SENSITIVE, 1)
    assert await rows_of(runtime, b["card_id"]) == dict.fromkeys(SENSITIVE, 0)

    window = await http.put(
        f"/v1/vault/retention/{issuer}", json={"cardholder_days": 0}, headers=custodian
    )
    assert window.status_code == 200, window.text
    await publish(
        settings,
        events.ShipmentDispatched(
            **common,
            actor="fulfillment",
            shipment_id=uuid.uuid4(),
            batch_id=batch,
            kind="cards",
            card_ids=[card_a],
            courier="post",
            manifest_sha256="0" * 64,
        ),
        stream="fulfillment",
    )
    await milestone(runtime, a["card_id"], "dispatched_at")
    again = await http.post("/v1/vault/purge", headers=custodian)
    assert again.json() == {"sensitive_authentication_data": 1, "cardholder_data": 1}
    assert await rows_of(runtime, a["card_id"]) == dict.fromkeys(SENSITIVE, 0)

    cardholder = [pan_secret("PAN A", a["pan"]), pan_secret("PAN B", PAN_B)]
    cardholder += [text_secret("name", "DOE/JANE"), text_secret("street", ADDRESS["lines"][0])]
    cardholder += [text_secret("postcode", ADDRESS["postcode"])]
    assert await table_hits(runtime.engine, [runtime.schema], cardholder) == []
    audited = await collect(
        settings.kafka_bootstrap,
        settings.topic("keymgmt"),
        lambda seen: sum(b'"card.data_purged"' in r.value for r in seen) >= 3,
    )
    purges = [
        e
        for e in map(events.decode_event, (r.value for r in audited))
        if isinstance(e, events.CardDataPurged)
    ]
    sad, held = "sensitive-authentication-data", "cardholder-data"
    assert sorted((str(e.card_id), tuple(e.purged)) for e in purges) == sorted(
        [(str(card_b), (sad,)), (str(card_b), (held,)), (str(card_a), (sad, held))]
    )
