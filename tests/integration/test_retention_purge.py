"""Retention on the real keymgmt (real Postgres, Kafka, a fresh SoftHSM token): a card's CVV/iCVV
and PIN blocks stay while its PIN mailer is unprinted, a destroyed card loses everything at
once, a dispatched card loses everything after its issuer's window; each deletion is an
audited card.data_purged event, and afterwards nothing of either card is left in any table."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.bus import collect
from tests.support.keymgmt import (
    ADDRESS,
    PROFILE,
    auth,
    load_security_keys,
    ordered,
    pan_hits,
    prepared_events,
    publish,
    vault,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

PAN_B = "4761739001010028"
SENSITIVE = ("vault_cards", "card_pins", "card_verification_values")


async def rows_of(runtime: ServiceRuntime, card_id: str) -> dict[str, int]:
    async with runtime.engine.connect() as conn:
        return {
            table: int(
                (
                    await conn.execute(
                        text(f"SELECT count(*) FROM {table} WHERE card_id = :c"), {"c": card_id}
                    )
                ).scalar_one()
            )
            for table in SENSITIVE
        }


async def milestone(runtime: ServiceRuntime, card_id: str, column: str) -> None:
    for _ in range(400):
        async with runtime.engine.connect() as conn:
            found = await conn.execute(
                text(f"SELECT {column} FROM card_retention WHERE card_id = :c"), {"c": card_id}
            )
            if found.scalar_one_or_none() is not None:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"keymgmt never recorded {column} of {card_id}")


async def texts_holding(runtime: ServiceRuntime, needles: list[str]) -> list[str]:
    """Every column of every table of keymgmt's schema, cast to text, searched."""
    hits = []
    async with runtime.engine.connect() as conn:
        columns = await conn.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = :s"
            ),
            {"s": runtime.schema},
        )
        for table, column in columns.all():
            for needle in needles:
                ref = f'{runtime.schema}.{table}."{column}"'
                where = f"position(:n in CAST({ref} AS text)) > 0"
                found = await conn.execute(
                    text(f"SELECT count(*) FROM {runtime.schema}.{table} WHERE {where}"),
                    {"n": needle},
                )
                if found.scalar_one():
                    hits.append(f"{table}.{column}")
    return hits


async def test_sad_and_cardholder_data_go_on_time_audited_and_leave_nothing(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
) -> None:
    runtime, http = keymgmt
    issuer, custodian = f"ia{unique}", auth(f"cu-{unique}")
    await load_demo_keys(settings, issuer)
    await load_security_keys(runtime, keymgmt_hsm, issuer)
    put = await http.put(f"/v1/products/{issuer}/visa-classic", json=PROFILE, headers=custodian)
    assert put.status_code == 200, put.text
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

    assert await pan_hits(runtime, [a["pan"], PAN_B]) == []
    assert await texts_holding(runtime, ["DOE/JANE", ADDRESS["lines"][0], "T1 1ST"]) == []
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
