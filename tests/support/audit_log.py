"""Fixtures of the audit log tests: the audit service with a real keymgmt in
process (real SoftHSM token, real Postgres, real Kafka) signing its checkpoints, an auditor
API client, and the checkpoint key's PEM as keymgmt publishes it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.audit.app import bootstrap, build_app
from services.audit.settings import AuditSettings
from services.audit.signer import KeymgmtSigner
from services.keymgmt.app import bootstrap as build_keymgmt_runtime
from services.keymgmt.app import build_app as build_keymgmt_app
from services.keymgmt.hsm.session import Hsm
from shared.db import make_engine
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.bus import wait_for
from tests.support.hsm import HsmToken
from tests.support.keymgmt import token_settings

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


@pytest.fixture
async def signed_log(
    stack_env: dict[str, str],
    unique: str,
    keymgmt_module: str,
    hsm_token: HsmToken,
    keymgmt_hsm: Hsm,
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
    async with (
        running(keymgmt),
        running(bootstrap(settings, schema=schema, signer=signer)) as audit,
    ):

        async def hsm_open() -> bool:
            return keymgmt.deps.gate.hsm is not None

        await wait_for(hsm_open)
        async with keymgmt_client() as client:
            answer = await client.get(
                "/v1/signing/audit-checkpoints/public-key",
                headers={"Authorization": f"Bearer an-{u}"},
            )
        assert answer.status_code == 200, answer.text
        transport = httpx.ASGITransport(app=build_app(audit))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://audit", headers=AUDITOR
        ) as api:
            pem = answer.json()["public_key_pem"]
            yield SignedLog(audit, settings, signer, api, pem, keymgmt_client, u)
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
