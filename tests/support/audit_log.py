"""Fixtures of the audit log tests: the audit service with a real keymgmt in
process (real SoftHSM token, real Postgres, real Kafka) signing its checkpoints, the witness as
its own process cosigning them, an auditor API client, the checkpoint key's PEM as keymgmt
publishes it, and the auditors' verifier with its own memory."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.audit.app import bootstrap, build_app
from services.audit.checkpoint import log_vkey
from services.audit.checkpointer import checkpoint_once
from services.audit.settings import AuditSettings
from services.audit.signer import KeymgmtSigner
from services.audit.tree_repository import StoredCheckpoint
from services.audit.verify import Report, Verifier, run
from services.audit.verify_state import SeenCheckpoints
from services.audit.witness_client import WitnessClient
from services.keymgmt.app import bootstrap as build_keymgmt_runtime
from services.keymgmt.app import build_app as build_keymgmt_app
from services.keymgmt.hsm.session import Hsm
from shared import events
from shared.checkpoint_note import parse_vkey
from shared.db import make_engine
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.audit import publish
from tests.support.bus import wait_for
from tests.support.hsm import HsmToken
from tests.support.keymgmt import token_settings
from tests.support.witness import WitnessProcess

AUDITOR = {"Authorization": "Bearer auditor-dev-token"}


@dataclass
class SignedLog:
    runtime: ServiceRuntime
    settings: AuditSettings
    signer: KeymgmtSigner
    api: httpx.AsyncClient  # as the auditor
    public_key_pem: str
    keymgmt: Callable[[], httpx.AsyncClient]  # keymgmt's API, in process
    unique: str  # keymgmt tokens: qa-<unique> (service qa), an-/cu-<unique> (auditor, custodian)
    log_vkey: str  # keymgmt's C2SP vkey, as it publishes it
    witness: WitnessProcess
    witness_vkey: str
    witness_client: WitnessClient
    state: Path  # the verifier's memory of the checkpoints it saw

    async def checkpoint(self) -> StoredCheckpoint | None:
        """One round of the Merkle keeper: keymgmt signs, the witness cosigns."""
        return await checkpoint_once(self.runtime, self.settings, self.signer, self.witness_client)

    async def verify(
        self, command: str, pem: str | None = None, state: Path | None = None, **options: Any
    ) -> Report:
        """The auditors' verifier with the keys given out of band and its own memory."""
        defaults: dict[str, object] = {"tree_size": None, "log_index": None, "event_id": None}
        args = argparse.Namespace(**(defaults | options))
        origin = self.settings.log_origin
        seen = SeenCheckpoints(state or self.state, origin)
        witnesses = [parse_vkey(self.witness_vkey)]
        verifier = Verifier(self.api, log_vkey(origin, pem or self.public_key_pem), witnesses, seen)
        return await run(verifier, command, args)


@pytest.fixture
async def signed_log(
    stack_env: dict[str, str],
    unique: str,
    keymgmt_module: str,
    hsm_token: HsmToken,
    keymgmt_hsm: Hsm,
    tmp_path: Path,
) -> AsyncIterator[SignedLog]:
    u = unique
    keymgmt_settings = token_settings(
        keymgmt_module,
        hsm_token,
        topic_prefix=f"t{u}",
        keymgmt_schema=f"keymgmt_{u}",
        vault_key_label=f"b{u}/VAULT/1",
        pan_hash_key_label=f"b{u}/PANHASH/1",
        service_tokens=f"audit=au-{u},qa=qa-{u}",
        principals=f"auditor:ann=an-{u},custodian:carol=cu-{u}",
    )
    keymgmt = build_keymgmt_runtime(keymgmt_settings)
    keymgmt.subscribe = []  # only its HTTP API here: card.ordered events are not for it
    settings = AuditSettings(
        environment="test", topic_prefix=f"t{u}", checkpoint_interval_seconds=0
    )
    keymgmt_app = build_keymgmt_app(keymgmt)

    def keymgmt_client() -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=keymgmt_app)
        return httpx.AsyncClient(transport=transport, base_url="http://keymgmt")

    signing = KeymgmtClient(
        "http://keymgmt",
        f"au-{u}",
        transport=httpx.ASGITransport(app=keymgmt_app),
        policy=RetryPolicy.once(),
    )
    signer = KeymgmtSigner(signing)
    schema = f"audit_{u}"
    async with running(keymgmt):

        async def hsm_open() -> bool:
            return keymgmt.deps.gate.hsm is not None

        await wait_for(hsm_open)
        async with keymgmt_client() as client:
            answer = await client.get(
                "/v1/signing/audit-checkpoints/public-key",
                headers={"Authorization": f"Bearer an-{u}"},
            )
        assert answer.status_code == 200, answer.text
        key = answer.json()
        witness = WitnessProcess(tmp_path / "witness", key["vkey"])
        witness_vkey = await witness.start()
        cosigning = WitnessClient(witness.url, witness_vkey)
        runtime = bootstrap(settings, schema=schema, signer=signer, witness=cosigning)
        try:
            async with running(runtime) as audit:
                transport = httpx.ASGITransport(app=build_app(audit))
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://audit", headers=AUDITOR
                ) as api:
                    yield SignedLog(
                        audit,
                        settings,
                        signer,
                        api,
                        key["public_key_pem"],
                        keymgmt_client,
                        u,
                        key["vkey"],
                        witness,
                        witness_vkey,
                        cosigning,
                        tmp_path / "verifier-state.json",
                    )
        finally:
            await witness.stop()
    await signing.aclose()
    engine = make_engine(settings.database_url, schema)
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await conn.execute(text(f"DROP SCHEMA keymgmt_{u} CASCADE"))
    await engine.dispose()


async def log_size_reaches(log: SignedLog, size: int) -> int:
    found = 0

    async def grown() -> bool:
        nonlocal found
        found = (await log.api.get("/v1/log/tree")).json()["log_size"]
        return bool(found >= size)

    await wait_for(grown, timeout=60)
    return found


def view(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


async def log_and_sign(log: SignedLog, story_events: list[events.Event]) -> int:
    """Publish, wait until logged, sign a checkpoint and wait until it is logged too."""
    before = (await log.api.get("/v1/log/tree")).json()["log_size"]
    await publish(log.settings, story_events)
    size = await log_size_reaches(log, before + len(story_events))
    checkpoint = await log.checkpoint()
    assert checkpoint is not None
    assert checkpoint.tree_size == size
    await log_size_reaches(log, size + 1)  # its log.checkpoint event came back to the log
    return size
