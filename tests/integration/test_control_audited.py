"""Dual control reaches audit's log, on the real stack (issue 15): a blank-stock destruction
that the requester tried to confirm, then a second operator confirmed, and key ceremonies with
named custodians (one at another's step, one entering twice) each appear in audit's
hash-chained log and at the auditor endpoint GET /v1/control-events with the principals, the
refusals and the key check values, never a component; and the log verifies.

keymgmt, intake and audit run in this process on one fresh topic prefix and their own schemas;
each service's relay publishes its outbox, audit consumes the services' topics.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.service import ServiceRuntime
from tests.support.audit import AUDITOR, OTHER_ISSUERS_AUDITOR, control_steps, logged
from tests.support.audit_log import SignedLog, log_and_sign, view
from tests.support.audit_story import ISSUER, BatchStory
from tests.support.hsm import soft_des_kcv
from tests.support.intake import started_intake
from tests.support.keymgmt import auth

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PART1 = bytes.fromhex("1F1F1F1F0E0E0E0E0101010101010101")
PART2 = bytes(a ^ b for a, b in zip(KEY, PART1, strict=True))


def component(part: bytes) -> dict[str, str]:
    return {"component": part.hex(), "kcv": soft_des_kcv(part)}


def seen(steps: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(s["step"], s["outcome"], s["principal"], s["started_by"], s["final"]) for s in steps]


async def verified(api: httpx.AsyncClient) -> None:
    chain = (await api.get("/v1/log/verify", headers=AUDITOR)).json()
    assert chain["ok"], chain


async def test_a_stock_destruction_refused_then_confirmed_is_in_audits_log(
    settings: KeymgmtSettings,
    keymgmt: tuple[ServiceRuntime, httpx.AsyncClient],
    audit: ServiceRuntime,
    api: httpx.AsyncClient,
    unique: str,
) -> None:
    prefix = settings.topic_prefix
    assert audit.settings.topic_prefix == prefix, "one bureau, one prefix"
    async with started_intake(settings, keymgmt[1], unique, topic_prefix=prefix) as intake:
        body = {"issuer_id": "bank-a", "product_id": "debit", "reason": "water", "quantity": 2}
        asked = await intake.http.post("/v1/stock/destructions", json=body, headers=intake.operator)
        assert asked.status_code == 201, asked.text
        request_id = asked.json()["destruction_id"]
        confirm = f"/v1/stock/destructions/{request_id}/confirm"
        same = await intake.http.post(confirm, headers=intake.operator)
        assert same.status_code == 403, same.text
        done = await intake.http.post(confirm, headers=intake.second_operator)
        assert done.status_code == 200, done.text
        # (intake's relay publishes its outbox while intake runs)
        steps = await control_steps(api, 3, act="stock-destruction", subject_id=request_id)

    olga, oscar = "operator:olga", "operator:oscar"
    assert seen(steps) == [
        ("requested", "ok", olga, olga, False),
        ("confirm", "refused", olga, olga, False),
        ("confirm", "ok", oscar, olga, True),
    ]
    assert steps[1]["reason"].startswith("same-principal-twice: ")
    assert {s["subject"] for s in steps} == {"destroy 2 blank(s) of debit"}
    assert {s["issuer_id"] for s in steps} == {"bank-a"}
    # Each step is a log entry, in the chain; filters narrow them.
    entries = await api.get("/v1/events", params={"type": "control.recorded"}, headers=AUDITOR)
    assert [e["seq"] for e in entries.json()["events"]] == [s["seq"] for s in steps]
    refused = await control_steps(api, 1, outcome="refused", principal=olga)
    # Pages of two: the next page starts after the last step of a full page; a short one ends.
    pages: list[list[dict[str, Any]]] = []
    after: int | None = 0
    while after is not None:
        params: dict[str, str | int] = {"subject_id": request_id, "limit": 2, "after_seq": after}
        page = (await api.get("/v1/control-events", params=params, headers=AUDITOR)).json()
        pages.append(page["control_events"])
        after = page["next_after_seq"]
    assert pages == [steps[:2], steps[2:]]
    assert [s["log_index"] for s in refused] == [steps[1]["log_index"]]
    # Another issuer's auditor sees none of bank-a's steps.
    other = await api.get("/v1/control-events", headers=OTHER_ISSUERS_AUDITOR)
    assert other.status_code == 200, other.text
    assert other.json()["control_events"] == []
    await verified(api)


async def test_key_ceremonies_with_custodians_and_refusals_are_in_audits_log(
    keymgmt: tuple[ServiceRuntime, httpx.AsyncClient],
    audit: ServiceRuntime,
    api: httpx.AsyncClient,
    unique: str,
) -> None:
    _, http = keymgmt
    root, carol, cyril = auth(f"ad-{unique}"), auth(f"cu-{unique}"), auth(f"cu2-{unique}")
    spec: dict[str, Any] = {
        "issuer_id": f"ia{unique}",
        "usage_name": "IMK-AC",
        "key_type": "DES2",
        "usage": "derive",
        "components": 2,
        "expected_kcv": soft_des_kcv(KEY),
        "custodians": ["carol", "cyril"],
    }

    async def open_one() -> str:
        opened = await http.post("/v1/ceremonies", json=spec, headers=root)
        assert opened.status_code == 200, opened.text
        return str(opened.json()["ceremony_id"])

    async def enter(ceremony: str, part: bytes, who: dict[str, str], status: int) -> None:
        url = f"/v1/ceremonies/{ceremony}/components"
        answer = await http.post(url, json=component(part), headers=who)
        assert answer.status_code == status, answer.text

    twice = await open_one()
    await enter(twice, PART1, carol, 200)
    await enter(twice, PART2, carol, 409)  # the same custodian twice: the ceremony is refused
    done = await open_one()
    await enter(done, PART1, root, 403)  # an admin holds no component: refused, on record
    await enter(done, PART1, cyril, 403)  # component 1 is carol's: refused, the ceremony waits
    await enter(done, PART1, carol, 200)
    await enter(done, PART2, cyril, 200)  # combined

    root_id, carol_id, cyril_id = "admin:root", "custodian:carol", "custodian:cyril"
    steps = await control_steps(api, 6, act="key-ceremony", subject_id=done)
    assert seen(steps) == [
        ("open", "ok", root_id, root_id, False),
        ("component 1", "refused", root_id, root_id, False),
        ("component 1", "refused", cyril_id, root_id, False),
        ("component 1", "ok", carol_id, root_id, False),
        ("component 2", "ok", cyril_id, root_id, False),
        ("combine", "ok", None, root_id, True),
    ]
    assert "admin:root is not a custodian" in steps[1]["reason"]
    assert "carol's step, not custodian:cyril's" in steps[2]["reason"]
    kcvs = [s["kcv"] for s in steps]
    assert kcvs == [None, None, None, soft_des_kcv(PART1), soft_des_kcv(PART2), soft_des_kcv(KEY)]
    assert {s["subject"] for s in steps} == {f"ia{unique}/IMK-AC/1: DES2 derive from 2 components"}
    refused = await control_steps(api, 3, act="key-ceremony", subject_id=twice)
    assert seen(refused) == [
        ("open", "ok", root_id, root_id, False),
        ("component 1", "ok", carol_id, root_id, False),
        ("component 2", "refused", carol_id, root_id, True),
    ]
    assert "already entered a component" in refused[2]["reason"]
    # What audit logged names people and check values, never a component or the key.
    logged = await api.get(
        "/v1/events", params={"type": "control.recorded", "limit": 1000}, headers=AUDITOR
    )
    for secret in (KEY, PART1, PART2):
        assert secret.hex() not in logged.text.lower()
    await verified(api)


async def test_steps_in_the_signed_log_verify_and_move_no_count(signed_log: SignedLog) -> None:
    """The auditors' verifier (keys given out of band, the witness's cosignature) proves a log
    holding the steps of each act, each from its service's topic, beside a batch they do not
    touch: it recomputes the batch from the entries, and audit reconciled it as without them."""
    story = BatchStory(2)
    request = uuid.uuid4()
    common: dict[str, Any] = {"issuer_id": ISSUER, "subject_id": request, "subject": "destroy 1"}
    steps = [
        events.ControlRecorded(
            **common,
            actor=who,
            act=act,
            step=step,
            outcome=outcome,
            principal=who,
            started_by="operator:olga",
        )
        for act, step, outcome, who in (
            ("stock-destruction", "requested", "ok", "operator:olga"),
            ("stock-destruction", "confirm", "refused", "operator:olga"),
            ("card-destruction", "confirm", "ok", "operator:oscar"),
            ("key-ceremony", "component 1", "ok", "custodian:carol"),
        )
    ]
    await log_and_sign(signed_log, [*story.good_batch(), *steps])
    # Audit reconciles the batch as it would without the steps; once its batch.reconciled is
    # logged, a new checkpoint covers it and the verifier recomputes the batch from the entries.
    await logged(signed_log.api, 1, type="batch.reconciled", batch_id=str(story.batch_id))
    await signed_log.checkpoint()  # None when the first one covered it already
    latest = await signed_log.api.get("/v1/log/checkpoints/latest", headers=AUDITOR)
    signed_size = int(view(latest)["tree_size"])
    report = await signed_log.verify("audit")
    assert report.ok, report
    recomputed = f"batch {story.batch_id}: reconciled, recomputed from 2 cards"
    assert recomputed in report.checks, report.checks
    found = await control_steps(signed_log.api, 4, subject_id=str(request))
    assert sorted(s["act"] for s in found) == sorted(e.act for e in steps)
    assert max(s["log_index"] for s in found) < signed_size  # all in the signed tree
