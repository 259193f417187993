"""TEST DOUBLE of the keymgmt process for the electrical and QA integration tests. keymgmt's
service layer is being written concurrently; this double serves the three endpoints of
docs/services.md the station and QA call (/v1/perso/secure-scripts, /v1/qa/readback,
/v1/arqc/verify) over real HTTP on 127.0.0.1,
computed by the REAL HSM core (services/keymgmt/emv/perso.py, gp/secure_channel.py,
emv/keys.py, the full EMV profile of docs/emv-profile.md; sim/perso.py for a SIM added with
add_sim) on a fresh SoftHSM token. Its fixture `station_keymgmt` is registered in
tests/conftest.py."""

from __future__ import annotations

import asyncio
import secrets
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.keymgmt.emv.keys import verify_arqc
from services.keymgmt.emv.oda import TEST_RID
from services.keymgmt.emv.perso import CardRecord, build_perso_script
from services.keymgmt.emv.records import afl_records, aip
from services.keymgmt.gp.channel import (
    CardCryptogramMismatch,
    InitializeUpdateAnswer,
    ScriptCommand,
    SecureChannelError,
)
from services.keymgmt.gp.secure_channel import secure_script
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.sim.perso import build_sim_script
from services.keymgmt.sim.profile import SimProfile
from shared.keymgmt.contract import (
    REFUSAL_HEADER,
    ReadbackProblem,
    ReadbackRequest,
    Refusal,
    SecureScriptRequest,
)
from shared.pan import luhn_check_digit
from tests.support.bus import wait_for
from tests.support.emv_cards import TestCard, TestIssuerOda, card_profile_on, issuer_oda_on
from tests.support.hsm import IssuerKeys

STATION_TOKEN = "station-a-test-token"
QA_TOKEN = "qa-test-token"


def new_record(name: str = "TEST/CARDHOLDER") -> CardRecord:
    body = "476173" + "".join(secrets.choice("0123456789") for _ in range(9))
    return CardRecord(body + luhn_check_digit(body), "01", "2812", name, "201")


def expected_records(record: CardRecord, card: TestCard) -> dict[str, str]:
    """Every AFL record by DGI number, as the card must answer them (docs/emv-profile.md)."""
    d = card.data
    records = afl_records(record, d.profile, d.icvv, d.effective, d.issuer, d.card)
    return {n: r.hex().upper() for n, r in records.items()}


class _Arqc(BaseModel):
    card_id: uuid.UUID
    cdol1: str
    atc: str
    arqc: str


class KeymgmtTestDouble:
    """TEST DOUBLE of keymgmt over real HTTP; the cryptography is the real HSM core."""

    def __init__(self, hsm: Hsm, keys: IssuerKeys, station_token: str, qa_token: str) -> None:
        self.hsm, self.keys = hsm, keys
        self.records: dict[uuid.UUID, CardRecord] = {}
        self.cards: dict[uuid.UUID, TestCard] = {}
        self.issuer: TestIssuerOda = hsm.run(issuer_oda_on, keys.issuer)
        # SIMs: the card's sim_cards row (values wrapped under a storage key on this token)
        self.sims: dict[uuid.UUID, tuple[Mapping[str, Any], SimProfile]] = {}
        self.script_apdus: Counter[uuid.UUID] = Counter()  # APDUs of the scripts served
        self.scripts: Counter[uuid.UUID] = Counter()
        self.refused_chips: list[str] = []  # card cryptogram mismatches
        self.cancelled: set[uuid.UUID] = set()  # cards keymgmt refuses as cancelled
        # Cards keymgmt refuses as not for this station (their batch planned elsewhere).
        self.elsewhere: set[uuid.UUID] = set()
        self.available = True
        self.refused_while_down = 0
        app = FastAPI()

        def check(authorization: str, token: str) -> None:
            if authorization != f"Bearer {token}":
                raise HTTPException(401, "unknown credentials")
            if not self.available:
                self.refused_while_down += 1
                raise HTTPException(503, "keymgmt test double: down on purpose")

        def record_of(card_id: uuid.UUID) -> CardRecord:
            if card_id not in self.records:
                raise HTTPException(404, "no such card")
            return self.records[card_id]

        @app.post("/v1/perso/secure-scripts", response_model=None)
        async def perso_scripts(
            body: SecureScriptRequest, authorization: str = Header("")
        ) -> dict[str, Any] | JSONResponse:
            check(authorization, station_token)
            sim = self.sims.get(body.card_id)
            record = record_of(body.card_id) if sim is None else None
            if body.card_id in self.cancelled:
                headers = {REFUSAL_HEADER: Refusal.CARD_CANCELLED}
                detail = {"detail": "the card was cancelled by its issuer"}
                return JSONResponse(detail, status_code=409, headers=headers)
            if body.card_id in self.elsewhere:
                headers = {REFUSAL_HEADER: Refusal.CARD_NOT_FOR_THIS_STATION}
                detail = {"detail": "the card's batch is assigned to station station-b"}
                return JSONResponse(detail, status_code=403, headers=headers)

            def build(h: Hsm, answer: InitializeUpdateAnswer) -> tuple[ScriptCommand, ...]:
                div = answer.diversification_data
                if sim is not None:  # a USIM: 2-digit MNC, the product's profile
                    return build_sim_script(h, sim[0], div, keys.kmc_label, 2, sim[1]).commands
                assert record is not None
                data = self.cards[body.card_id].data
                return build_perso_script(h, record, div, keys.imks, keys.kmc_label, data).commands

            challenge = bytes.fromhex(body.host_challenge)
            iu = bytes.fromhex(body.initialize_update_response)
            try:
                secured = await hsm.call(secure_script, keys.kmc_label, challenge, iu, build)
            except CardCryptogramMismatch as exc:
                self.refused_chips.append(body.chip_serial.upper())
                headers = {REFUSAL_HEADER: Refusal.CARD_CRYPTOGRAM_MISMATCH}
                return JSONResponse({"detail": str(exc)}, status_code=409, headers=headers)
            except SecureChannelError as exc:
                raise HTTPException(422, str(exc)) from exc
            self.scripts[body.card_id] += 1
            self.script_apdus[body.card_id] += len(secured.apdus)
            return {
                "card_id": str(body.card_id),
                "chip_serial": secured.chip_serial,
                "security_level": f"{secured.security_level:02X}",
                "apdus": [apdu.hex().upper() for apdu in secured.apdus],
            }

        @app.post("/v1/qa/readback")
        async def readback(body: ReadbackRequest, authorization: str = Header("")) -> Any:
            check(authorization, qa_token)  # the contract's request, keymgmt's reason codes
            want = expected_records(record_of(body.card_id), self.cards[body.card_id])
            got = {k: v.upper() for k, v in body.records.items()}
            differ = any(got.get(n) != want[n] for n in want)
            return {
                "ok": not differ,
                "problems": [ReadbackProblem.RECORDS_DIFFER] if differ else [],
            }

        @app.post("/v1/arqc/verify")
        async def arqc(body: _Arqc, authorization: str = Header("")) -> Any:
            check(authorization, qa_token)
            record, profile = record_of(body.card_id), self.cards[body.card_id].data.profile
            args = (bytes.fromhex(body.atc), bytes.fromhex(body.cdol1), bytes.fromhex(body.arqc))
            imk, product_aip = keys.imks.ac, aip(profile)  # the product's AIP, as keymgmt
            ok = await hsm.call(verify_arqc, imk, record.pan, record.psn, *args, product_aip)
            return {"ok": ok}

        @app.get("/v1/ca-keys/{rid}/{ca_index}")
        async def ca_key(rid: str, ca_index: str, authorization: str = Header("")) -> Any:
            check(authorization, qa_token)  # the test CA keymgmt trusts, as keymgmt answers
            ca, index = self.issuer.ca, f"{self.issuer.oda.ca_index:02X}"
            if (rid.upper(), ca_index.upper()) != (TEST_RID, index):
                raise HTTPException(404, f"no trusted CA public key {rid}/{ca_index}")
            return {
                "rid": TEST_RID,
                "ca_index": index,
                "modulus": ca.modulus.hex().upper(),
                "exponent": ca.exponent.hex().upper(),
                "expires": "2031-12-31",
            }

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))

    def add_card(self, record: CardRecord | None = None) -> uuid.UUID:
        card_id = uuid.uuid4()
        self.records[card_id] = record or new_record()
        self.cards[card_id] = self.hsm.run(card_profile_on, self.records[card_id], self.issuer)
        return card_id

    def add_sim(self, sim: Mapping[str, Any], profile: SimProfile | None = None) -> uuid.UUID:
        card_id = uuid.uuid4()
        self.sims[card_id] = (sim, profile or SimProfile())
        return card_id

    async def __aenter__(self) -> KeymgmtTestDouble:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        await wait_for(self._started, timeout=10)
        return self

    async def _started(self) -> bool:
        return self._server.started

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        await self._task


@pytest.fixture(scope="module")
async def station_keymgmt(hsm: Hsm, test_keys: IssuerKeys) -> AsyncIterator[KeymgmtTestDouble]:
    """The double as the station and QA call it, one per test module (its cards and counters
    live as long as the module's feeder). Not named `keymgmt`: that is the real service."""
    async with KeymgmtTestDouble(hsm, test_keys, STATION_TOKEN, QA_TOKEN) as double:
        yield double
