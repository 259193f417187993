"""The ICC key pool is audited on the real stack (Postgres, Kafka, SoftHSM): a refill through
keymgmt's API, then a full-profile card's preparation that draws a pair; keymgmt publishes
`icc_key_pool.refilled` (pool ids, modulus fingerprints, pool size after) and
`icc_key_pair.drawn` (card, pool id, fingerprint) through its outbox, and audit's append-only
log holds both, so an auditor follows each pair from the HSM to its card."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.audit import logged
from tests.support.bus import collect
from tests.support.keymgmt import ordered, prepared_events, publish, vault
from tests.support.keymgmt_emv import emv_product

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

POOL_TYPES = (b'"icc_key_pool.refilled"', b'"icc_key_pair.drawn"')


async def _pool_events(settings: KeymgmtSettings) -> list[events.Event]:
    """keymgmt's pool events on its stream, once a refill and a draw are there."""

    def both(records: list[Any]) -> bool:
        return all(any(t in r.value for r in records) for t in POOL_TYPES)

    records = await collect(settings.kafka_bootstrap, settings.topic("keymgmt"), both)
    return [events.decode_event(r.value) for r in records if any(t in r.value for t in POOL_TYPES)]


async def test_a_refill_and_a_draw_are_published_and_in_audits_log(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    audit: ServiceRuntime,
    api: httpx.AsyncClient,
) -> None:
    runtime, http = keymgmt
    issuer = f"ia{unique}"
    await load_demo_keys(settings, issuer)
    await emv_product(http, runtime, keymgmt_hsm, unique, issuer)  # refills two pairs
    card = await vault(http, unique, issuer)
    card_id = uuid.UUID(card["card_id"])
    await publish(settings, ordered(card, issuer))
    await prepared_events(settings, 1)

    async with runtime.engine.connect() as conn:
        pool = {
            r.id: r
            for r in await conn.execute(
                text("SELECT id, modulus, taken_by, bits, pool_key_label FROM icc_key_pool")
            )
        }
        oda = await conn.execute(
            text("SELECT pool_id FROM card_oda WHERE card_id = :c"), {"c": card_id}
        )
        pool_id = oda.scalar_one()
    assert len(pool) == 2
    assert pool[pool_id].taken_by == card_id
    digest = {i: hashlib.sha256(bytes(r.modulus)).hexdigest() for i, r in pool.items()}

    published = await _pool_events(settings)
    [refilled] = [e for e in published if isinstance(e, events.IccKeyPoolRefilled)]
    [drawn] = [e for e in published if isinstance(e, events.IccKeyPairDrawn)]
    assert refilled.actor == "custodian:carol"  # who asked for the refill
    assert (refilled.count, refilled.pool_size, refilled.bits) == (2, 2, pool[pool_id].bits)
    assert refilled.pool_key_label == pool[pool_id].pool_key_label
    assert dict(zip(refilled.pool_ids, refilled.fingerprints, strict=True)) == digest
    assert (drawn.card_id, drawn.issuer_id, drawn.pool_id) == (card_id, issuer, pool_id)
    assert drawn.fingerprint == digest[pool_id]
    for event in (refilled, drawn):  # no private part, wrapped or not, on the stream
        assert bytes(pool[pool_id].modulus).hex() not in events.encode_event(event).decode()

    [logged_draw] = await logged(api, 1, card_id=str(card_id), type="icc_key_pair.drawn")
    assert logged_draw["event_id"] == str(drawn.event_id)
    assert logged_draw["payload"]["fingerprint"] == digest[pool_id]
    [logged_refill] = await logged(api, 1, type="icc_key_pool.refilled", issuer_id="bureau")
    assert logged_refill["event_id"] == str(refilled.event_id)
    assert logged_refill["payload"]["pool_ids"] == refilled.pool_ids
