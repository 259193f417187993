"""After the retention purge nothing sensitive of a dispatched card remains anywhere, after a real
flow through every service (issue 16): the bureau as separate processes on the local stack, the
card encoded by the station, printed, checked by QA on its chip, packed with its PIN mailer and
dispatched; then the issuer's retention window set to 0 days and the purge run.

Searched (tests/support/purge_scan.py): every row of every table of every schema the bureau owns
(electrical's, QA's and audit's too, which the integration purge test plays by events), every
record of the run's topics, every file under the run's logs, fulfillment's files and traces, and
both printers' spools. Looked for: each card's PAN (ASCII, BCD, hex), cardholder name, address,
CVV/iCVV/CVV2 (psec, from the demo CVK pair), its PIN blocks, sealed CVVs, wrapped offline PIN
and vault blobs as keymgmt held them before the purge. The same scan finds them before it.
"""

from __future__ import annotations

import asyncio
import os
import random
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from psec import cvv
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from demo.client import Bureau, demo_cards
from services.keymgmt.emv.cvv import CVV2_SERVICE_CODE, ICVV_SERVICE_CODE
from services.keymgmt.keys.ceremonies import DEMO_EMV_KEYS
from tests.conftest import REPO
from tests.support.purge_scan import (
    Secret,
    bureau_schemas,
    bytes_secret,
    file_hits,
    pan_secret,
    short_secret,
    spool_hits,
    table_hits,
    text_secret,
    topic_hits,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

ISSUER, PRODUCT, SERVICE_CODE = "e2e-purge", "e2e-purge-debit", "201"  # keymgmt's default
CVK = bytes.fromhex(DEMO_EMV_KEYS["CVK-A"][2] + DEMO_EMV_KEYS["CVK-B"][2])
KEYMGMT_ROWS = (  # what keymgmt holds of a card until the purge, and where
    ("card_pins", ("iso0_block", "iso4_block")),
    ("card_verification_values", ("sealed",)),
    ("card_offline_pins", ("wrapped",)),
    ("vault_cards", ("pan_blob", "record_blob", "pan_hash")),
)


@pytest.fixture
async def engine(e2e_env: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    made = create_async_engine(e2e_env["BUREAU_DATABASE_URL"])
    try:
        yield made
    finally:
        await made.dispose()


def unique_cards(count: int) -> list[dict[str, Any]]:
    """Demo cards whose name and street no other run's card shares (the scan looks for them
    in whole tables and logs)."""
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    cards = demo_cards(count, seed=rng.randrange(2**31))
    for card in cards:
        tag = "".join(rng.choices(string.ascii_uppercase, k=10))
        card["cardholder_name"] = f"PURGE {tag}"
        card["address"]["lines"] = [f"7 {tag.title()} Lane"]
    return cards


async def held_by_keymgmt(engine: AsyncEngine, card_ids: list[str]) -> list[Secret]:
    found: list[Secret] = []
    async with engine.connect() as conn:
        for table, columns in KEYMGMT_ROWS:
            rows = await conn.execute(
                text(f"SELECT {', '.join(columns)} FROM keymgmt.{table}"  # noqa: S608
                     " WHERE card_id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": card_ids},
            )  # fmt: skip
            for row in rows.all():
                found += [
                    bytes_secret(f"{table}.{c}", bytes(v))
                    for c, v in zip(columns, row, strict=True)
                    if v is not None
                ]
    return found


def cardholder_secrets(cards: list[dict[str, Any]]) -> list[Secret]:
    found: list[Secret] = []
    for card in cards:
        pan, expiry = card["pan"], card["expiry"]
        found += [
            pan_secret("PAN", pan),
            text_secret("cardholder name", card["cardholder_name"]),
            text_secret("address line", card["address"]["lines"][0]),
        ]
        for name, code in (("cvv", SERVICE_CODE), ("icvv", ICVV_SERVICE_CODE)):
            found.append(short_secret(name.upper(), cvv.generate_cvv(CVK, pan, expiry, code), name))
        cvv2 = cvv.generate_cvv(CVK, pan, expiry, CVV2_SERVICE_CODE)
        found.append(short_secret("CVV2", cvv2, "cvv2"))
    return found


async def scan(
    engine: AsyncEngine,
    env: dict[str, str],
    card_ids: list[str],
    secrets: list[Secret],
    *,
    records_expected: bool = True,
) -> list[str]:
    schemas = await bureau_schemas(engine)
    assert {"intake", "keymgmt", "electrical", "graphical", "qa", "fulfillment", "audit"} <= set(
        schemas
    ), schemas
    hits = await table_hits(engine, schemas, secrets)
    run_dir = Path(env["BUREAU_RUN_DIR"])
    roots = [run_dir / "logs", run_dir / "fulfillment", REPO / ".run" / "traces"]
    hits += await asyncio.to_thread(file_hits, [r for r in roots if r.exists()], secrets)
    spools = [Path(env["BUREAU_CARD_PRINTER_SPOOL"]), Path(env["BUREAU_PIN_PRINTER_SPOOL"])]
    hits += spool_hits(spools, card_ids)
    count, in_topics = await topic_hits(
        env["BUREAU_KAFKA_BOOTSTRAP"], env["BUREAU_TOPIC_PREFIX"], secrets
    )
    assert count > 0 or not records_expected, "the scan read the run's records"
    return hits + in_topics


async def cards_unlike_the_setup(engine: AsyncEngine, env: dict[str, str]) -> list[dict[str, Any]]:
    """Two cards none of whose values the scan finds before they exist. A CVV is three digits:
    now and then one equals a value of the issuer's own set-up by chance (the product's EMV
    data in keymgmt.card_products held one), which no purge removes nor should."""
    for _ in range(20):
        cards = unique_cards(2)
        if not await scan(engine, env, [], cardholder_secrets(cards), records_expected=False):
            return cards
    raise AssertionError("every draw of cards met the set-up's values: the scan is too loose")


async def dispatched(bureau: Bureau, batch: str, card_ids: set[str]) -> None:
    for _ in range(300):
        async with bureau._client(bureau.urls.audit, bureau.tokens.auditor) as auditor:
            shipped = (
                await auditor.get(
                    "/v1/events",
                    params={"batch_id": batch, "type": "shipment.dispatched", "limit": 100},
                )
            ).json()["events"]
        if {cid for e in shipped for cid in e["payload"]["card_ids"]} >= card_ids:
            return
        await asyncio.sleep(1.0)
    raise AssertionError(f"batch {batch} was not dispatched")


async def purged(bureau: Bureau, engine: AsyncEngine, card_ids: list[str]) -> None:
    """Purge until keymgmt has learnt every milestone (from the other services' events)."""
    async with bureau._client(bureau.urls.keymgmt, bureau.tokens.admin) as admin:
        policy = await admin.put(f"/v1/vault/retention/{ISSUER}", json={"cardholder_days": 0})
        assert policy.status_code == 200, policy.text
        for _ in range(120):
            answer = await admin.post("/v1/vault/purge")
            assert answer.status_code == 200, answer.text
            async with engine.connect() as conn:
                left = await conn.execute(
                    text(
                        "SELECT count(*) FROM keymgmt.card_retention WHERE card_id ="
                        " ANY(CAST(:ids AS uuid[])) AND cardholder_purged_at IS NOT NULL"
                    ),
                    {"ids": card_ids},
                )
                if left.scalar_one() == len(card_ids):
                    return
            await asyncio.sleep(1.0)
    raise AssertionError("the cards' cardholder data was not purged")


async def test_after_the_purge_nothing_of_a_dispatched_card_remains_anywhere(
    bureau: Bureau, e2e_env: dict[str, str], engine: AsyncEngine
) -> None:
    token = await bureau.onboard_issuer(ISSUER, "E2E Purge Bank", PRODUCT, cards=2)
    await bureau.receive_stock(ISSUER, PRODUCT, 2)
    cards = await cards_unlike_the_setup(engine, e2e_env)
    order = await bureau.post_order(token, PRODUCT, cards)
    batch = str(order["batch_id"])
    view = await bureau.wait_for_batch(batch, {"closed", "held"}, timeout=600)
    assert view["status"] == "closed", view
    card_ids = [str(c["card_id"]) for c in order["cards"]]
    await dispatched(bureau, batch, set(card_ids))

    secrets = cardholder_secrets(cards) + await held_by_keymgmt(engine, card_ids)
    assert {s.name for s in secrets} >= {"card_pins.iso0_block", "vault_cards.pan_blob"}
    before = await scan(engine, e2e_env, card_ids, secrets)
    assert any(hit.endswith("keymgmt.vault_cards.pan_blob") for hit in before), before

    await purged(bureau, engine, card_ids)
    assert await scan(engine, e2e_env, card_ids, secrets) == []
