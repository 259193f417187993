"""An operator fetches its SIM output file from keymgmt with its own issuer token, the one
intake's credentials API gave it (keymgmt asks intake's GET /v1/whoami, shared/issuer_tokens.py):
its own file is served and the fetch recorded; another operator's token, an unknown token and
a revoked one are refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from sqlalchemy import text

from services.keymgmt.app import build_app
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import CeremonySpec, run_demo_ceremony
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.settings import KeymgmtSettings
from shared.issuer_tokens import RemoteIssuerTokens
from shared.service import ServiceRuntime
from tests.support.intake import bearer, started_intake
from tests.support.keymgmt import auth
from tests.support.keymgmt_sim import OP, TRANSPORT

pytestmark = pytest.mark.integration


async def test_an_operator_fetches_its_own_file_with_its_intake_token(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
) -> None:
    runtime, http = keymgmt
    custodian = auth(f"cu-{unique}")
    async with started_intake(settings, http, unique) as intake:
        verifier = RemoteIssuerTokens(
            "http://intake", ttl_seconds=0, transport=httpx.ASGITransport(app=intake.app)
        )
        app = build_app(runtime, issuer_tokens=verifier)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://keymgmt"
        ) as keymgmt_api:
            operator, version = "bank-a", int(unique[:5], 16) + 10
            label = f"{operator}/TRANSPORT/{version}"
            spec = CeremonySpec(label, operator, CeremonyKeyType.AES128, KeyUsage.WRAP, 2, "t")
            await run_demo_ceremony(runtime.engine, keymgmt_hsm, spec, TRANSPORT.hex(), "22" * 16)
            serial = int(unique[:6], 16) % 10**6 * 10
            product = {
                "op": OP.hex(),
                "transport_key_label": label,
                "iccid_prefix": f"8945{serial // 10:06d}",
                "imsi_prefix": "00104",
                "first_serial": serial,
                "last_serial": serial + 9,
            }
            put = await keymgmt_api.put(
                f"/v1/sim/products/{operator}/usim", json=product, headers=custodian
            )
            assert put.status_code == 200, put.text
            body = {"issuer_id": operator, "product_id": "usim", "count": 2}
            made = await keymgmt_api.post("/v1/sim/batches", json=body, headers=custodian)
            assert made.status_code == 200, made.text
            path = f"/v1/sim/batches/{made.json()['batch_id']}/output-file"

            own = await keymgmt_api.get(path, headers=bearer(intake.tokens[operator]))
            assert own.status_code == 200, own.text
            lines = [x for x in own.text.splitlines() if not x.startswith(("*", "var_"))]
            assert len(lines) == 2
            assert len(aes_key_unwrap(TRANSPORT, bytes.fromhex(lines[0].split()[2]))) == 16
            other = await keymgmt_api.get(path, headers=bearer(intake.tokens["bank-b"]))
            assert other.status_code == 404
            assert other.json()["detail"] == "no such batch of this operator"
            unknown = await keymgmt_api.get(path, headers=bearer("not-a-token"))
            assert unknown.status_code == 401
            rotated = await intake.http.post(
                f"/v1/admin/issuers/{operator}/credentials?revoke_existing=true",
                headers=intake.admin,
            )
            assert rotated.status_code == 201
            revoked = await keymgmt_api.get(path, headers=bearer(intake.tokens[operator]))
            new_token = await keymgmt_api.get(path, headers=bearer(rotated.json()["token"]))
            assert (revoked.status_code, new_token.status_code) == (401, 200)
            async with runtime.engine.connect() as conn:
                fetches = await conn.execute(
                    text("SELECT fetched_by, sims FROM sim_output_fetches WHERE batch_id = :b"),
                    {"b": made.json()["batch_id"]},
                )
                assert fetches.all() == [(f"issuer:{operator}", 2), (f"issuer:{operator}", 2)]
