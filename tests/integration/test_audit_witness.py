"""Issue 15's log attacks on the real components: keymgmt with its SoftHSM key and its own
record in Postgres, the witness as its own process with its own key and file store, the audit
service on Postgres and Kafka, and the auditors' verifier with its own memory.

- Rewrite and re-sign: entry 5 replaced (leaf hash recomputed, tree rebuilt, as the database
  owner could); keymgmt refuses to sign the new tree, by name, and the verifier detects it.
- A witness refuses an inconsistent checkpoint even when keymgmt's record was wiped and
  keymgmt signed it; and if the witness's store is lost too, the verifier's memory detects the
  fork. Stored checkpoints are read by C2SP implementations that are not ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from services.audit.chain import canonical_json
from services.audit.merkle import hash_leaf
from services.audit.signer import SignerError
from services.audit.tree_repository import build_tree
from services.audit.witness.store import EVIDENCE_FILE, STATE_FILE
from services.audit.witness_client import WitnessError
from shared.keymgmt.contract import Refusal
from shared.keymgmt.errors import KeymgmtRefused
from tests.support import c2sp
from tests.support.audit import publish
from tests.support.audit_log import SignedLog, log_and_sign, log_size_reaches, view
from tests.support.audit_story import BatchStory

pytestmark = pytest.mark.integration


async def rewrite_entry(log: SignedLog, index: int) -> None:
    """What the database owner can do: past the triggers, replace an entry with a leaf hash
    that matches its new content, and rebuild the whole tree over the rewritten log."""
    async with log.runtime.engine.begin() as conn:
        # The tree's lock first, as the Merkle keeper takes it: no lock cycle with the keeper.
        await conn.execute(text("SELECT size FROM tree_head FOR UPDATE"))
        for table in ("events", "tree_nodes"):
            await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only"))
        payload = (
            await conn.execute(
                text("SELECT payload::text FROM events WHERE log_index = :i"), {"i": index}
            )
        ).scalar_one()
        forged = json.loads(payload) | {"actor": "mallory"}
        await conn.execute(
            text(
                "UPDATE events SET payload = CAST(:p AS jsonb), leaf_hash = :h WHERE log_index = :i"
            ),
            {"p": json.dumps(forged), "h": hash_leaf(canonical_json(forged)).hex(), "i": index},
        )
        await conn.execute(text("DELETE FROM tree_nodes"))
        await conn.execute(text("UPDATE tree_head SET size = 0"))
        for table in ("events", "tree_nodes"):
            await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only"))
    await build_tree(log.runtime.engine, log.runtime.schema)


async def grow(log: SignedLog) -> int:
    before = (await log.api.get("/v1/log/tree")).json()["log_size"]
    story = BatchStory(1).order()
    await publish(log.settings, story)
    return await log_size_reaches(log, before + len(story))


async def ask_keymgmt(log: SignedLog, body: dict[str, object]) -> tuple[int, str | None, str]:
    async with log.keymgmt() as keymgmt:
        answer = await keymgmt.post(
            "/v1/signing/audit-checkpoints",
            json=body,
            headers={"Authorization": f"Bearer au-{log.unique}"},
        )
    return answer.status_code, answer.headers.get("X-Bureau-Refusal"), answer.text


async def keymgmt_last_signed(log: SignedLog) -> int:
    async with log.keymgmt() as keymgmt:
        answer = await keymgmt.get(
            "/v1/signing/audit-checkpoints/last",
            headers={"Authorization": f"Bearer an-{log.unique}"},
        )
    return int(view(answer)["tree_size"])


async def test_the_rewrite_and_re_sign_attack_is_refused_by_keymgmt_and_detected(
    signed_log: SignedLog,
) -> None:
    log = signed_log
    size = await log_and_sign(log, BatchStory(8).order())  # 9 entries: entry 5 is signed
    assert size > 5
    honest = await log.verify("audit")
    assert honest.ok, honest

    # Standard tooling reads the stored checkpoint: a reading of the C2SP text that is not
    # ours, and the Go reference package when a Go toolchain is at hand.
    note = view(await log.api.get("/v1/log/checkpoints/latest"))["note"]
    opened = c2sp.open_checkpoint(note, [log.log_vkey, log.witness_vkey])
    assert (opened.origin, opened.tree_size) == ("cardbureau/audit", size)
    assert opened.verified == ["cardbureau/audit", "witness.test/w1"]
    notecheck = c2sp.go_notecheck(Path("/tmp/bureau-c2sp-go"))
    if notecheck is not None:
        go = c2sp.go_open(notecheck, note, [log.log_vkey, log.witness_vkey])
        assert go["verified"] == ["cardbureau/audit", "witness.test/w1"]

    await rewrite_entry(log, 5)
    grown = await grow(log)
    with pytest.raises(SignerError) as refused:
        await log.checkpoint()
    cause = refused.value.__cause__
    assert isinstance(cause, KeymgmtRefused)
    assert cause.refusal is Refusal.CHECKPOINT_INCONSISTENT

    # Every request the attacker can make of keymgmt is refused, by name.
    tree = view(await log.api.get("/v1/log/tree"))
    proof = view(await log.api.get(f"/v1/log/proofs/consistency?first={size}&second={grown}"))
    ask = {"origin": "cardbureau/audit", "tree_size": grown, "root_hash": tree["root_hash"]}
    attempts = [
        (ask | {"old_size": size, "proof": proof["proof"]}, Refusal.CHECKPOINT_INCONSISTENT),
        (ask, Refusal.CHECKPOINT_OLD_SIZE_MISMATCH),  # "start from nothing"
        (ask | {"tree_size": size - 1}, Refusal.CHECKPOINT_SIZE_BACKWARDS),
    ]
    for body, refusal in attempts:
        status, code, detail = await ask_keymgmt(log, body)
        assert (status, code) == (409, refusal.value), detail
    assert await keymgmt_last_signed(log) == size  # its record did not move

    # The verifier finds the rewrite in the entries it is served.
    audit = await log.verify("audit")
    assert not audit.ok
    assert f"the {size} entries do not hash to the signed root" in audit.problems[0]
    inclusion = await log.verify("inclusion", log_index=5)
    assert not inclusion.ok


async def test_the_witness_refuses_a_fork_and_the_verifier_detects_one(
    signed_log: SignedLog,
) -> None:
    log = signed_log
    size = await log_and_sign(log, BatchStory(8).order())  # 9 entries: entry 5 is signed
    assert (await log.verify("checkpoint")).ok  # the verifier remembers checkpoint `size`

    # keymgmt's record wiped too (its database owner): keymgmt signs the rewritten log from
    # scratch. The witness, which checks the proof itself against its own store, refuses.
    await rewrite_entry(log, 5)
    async with log.runtime.engine.begin() as conn:
        record = f"keymgmt_{log.unique}.signed_checkpoints"
        await conn.execute(
            text(f"ALTER TABLE {record} DISABLE TRIGGER signed_checkpoints_append_only")
        )
        await conn.execute(text(f"DELETE FROM {record}"))
        await conn.execute(
            text(f"ALTER TABLE {record} ENABLE TRIGGER signed_checkpoints_append_only")
        )
    forked = await grow(log)
    with pytest.raises(WitnessError, match=r"refused \(422\)"):
        await log.checkpoint()
    evidence = (log.witness.directory / EVIDENCE_FILE).read_text().splitlines()
    assert json.loads(evidence[-1])["reason"] == "consistency proof failed"
    latest = view(await log.api.get("/v1/log/checkpoints/latest"))
    assert latest["tree_size"] == size  # nothing was stored

    # The witness's store lost as well: now every signer signs the fork. The verifier's own
    # memory of checkpoint `size` is what catches it.
    await log.witness.stop()
    (log.witness.directory / STATE_FILE).unlink()
    await log.witness.start()
    stored = await log.checkpoint()
    assert stored is not None
    assert stored.tree_size == forked
    report = await log.verify("checkpoint")
    assert not report.ok
    assert report.problems[0].startswith(f"fork: checkpoint {forked}")
    assert f"checkpoint {size}" in report.problems[0]
