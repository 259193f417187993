"""keymgmt's key inventory and ceremonies on the real stack: issuer scoping, retirement,
refused ceremonies that leave no key but a record, the custodians' CLI; and readiness while
the HSM session cannot open."""

from __future__ import annotations

import asyncio
import builtins
import getpass
import json
import uuid
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.keymgmt.app import bootstrap, build_app
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys import cli
from services.keymgmt.keys.ceremonies import (
    CeremonyRefused,
    CeremonySpec,
    KeyCeremony,
    load_demo_keys,
)
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.keys.repository import KeysRepository
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.db import make_engine
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.bus import wait_for
from tests.support.hsm import soft_des_kcv
from tests.support.keymgmt import ADDRESS, PAN16, auth

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

CVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PARTS = [bytes.fromhex(p) for p in ("1F1F1F1F0E0E0E0E0101010101010101", "E0E0E0E0F1F1F1F1" * 2)]
PARTS.append(bytes(a ^ b ^ c for a, b, c in zip(CVK, *PARTS, strict=True)))


async def test_issuers_see_only_their_own_keys_and_custodians_retire_them(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
) -> None:
    _, http = keymgmt
    a, b = f"ia{unique}", f"ib{unique}"
    await load_demo_keys(settings, a)
    await load_demo_keys(settings, b)
    as_a, custodian = auth(f"ia-{unique}"), auth(f"cu-{unique}")

    own = (await http.get("/v1/keys", headers=as_a)).json()["keys"]
    assert {k["label"] for k in own} == {f"{a}/IMK-AC/1", f"{a}/IMK-SMI/1", f"{a}/IMK-SMC/1"}
    assert all(k["custodians"] == ["demo-custodian-1", "demo-custodian-2"] for k in own)
    assert (await http.get(f"/v1/keys?issuer_id={b}", headers=as_a)).status_code == 404
    assert (await http.get(f"/v1/keys/{b}/IMK-AC/1", headers=as_a)).status_code == 404
    assert (await http.get(f"/v1/keys/{a}/IMK-AC/1", headers=as_a)).json()["kcv"] == "08D7B4"
    everything = (await http.get("/v1/keys", headers=custodian)).json()["keys"]
    labels = {k["label"]: k for k in everything}
    assert {f"{b}/IMK-AC/1", settings.kmc_label, settings.vault_key_label} <= set(labels)
    assert labels[settings.vault_key_label]["origin"] == "generated"
    assert labels[settings.pan_hash_key_label]["kcv_method"] == "HMAC-SHA256-ZERO-BLOCK"
    assert (await http.get("/v1/keys", headers=auth(f"st-{unique}"))).status_code == 403

    retire = f"/v1/keys/{a}/IMK-AC/1/retire"
    assert (await http.post(retire, headers=as_a)).status_code == 403
    retired = await http.post(retire, headers=custodian)
    assert (retired.status_code, retired.json()["state"]) == (200, "retired")
    assert retired.json()["retired_by"] == "custodian:carol"
    assert (await http.post(retire, headers=custodian)).status_code == 409
    assert (await http.post(f"/v1/keys/{a}/NOPE/1/retire", headers=custodian)).status_code == 404
    vault_key = f"/v1/keys/{settings.vault_key_label}/retire"
    assert (await http.post(vault_key, headers=auth(f"ad-{unique}"))).status_code == 409


async def run(engine: AsyncEngine, hsm: Hsm, spec: CeremonySpec, *steps: Any) -> str | None:
    """Run a ceremony; each step is (custodian, component, declared KCV). Returns the refusal."""
    ceremony = KeyCeremony(engine, hsm, spec)
    try:
        await ceremony.open()
        for custodian, part, kcv in steps:
            await ceremony.add_component(custodian, part.hex(), kcv)
        await ceremony.complete()
    except CeremonyRefused as exc:
        return str(exc)
    return None


async def test_refused_ceremonies_leave_no_key_and_every_step_is_recorded(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt_engine: AsyncEngine,
    keymgmt_hsm: Hsm,
) -> None:
    label = f"ia{unique}/CVK/1"
    spec = CeremonySpec(label, f"ia{unique}", CeremonyKeyType.DES2, KeyUsage.ENCRYPT, 3, "test")
    alice, bob, carol = (
        (who, part, soft_des_kcv(part))
        for who, part in zip(("alice", "bob", "carol"), PARTS, strict=True)
    )
    twice = await run(keymgmt_engine, keymgmt_hsm, spec, alice, ("alice", *bob[1:]))
    wrong_kcv = await run(keymgmt_engine, keymgmt_hsm, spec, alice, (bob[0], bob[1], "123456"))
    missing = await run(keymgmt_engine, keymgmt_hsm, spec, alice, bob)
    blank = await run(keymgmt_engine, keymgmt_hsm, spec, alice, ("bob", b"", bob[2]))
    expected = replace(spec, expected_kcv="000000")
    other_key = await run(keymgmt_engine, keymgmt_hsm, expected, alice, bob, carol)
    async with keymgmt_engine.connect() as conn:
        assert await KeysRepository(conn).key(label) is None
    assert await keymgmt_hsm.call(Hsm.find_key, label) is None
    assert twice == "alice already entered a component: dual control needs another custodian"
    assert wrong_kcv == "component of bob: KCV mismatch"
    assert missing == "component missing: 2 of 3"
    assert blank == "component missing"
    assert other_key == "combined key KCV differs from the expected KCV"

    right = replace(spec, expected_kcv=soft_des_kcv(CVK))
    assert await run(keymgmt_engine, keymgmt_hsm, right, alice, bob, carol) is None
    async with keymgmt_engine.connect() as conn:
        repo = KeysRepository(conn)
        key = await repo.key(label)
        history = await repo.ceremonies(label)
    assert key is not None
    assert (key["kcv"], key["state"]) == ("08D7B4", "active")
    assert key["custodians"] == ["alice", "bob", "carol"]
    outcomes = [(c["outcome"], c["reason"]) for c in history]
    assert outcomes[:-1] == [("refused", r) for r in (twice, wrong_kcv, missing, blank, other_key)]
    assert outcomes[-1] == ("completed", None)
    assert [s["custodian"] for s in history[-1]["steps"]] == [None, "alice", "bob", "carol", None]
    recorded = json.dumps(history, default=str).upper()
    assert all(part.hex().upper() not in recorded for part in PARTS)
    again = await run(keymgmt_engine, keymgmt_hsm, spec, alice, bob, carol)
    assert again == f"{label} is already in the inventory"


@pytest.fixture
def cli_env(
    settings: KeymgmtSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> list[str]:
    """The CLI reads its settings from the environment; prompts are answered from a list."""
    env = {
        "BUREAU_ENVIRONMENT": "test",
        "BUREAU_PKCS11_MODULE": settings.pkcs11_module,
        "BUREAU_HSM_TOKEN": settings.hsm_token,
        "BUREAU_HSM_PIN": settings.hsm_pin,
        "OPENSSL_CONF": str(settings.openssl_conf),
        "BUREAU_KEYMGMT_SCHEMA": settings.keymgmt_schema,
        "BUREAU_KMC_LABEL": settings.kmc_label,
        "BUREAU_PRINCIPALS": settings.principals,  # the custodians' tokens are checked here
        "BUREAU_TOPIC_PREFIX": settings.topic_prefix,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    answers: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": answers.pop(0))
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": answers.pop(0))
    monkeypatch.setattr(cli, "configure_logging", lambda *a: None)
    return answers


async def recorded(settings: KeymgmtSettings, label: str) -> list[dict[str, Any]]:
    """The ceremonies of `label` as keymgmt recorded them (for a test that is not async)."""
    db = make_engine(settings.database_url, settings.keymgmt_schema)
    try:
        async with db.connect() as conn:
            return await KeysRepository(conn).ceremonies(label)
    finally:
        await db.dispose()


async def outboxed_steps(settings: KeymgmtSettings) -> list[events.ControlRecorded]:
    """The ceremony steps the CLI left in keymgmt's outbox for its relay to send to audit."""
    db = make_engine(settings.database_url, settings.keymgmt_schema)
    try:
        async with db.connect() as conn:
            rows = await conn.execute(
                text("SELECT topic, payload FROM outbox ORDER BY id"),
            )
            found = [(topic, events.decode_event(payload)) for topic, payload in rows]
    finally:
        await db.dispose()
    assert {topic for topic, _ in found} <= {settings.topic("keymgmt")}
    return [e for _, e in found if isinstance(e, events.ControlRecorded)]


def test_cli_authenticates_each_custodian_and_refuses_one_person_acting_as_two(
    settings: KeymgmtSettings,
    cli_env: list[str],
    unique: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issuer = f"ia{unique}"
    args = ["--issuer", issuer, "--type", "DES2", "--usage", "derive", "--components", "2"]
    second = bytes(a ^ b for a, b in zip(CVK, PARTS[0], strict=True))
    kcvs = [soft_des_kcv(PARTS[0]), soft_des_kcv(second)]
    carol, cyril, cleo = f"cu-{unique}", f"cu2-{unique}", f"cu3-{unique}"  # their own tokens
    # The attack: one custodian enters both components with their own token.
    cli_env[:] = [carol, PARTS[0].hex(), kcvs[0], carol, second.hex(), kcvs[1]]
    assert cli.main(["import", "--label", "IMK-CVK", *args]) == 2
    assert "REFUSED: custodian:carol already entered a component" in capsys.readouterr().err
    # A typed name is no credential, nor is another role's token: three tries, then refused.
    cli_env[:] = ["carol", f"ad-{unique}", f"st-{unique}"]
    assert cli.main(["import", "--label", "IMK-CVK", *args]) == 2
    refused = capsys.readouterr()
    assert "Refused: unknown or revoked credentials, or not a custodian's" in refused.out
    assert "REFUSED: no authenticated custodian for component 1" in refused.err
    # Named custodians: cleo's token at cyril's step is refused (recorded), cyril then enters.
    named = ["--custodian", "cyril", "--custodian", "carol", "--expected-kcv", "08D7B4"]
    cli_env[:] = [cleo, cyril, PARTS[0].hex(), kcvs[0], carol, second.hex(), kcvs[1]]
    assert cli.main(["import", "--label", "IMK-CVK", *args, *named]) == 0
    out = capsys.readouterr().out
    assert "Refused: component 1 is custodian:cyril's step, not custodian:cleo's" in out
    assert f"{issuer}/IMK-CVK/1 loaded, KCV 08D7B4 (DES-3DES-ECB-ZERO)" in out
    assert PARTS[0].hex() not in out
    assert second.hex() not in out
    assert carol not in out
    history = asyncio.run(recorded(settings, f"{issuer}/IMK-CVK/1"))
    assert [(c["outcome"], c["reason"]) for c in history] == [
        ("refused", "custodian:carol already entered a component: dual control needs another"
         " custodian"),
        ("refused", "no authenticated custodian for this component"),
        ("completed", None),
    ]  # fmt: skip
    steps = [(x["step"], x["custodian"], x["outcome"]) for x in history[-1]["steps"]]
    assert steps == [
        ("open", None, "ok"),
        ("component 1", "custodian:cleo", "refused"),
        ("component 1", "custodian:cyril", "ok"),
        ("component 2", "custodian:carol", "ok"),
        ("combine", None, "ok"),
    ]
    # Every step also went to audit's log through keymgmt's outbox, in the step's transaction:
    # the refused attempts too (a typed name, another role's token), with who tried.
    sent = asyncio.run(outboxed_steps(settings))
    assert {e.act for e in sent} == {"key-ceremony"}
    last = [e for e in sent if str(e.subject_id) == str(history[-1]["ceremony_id"])]
    assert [(e.step, e.principal, e.outcome, e.kcv) for e in last] == [
        ("open", f"cli:{getpass.getuser()}", "ok", None),
        ("component 1", "custodian:cleo", "refused", None),
        ("component 1", "custodian:cyril", "ok", kcvs[0]),
        ("component 2", "custodian:carol", "ok", kcvs[1]),
        ("combine", None, "ok", "08D7B4"),
    ]
    tried = {(e.principal, e.outcome) for e in sent if e.step == "component 1"}
    assert {(None, "refused"), ("admin:root", "refused")} <= tried
    assert not any(part in str(sent).lower() for part in (PARTS[0].hex(), second.hex()))
    assert cli.main(["demo-keys", "--issuer", issuer]) == 0
    assert f"imported: {issuer}/IMK-AC/1" in capsys.readouterr().out


async def test_readiness_fails_while_the_hsm_session_cannot_open(
    stack_env: dict[str, str], unique: str
) -> None:
    no_hsm = KeymgmtSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        keymgmt_schema=f"keymgmt_{unique}",
        pkcs11_module=f"/nonexistent/{unique}/libpkcs11.so",
        service_tokens=f"intake=in-{unique}",
        hsm_retry_seconds=0.2,
    )
    runtime = bootstrap(no_hsm)
    async with running(runtime):
        transport = httpx.ASGITransport(app=build_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://k") as http:

            async def reported() -> bool:
                return bool(runtime.deps.gate.problem.startswith("cannot use the HSM"))

            await wait_for(reported)
            ready = await http.get("/ready")
            card: dict[str, Any] = {"card_id": str(uuid.uuid4()), "pan": PAN16}
            card |= {"expiry": "2812", "cardholder_name": "DOE/JANE", "address": ADDRESS}
            store = await http.post(
                "/v1/vault/cards",
                json={"issuer_id": "x", "cards": [card]},
                headers=auth(f"in-{unique}"),
            )
    assert ready.status_code == 503
    assert any(p.startswith("hsm: cannot use the HSM") for p in ready.json()["problems"])
    assert store.status_code == 503
