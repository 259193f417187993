"""keymgmt as a service on the real stack (Postgres, Kafka) with a fresh SoftHSM token:
demo ceremony -> vault -> card.ordered -> card.prepared, no clear PAN at rest or on Kafka,
missing issuer keys dead-lettered.

The token comes from tests/support/hsm.py. keymgmt loads SoftHSM from its own
copy of the library and keeps one session open for the whole test session (process_hsm), so
its C_Initialize/C_Finalize never touch the HSM-core tests' copy in the same process.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.keymgmt.app import KeymgmtRuntime, build_app, build_runtime
from services.keymgmt.cli import load_demo_keys
from services.keymgmt.hsm import Hsm
from services.keymgmt.settings import KeymgmtSettings, process_hsm
from shared import events
from shared.bus import make_producer
from tests.conftest import running
from tests.support.bus import collect, wait_for
from tests.support.hsm import HsmToken

pytestmark = pytest.mark.integration

PAN16, PAN19 = "4761739001010010", "6799998900000060018"  # test PANs (Luhn-valid)
ADDRESS: dict[str, Any] = {
    "lines": ["1 Test Street"],
    "postcode": "T1 1ST",
    "city": "Testville",
    "country": "GB",
}


@pytest.fixture(scope="session")
def keymgmt_module(hsm_token: HsmToken) -> str:  # noqa: F811
    module = Path(hsm_token.module).with_name("libsofthsm2-keymgmt.so")
    shutil.copyfile(hsm_token.module, module)
    return str(module)


@pytest.fixture(scope="session")
async def keymgmt_hsm(
    keymgmt_module: str,
    hsm_token: HsmToken,  # noqa: F811
) -> AsyncIterator[Hsm]:
    """Held open for the session: every runtime and ceremony of these tests shares it."""
    base = token_settings(keymgmt_module, hsm_token)
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(hsm_token.softhsm_conf)  # read once, by C_Initialize
    try:
        async with process_hsm(base) as hsm:
            yield hsm
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


def token_settings(module: str, token: HsmToken, **kw: Any) -> KeymgmtSettings:
    return KeymgmtSettings(
        environment="test",
        pkcs11_module=module,
        hsm_token=token.label,
        hsm_pin=token.user_pin,
        openssl_conf=str(token.openssl_conf),
        **kw,
    )


@pytest.fixture
def settings(
    stack_env: dict[str, str],
    unique: str,
    keymgmt_module: str,
    hsm_token: HsmToken,  # noqa: F811
    keymgmt_hsm: Hsm,
) -> KeymgmtSettings:
    u = unique
    return token_settings(
        keymgmt_module,
        hsm_token,
        topic_prefix=f"t{u}",
        keymgmt_schema=f"keymgmt_{u}",
        vault_key_label=f"b{u}/VAULT/1",
        pan_hash_key_label=f"b{u}/PANHASH/1",
        kmc_label=f"b{u}/KMC/1",
        service_tokens=f"intake=in-{u},graphical=gr-{u},fulfillment=fu-{u},qa=qa-{u}",
        principals=f"custodian:carol=cu-{u},admin:root=ad-{u},station:station-a=st-{u},"
        f"auditor:ann=au-{u},issuer:a-ops:ia{u}=ia-{u},issuer:b-ops:ib{u}=ib-{u}",
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def keymgmt(settings: KeymgmtSettings) -> AsyncIterator[tuple[KeymgmtRuntime, Any]]:
    runtime = build_runtime(settings)
    async with running(runtime):
        transport = httpx.ASGITransport(app=build_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://keymgmt") as http:

            async def hsm_open() -> bool:
                return runtime.gate.hsm is not None

            await wait_for(hsm_open)
            yield runtime, http


async def vault(http: httpx.AsyncClient, u: str, issuer: str, pan: str = PAN16) -> Any:
    card: dict[str, Any] = {"card_id": str(uuid.uuid4()), "pan": pan, "psn": "01", "expiry": "2812"}
    card |= {"cardholder_name": "DOE/JANE", "address": ADDRESS}
    answer = await http.post(
        "/v1/vault/cards", json={"issuer_id": issuer, "cards": [card]}, headers=auth(f"in-{u}")
    )
    assert answer.status_code == 200, answer.text
    return card | answer.json()["cards"][0]


ORDER_FIELDS = ("card_id", "pan", "psn", "expiry", "cardholder_name", "address")


def store_body(issuer: str, *cards: dict[str, Any]) -> dict[str, Any]:
    return {"issuer_id": issuer, "cards": list(cards)}


def ordered(card: dict[str, Any], issuer: str) -> events.CardOrdered:
    return events.CardOrdered(
        issuer_id=issuer,
        actor="intake",
        card_id=uuid.UUID(card["card_id"]),
        order_id=uuid.uuid4(),
        batch_id=uuid.uuid4(),
        product_id="visa-classic",
        pan_token=card["pan_token"],
        masked_pan=card["masked_pan"],
        expiry="2812",
        sequence=0,
    )


async def publish(settings: KeymgmtSettings, *items: events.Event) -> None:
    producer = make_producer(settings.kafka_bootstrap, "keymgmt-test")
    await producer.start()
    try:
        for item in items:
            await producer.send_and_wait(
                settings.topic("intake"),
                events.encode_event(item),
                key=item.partition_key().encode(),
            )
    finally:
        await producer.stop()


async def pan_hits(runtime: KeymgmtRuntime, pans: list[str]) -> list[str]:
    """Every text-like and bytea column of the schema, searched for the PANs (ASCII and BCD)."""
    hits: list[str] = []
    async with runtime.engine.connect() as conn:
        columns = await conn.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = :s"
            ),
            {"s": runtime.schema},
        )
        for table, column, kind in columns.all():
            ref = f'{runtime.schema}.{table}."{column}"'
            for pan in pans:
                if kind == "bytea":
                    where = f"position(:a in {ref}) > 0 OR position(:b in {ref}) > 0"
                    params: dict[str, Any] = {
                        "a": pan.encode(),
                        "b": bytes.fromhex(pan + "F" * (len(pan) % 2)),
                    }
                else:
                    where, params = f"position(:a in CAST({ref} AS text)) > 0", {"a": pan}
                found = await conn.execute(
                    text(f"SELECT count(*) FROM {runtime.schema}.{table} WHERE {where}"), params
                )
                if found.scalar_one():
                    hits.append(f"{table}.{column}")
    return hits


async def test_demo_keys_then_vault_then_card_ordered_becomes_card_prepared(
    settings: KeymgmtSettings, unique: str, keymgmt: tuple[KeymgmtRuntime, Any]
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
        settings.kafka_bootstrap, settings.topic("keymgmt"), lambda seen: len(seen) >= 2
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
    assert prepared[card_id].dgis == ["0101", "0102", "9102", "8000"]
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
    settings: KeymgmtSettings, unique: str, keymgmt: tuple[KeymgmtRuntime, Any]
) -> None:
    _, http = keymgmt
    issuer = f"ib{unique}"  # no ceremony ever loaded its keys
    card = await vault(http, unique, issuer)
    await publish(settings, ordered(card, issuer))
    dead = await collect(settings.kafka_bootstrap, settings.topic("dlq"), lambda s: len(s) >= 1)
    reason = dict(dead[0].headers)["dlq.reason"].decode()
    assert reason.startswith(f"poison: issuer {issuer} has no active IMK-AC, IMK-SMI, IMK-SMC")
    assert "load them by key ceremony" in reason
