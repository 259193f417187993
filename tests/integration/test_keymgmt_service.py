"""keymgmt as a service on the real stack (Postgres, Kafka) with a fresh SoftHSM token:
demo ceremony -> vault -> card.ordered -> card.prepared, no clear PAN at rest or on Kafka,
missing issuer keys dead-lettered.

The token comes from tests/support/hsm.py. keymgmt loads SoftHSM from its own
copy of the library and keeps one session open for the whole test session (process_hsm), so
its C_Initialize/C_Finalize never touch the HSM-core tests' copy in the same process.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.bus import collect, records_of
from tests.support.keymgmt import ADDRESS, PAN16, PAN19, auth, ordered, pan_hits, publish, vault

pytestmark = pytest.mark.integration

ORDER_FIELDS = ("card_id", "pan", "psn", "expiry", "cardholder_name", "address")


def store_body(issuer: str, *cards: dict[str, Any]) -> dict[str, Any]:
    return {"issuer_id": issuer, "cards": list(cards)}


async def test_demo_keys_then_vault_then_card_ordered_becomes_card_prepared(
    settings: KeymgmtSettings, unique: str, keymgmt: tuple[ServiceRuntime, Any]
) -> None:
    runtime, http = keymgmt
    issuer, intake = f"ia{unique}", auth(f"in-{unique}")
    imported = await load_demo_keys(settings, issuer)
    imks = [f"{issuer}/IMK-AC/1", f"{issuer}/IMK-SMI/1", f"{issuer}/IMK-SMC/1"]
    assert imported == [*imks, settings.kmc_label]
    assert await load_demo_keys(settings, issuer) == []  # idempotent
    ready = await http.get("/ready")
    assert not [p for p in ready.json()["problems"] if p.startswith("hsm")]

    short, long = await vault(http, unique, issuer), await vault(http, unique, issuer, PAN19)
    assert short["pan_token"].startswith("pt_")
    assert short["masked_pan"] == "476173******0010"
    same = {k: short[k] for k in ORDER_FIELDS}
    again = await http.post("/v1/vault/cards", json=store_body(issuer, same), headers=intake)
    assert again.json()["cards"][0]["pan_token"] == short["pan_token"]  # idempotent
    other_pan = same | {"pan": "4111111111111111"}
    clash = await http.post("/v1/vault/cards", json=store_body(issuer, other_pan), headers=intake)
    assert clash.status_code == 409
    not_digits = store_body(issuer, other_pan | {"pan": "41111111111111x1"})
    bad = await http.post("/v1/vault/cards", json=not_digits, headers=intake)
    assert bad.status_code == 422
    assert "4111111111111" not in bad.text

    await publish(settings, ordered(short, issuer), ordered(long, issuer))
    records = await collect(
        settings.kafka_bootstrap, settings.topic("keymgmt"), records_of("card.prepared", 2)
    )
    card_id = short["card_id"]
    path = f"/v1/vault/cards/{card_id}"
    print_data = await http.get(f"{path}/print-data", headers=auth(f"gr-{unique}"))
    mailing = await http.get(f"{path}/mailing", headers=auth(f"fu-{unique}"))
    wrong = await http.get(f"{path}/mailing", headers=auth(f"gr-{unique}"))
    unknown = await http.get(
        f"/v1/vault/cards/{uuid.uuid4()}/print-data", headers=auth(f"gr-{unique}")
    )
    assert await pan_hits(runtime, [PAN16, PAN19]) == []
    async with runtime.engine.connect() as conn:
        accesses = await conn.execute(
            text("SELECT purpose FROM vault_access WHERE card_id = :c"), {"c": card_id}
        )
        purposes = set(accesses.scalars().all())
    decoded = [events.decode_event(r.value) for r in records]
    prepared = {str(e.card_id): e for e in decoded if isinstance(e, events.CardPrepared)}
    assert len(prepared) == 2
    assert prepared[card_id].application == "emv"
    assert prepared[card_id].version == 2
    assert prepared[card_id].key_scheme == "EMV-OPTION-A"
    assert prepared[card_id].masked_pan == "476173******0010"
    assert prepared[long["card_id"]].key_scheme == "EMV-OPTION-B"
    for record in records:
        raw = record.value + record.key + b"".join(v for _, v in record.headers)
        assert PAN16.encode() not in raw
        assert PAN19.encode() not in raw
    assert print_data.json() == {
        "card_id": card_id,
        "issuer_id": issuer,
        "cardholder_name": "DOE/JANE",
        "masked_pan": "476173******0010",
        "expiry": "2812",
    }
    assert mailing.json() == {"card_id": card_id, "cardholder_name": "DOE/JANE", "address": ADDRESS}
    assert (wrong.status_code, unknown.status_code) == (403, 404)
    assert purposes == {"store", "prepare", "print-data", "mailing"}


async def test_missing_issuer_keys_send_card_ordered_to_the_dead_letter_topic(
    settings: KeymgmtSettings, unique: str, keymgmt: tuple[ServiceRuntime, Any]
) -> None:
    _, http = keymgmt
    issuer = f"ib{unique}"  # no ceremony ever loaded its keys
    card = await vault(http, unique, issuer)
    await publish(settings, ordered(card, issuer))
    dead = await collect(settings.kafka_bootstrap, settings.topic("dlq"), lambda s: len(s) >= 1)
    reason = dict(dead[0].headers)["dlq.reason"].decode()
    assert reason.startswith(f"poison: issuer {issuer} has no active IMK-AC, IMK-SMI, IMK-SMC")
    assert "load them by key ceremony" in reason
