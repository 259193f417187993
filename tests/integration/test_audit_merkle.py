"""The Merkle log on the real stack: checkpoints signed by keymgmt's HSM key and cosigned by the
witness process, proofs from the API, and the auditors' verifier, which trusts only the keys it
is given and its own memory (issue 6 and issue 15, "Done when"). The rewrite-and-re-sign
attack and forks: test_audit_witness.py."""

from __future__ import annotations

import random
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text

from services.audit.verify import Report
from shared import events
from tests.support.audit import read_stream
from tests.support.audit_log import SignedLog, log_and_sign, view
from tests.support.audit_story import BatchStory

pytestmark = pytest.mark.integration


async def verify(log: SignedLog, command: str, pem: str | None = None, **options: Any) -> Report:
    return await log.verify(command, pem, **options)


async def test_the_verifier_checks_real_checkpoints_and_proofs_with_the_public_key_alone(
    signed_log: SignedLog,
) -> None:
    log = signed_log
    first_story, second_story = BatchStory(3), BatchStory(2)
    first_events = first_story.order()
    first = await log_and_sign(log, first_events)
    assert await log.checkpoint() is None  # nothing new
    second = await log_and_sign(log, second_story.order())

    notices = await read_stream(log.settings, "audit", seconds=2)
    signed = [e for e in notices if isinstance(e, events.LogCheckpoint)]
    assert sorted(e.tree_size for e in signed) == [first, second]  # across partitions
    latest = view(await log.api.get("/v1/log/checkpoints/latest"))
    assert latest["tree_size"] == second
    assert latest["signature"] == max(signed, key=lambda e: e.tree_size).signature

    for command, options in (
        ("checkpoint", {}),
        ("checkpoint", {"tree_size": first}),
        ("inclusion", {"event_id": str(first_events[0].event_id)}),
        ("inclusion", {"log_index": second - 1, "tree_size": second}),
        ("consistency", {"first": first, "second": second}),
        ("audit", {}),
    ):
        report = await verify(log, command, **options)
        assert report.ok, (command, report)
    audit = await verify(log, "audit")
    assert f"all {second} entries hash to the signed root" in audit.checks
    assert f"checkpoint {first} is a prefix of {second}" in audit.checks

    status = view(await log.api.get("/v1/log/checkpoints/latest/status"))
    assert status["ok"] is True, status
    assert status["previous_tree_size"] == first

    # Another key (say, a forger's) verifies nothing.
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = stranger.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    refused = await verify(log, "checkpoint", pem=pem)
    assert not refused.ok
    assert "not signed by the log key" in refused.problems[0]


async def tamper(log: SignedLog, kind: str, index: int) -> None:
    """Change the log as its owner could, past the append-only trigger."""
    statements = {
        "alter": [
            "UPDATE events SET payload = jsonb_set(payload, '{actor}', '\"mallory\"')"
            " WHERE log_index = :i"
        ],
        "delete": [
            "CREATE TABLE stash AS SELECT * FROM events WHERE log_index = :i",
            "DELETE FROM events WHERE log_index = :i",
        ],
        "insert": [
            "UPDATE events SET log_index = log_index + 1000000 WHERE log_index >= :i",
            "UPDATE events SET log_index = log_index - 999999 WHERE log_index >= 1000000",
            "INSERT INTO events (log_index, event_id, type, version, issuer_id, actor,"
            " occurred_at, card_id, batch_id, order_id, payload, leaf_hash, prev_hash,"
            " entry_hash) SELECT CAST(:i AS bigint), gen_random_uuid(), type, version,"
            " issuer_id, actor, occurred_at, card_id, batch_id, order_id,"
            " jsonb_set(payload, '{actor}', '\"mallory\"'), leaf_hash, prev_hash,"
            " encode(sha256(random()::text::bytea), 'hex') FROM events"
            " WHERE log_index = CAST(:i AS bigint) + 1",
        ],
    }[kind]
    await _owner_statements(log, statements, index)


async def restore(log: SignedLog, kind: str, index: int, payload: str) -> None:
    statements = {
        "alter": ["UPDATE events SET payload = CAST(:p AS jsonb) WHERE log_index = :i"],
        "delete": ["INSERT INTO events SELECT * FROM stash", "DROP TABLE stash"],
        "insert": [
            "DELETE FROM events WHERE log_index = :i",
            "UPDATE events SET log_index = log_index + 999999 WHERE log_index > :i",
            "UPDATE events SET log_index = log_index - 1000000 WHERE log_index >= 1000000",
        ],
    }[kind]
    await _owner_statements(log, statements, index, payload)


async def _owner_statements(log: SignedLog, statements: list[str], i: int, p: str = "") -> None:
    async with log.runtime.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE events DISABLE TRIGGER events_append_only"))
        for statement in statements:
            params = {"i": i} | ({"p": p} if ":p" in statement else {})
            await conn.execute(text(statement), params)
        await conn.execute(text("ALTER TABLE events ENABLE TRIGGER events_append_only"))


async def test_altering_deleting_or_inserting_a_row_is_detected_in_every_trial(
    signed_log: SignedLog,
) -> None:
    log = signed_log
    size = await log_and_sign(log, BatchStory(5).order())
    rng = random.Random(6962)
    trials = [(kind, rng.randrange(size - 1)) for kind in ("alter", "delete", "insert") * 3]
    for kind, index in trials:
        async with log.runtime.engine.connect() as conn:
            payload = (
                await conn.execute(
                    text("SELECT payload::text FROM events WHERE log_index = :i"), {"i": index}
                )
            ).scalar_one()
        await tamper(log, kind, index)
        try:
            audit = await verify(log, "audit")
            inclusion = await verify(log, "inclusion", log_index=index)
        finally:
            await restore(log, kind, index, payload)
        assert not audit.ok, (kind, index, audit)
        assert not inclusion.ok, (kind, index, inclusion)
        assert (await verify(log, "audit")).ok, (kind, index, "restored")


async def test_only_the_audit_service_has_checkpoints_signed(signed_log: SignedLog) -> None:
    u = signed_log.unique
    for token, refused in ((f"qa-{u}", 403), (f"an-{u}", 403), ("nobody", 401)):
        async with signed_log.keymgmt() as keymgmt:
            asked = await keymgmt.post(
                "/v1/signing/audit-checkpoints",
                json={"origin": "cardbureau/audit", "tree_size": 1, "root_hash": "00" * 32},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert asked.status_code == refused, asked.text
    async with signed_log.keymgmt() as keymgmt:  # the key signs checkpoint statements only
        asked = await keymgmt.post(
            "/v1/signing/audit-checkpoints",
            json={"digest": "00" * 32},
            headers={"Authorization": f"Bearer au-{u}"},
        )
    assert asked.status_code == 422, asked.text
    async with signed_log.keymgmt() as keymgmt:
        inventory = view(await keymgmt.get("/v1/keys", headers={"Authorization": f"Bearer cu-{u}"}))
    (key,) = [k for k in inventory["keys"] if k["usage"] == "audit-checkpoint"]
    assert (key["key_type"], key["state"], key["origin"]) == ("EC-P256", "active", "generated")
