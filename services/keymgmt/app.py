"""keymgmt: wiring (bootstrap) and the HTTP API of docs/services.md, the only door to the HSM."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any
from uuid import UUID

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from services.keymgmt.handlers import (
    HsmGate,
    HsmUnavailable,
    KeymgmtDeps,
    build_handlers,
    hsm_keeper,
    hsm_problem,
    imks_of,
)
from services.keymgmt.hsm import Hsm, HsmError, KeyNotFoundError
from services.keymgmt.perso import PersoScript, PersoSummary
from services.keymgmt.pin_mailer import router as pin_mailer_router
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.repository_sim import SimRepository
from services.keymgmt.routers import router as keys_and_products_router
from services.keymgmt.secure_channel import (
    CARD_CANCELLED,
    CRYPTOGRAM_MISMATCH,
    REFUSAL_HEADER,
    CardCryptogramMismatch,
    InitializeUpdateAnswer,
    ScriptCommand,
    SecureChannelError,
    SecureScriptRequest,
    secure_script,
)
from services.keymgmt.service import (
    ArqcRequest,
    ReadbackRequest,
    VaultStore,
    build_card_script,
    expected_records,
    new_pan_token,
    open_card,
    pan_hashes,
    readback_problems,
    seal_cards,
    verify_card_arqc,
)
from services.keymgmt.settings import KeymgmtSettings
from services.keymgmt.signing import router as signing_router
from services.keymgmt.sim_perso import SimPersoScript, build_sim_script, mnc_length_of
from shared.auth import Principal, require
from shared.service import ServiceRuntime, create_app

log = logging.getLogger(__name__)

NAME = "keymgmt"
MIGRATIONS = Path(__file__).parent / "migrations"
SUBSCRIBE = ("intake",)
SEAL_CHUNK = 200  # cards per HSM-worker call: other HSM work interleaves with a big order


class KeymgmtRuntime(ServiceRuntime):
    """The shared runtime plus the HSM: not ready while the HSM session is unusable."""

    def __init__(self, settings: KeymgmtSettings, **kw: Any) -> None:
        super().__init__(settings=settings, **kw)
        self.keymgmt_settings = settings
        self.gate = HsmGate()
        self.handlers = build_handlers(
            KeymgmtDeps(self.gate, settings.service_code, sim_kek_label=settings.sim_kek_label)
        )
        self.workers.append(hsm_keeper(settings, self.gate))

    async def check_ready(self) -> dict[str, Any]:
        report = await super().check_ready()
        problem = await hsm_problem(self.gate, self.keymgmt_settings.hsm_ping_timeout_seconds)
        if problem:
            report["problems"].append(f"hsm: {problem}")
            report["ready"] = False
        return report


def build_runtime(
    settings: KeymgmtSettings, schema: str | None = None, consumer_group: str | None = None
) -> KeymgmtRuntime:
    """Wire HSM keeper, handlers and consumer. Tests pass their own schema and settings."""
    return KeymgmtRuntime(
        settings,
        name=NAME,
        migrations=MIGRATIONS,
        subscribe=SUBSCRIBE,
        schema=schema or settings.keymgmt_schema,
        consumer_group=consumer_group,
    )


def service_caller(*names: str) -> Any:
    """Depends(): a service principal, and one of the named services."""

    service = Depends(require("service"))

    async def dependency(who: Principal = service) -> Principal:
        if who.name not in names:
            raise HTTPException(403, f"service {who.name!r} may not call this endpoint")
        return who

    return Depends(dependency)


def build_app(runtime: KeymgmtRuntime) -> FastAPI:
    settings, gate = runtime.keymgmt_settings, runtime.gate
    app = create_app(
        runtime,
        title="cardbureau keymgmt",
        description="The only door to the HSM: key inventory, PAN vault, data preparation, "
        "perso scripts for stations, chip read-back and ARQC checks for QA.",
    )

    @app.exception_handler(HsmUnavailable)
    async def hsm_unavailable(request: Request, exc: HsmUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"HSM unavailable: {exc}"})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Pydantic would echo input values, and these bodies hold PANs: locations only.
        problems = [
            {"location": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
            for err in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": problems})

    keys_readers = Depends(require("custodian", "admin", "issuer"))
    custodian = Depends(require("custodian", "admin"))
    auditors = Depends(require("custodian", "admin", "auditor"))
    station = Depends(require("station"))
    intake, graphical = service_caller("intake"), service_caller("graphical")
    fulfillment, qa = service_caller("fulfillment"), service_caller("qa")

    def visible(who: Principal, issuer_id: str) -> bool:
        return who.role != "issuer" or who.issuer_id == issuer_id

    @app.get("/v1/keys", tags=["keys"], summary="Key inventory (issuers see their own keys)")
    async def list_keys(issuer_id: str | None = None, who: Principal = keys_readers) -> Any:
        if who.role == "issuer":
            if issuer_id not in (None, who.issuer_id):
                raise HTTPException(404, "no such issuer")
            issuer_id = who.issuer_id
        async with runtime.engine.connect() as conn:
            return {"keys": await KeymgmtRepository(conn).keys(issuer_id)}

    @app.get("/v1/keys/{label:path}", tags=["keys"])
    async def get_key(label: str, who: Principal = keys_readers) -> Any:
        async with runtime.engine.connect() as conn:
            key = await KeymgmtRepository(conn).key(label)
        if key is None or not visible(who, key["issuer_id"]):
            raise HTTPException(404, "no such key")
        return key

    @app.post("/v1/keys/{label:path}/retire", tags=["keys"])
    async def retire_key(label: str, who: Principal = custodian) -> Any:
        if label in (settings.vault_key_label, settings.pan_hash_key_label):
            raise HTTPException(409, "the vault keys in use cannot be retired; rotate first")
        async with runtime.engine.begin() as conn:
            repo = KeymgmtRepository(conn)
            if await repo.key(label) is None:
                raise HTTPException(404, "no such key")
            if not await repo.retire_key(label, f"{who.role}:{who.name}"):
                raise HTTPException(409, "the key is not active")
            return await repo.key(label)

    @app.get("/v1/ceremonies", tags=["keys"], summary="Key ceremonies and their steps")
    async def ceremonies(label: str | None = None, _: Principal = auditors) -> Any:
        async with runtime.engine.connect() as conn:
            return {"ceremonies": await KeymgmtRepository(conn).ceremonies(label)}

    @app.post("/v1/vault/cards", tags=["vault"])
    async def store_cards(body: VaultStore, who: Principal = intake) -> Any:
        """Seal each record under the HSM vault key; idempotent per card_id."""
        ids = [c.card_id for c in body.cards]
        if len(set(ids)) != len(ids):
            raise HTTPException(422, "a card_id appears twice")
        hsm = gate.get()
        keys = (settings.vault_key_label, settings.pan_hash_key_label, body.issuer_id)
        async with runtime.engine.begin() as conn:
            repo = KeymgmtRepository(conn)
            known = await repo.vault_cards(ids)
            fresh = [c for c in body.cards if c.card_id not in known]
            for start in range(0, len(fresh), SEAL_CHUNK):
                sealed = await hsm.call(seal_cards, *keys, fresh[start : start + SEAL_CHUNK])
                await repo.add_vault_cards(
                    [
                        asdict(s) | {"issuer_id": body.issuer_id, "pan_token": new_pan_token()}
                        for s in sealed
                    ]
                )
            again = [c for c in body.cards if c.card_id in known]
            hashes = await hsm.call(pan_hashes, keys[1], [c.pan for c in again])
            for card, digest in zip(again, hashes, strict=True):
                old = known[card.card_id]
                if old["issuer_id"] != body.issuer_id or bytes(old["pan_hash"]) != digest:
                    raise HTTPException(409, f"card {card.card_id} is vaulted with other data")
            await repo.record_access((i, f"service:{who.name}", "store") for i in ids)
            stored = await repo.vault_cards(ids)
        return {
            "cards": [
                {k: str(stored[i][k]) for k in ("card_id", "pan_token", "masked_pan")} for i in ids
            ]
        }

    async def vault_row(card_id: UUID, who: Principal, purpose: str) -> Any:
        """The card's vault row; every access is recorded (who, card, purpose, when)."""
        async with runtime.engine.begin() as conn:
            repo = KeymgmtRepository(conn)
            row = await repo.vault_card(card_id)
            if row is None:
                raise HTTPException(404, "no such card in the vault")
            await repo.record_access([(card_id, f"{who.role}:{who.name}", purpose)])
            return row

    @app.get("/v1/vault/cards/{card_id}/print-data", tags=["vault"])
    async def print_data(card_id: UUID, who: Principal = graphical) -> Any:
        row = await vault_row(card_id, who, "print-data")
        card = await gate.get().call(open_card, row)
        return {
            "card_id": str(card_id),
            "issuer_id": row["issuer_id"],
            "cardholder_name": card.cardholder_name,
            "masked_pan": row["masked_pan"],
            "expiry": card.expiry,
        }

    @app.get("/v1/vault/cards/{card_id}/mailing", tags=["vault"])
    async def mailing(card_id: UUID, who: Principal = fulfillment) -> Any:
        card = await gate.get().call(open_card, await vault_row(card_id, who, "mailing"))
        return {
            "card_id": str(card_id),
            "cardholder_name": card.cardholder_name,
            "address": card.address,
        }

    @app.post("/v1/perso/secure-scripts", tags=["perso"])
    async def secure_perso_script(body: SecureScriptRequest, who: Principal = station) -> Any:
        """The card's script through its SCP03 secure channel (docs/perso-protocol.md): from
        the card's INITIALIZE UPDATE answer, EXTERNAL AUTHENTICATE and the protected commands.
        Binds the chip to the card for good once the card has proved it holds our keys."""
        try:
            iu = bytes.fromhex(body.initialize_update_response)
            answer = InitializeUpdateAnswer.parse(iu)
        except SecureChannelError as exc:
            raise HTTPException(422, str(exc)) from exc
        chip, card_id = answer.chip_serial, body.card_id
        if chip != body.chip_serial.upper():
            raise HTTPException(
                422, f"the INITIALIZE UPDATE answer is from chip {chip}, not {body.chip_serial}"
            )
        hsm = gate.get()
        mismatch: CardCryptogramMismatch | None = None
        async with runtime.engine.begin() as conn:
            repo = KeymgmtRepository(conn)
            if await repo.is_cancelled(card_id):
                raise HTTPException(
                    409,
                    "the card was cancelled by its issuer",
                    headers={REFUSAL_HEADER: CARD_CANCELLED},
                )
            prepared = await repo.prepared(card_id, for_update=True)
            vaulted = await repo.vault_card(card_id)
            if prepared is None or vaulted is None:
                raise HTTPException(409 if vaulted else 404, "the card is not prepared")
            bound = await repo.binding(card_id)
            if bound is not None and bound["chip_serial"] != chip:
                raise HTTPException(409, "the card is already bound to another chip")
            if bound is None and await repo.card_of_chip(chip) is not None:
                raise HTTPException(409, "this chip is already bound to another card")
            sims = SimRepository(conn)
            sim = await sims.card(card_id)
            imks = imks_of(prepared["issuer_id"])
            if sim is None:  # an EMV payment card
                needed = [imks.ac, imks.smi, imks.smc, settings.kmc_label]
            else:  # a USIM (docs/perso-protocol.md, SIM products)
                needed = [sim["storage_key_label"], settings.kmc_label]
                product = await sims.product(prepared["issuer_id"], prepared["product_id"])
                if product is None:
                    raise HTTPException(409, "the SIM's product is not configured")
                mnc_length = mnc_length_of(product["imsi_prefix"])
            missing = set(needed) - await repo.active_labels(needed)
            if missing:
                raise HTTPException(409, f"keys not active: {', '.join(sorted(missing))}")
            built: list[PersoScript | SimPersoScript] = []

            def build(h: Hsm, iu_answer: InitializeUpdateAnswer) -> tuple[ScriptCommand, ...]:
                div = iu_answer.diversification_data
                if sim is not None:
                    built.append(build_sim_script(h, sim, div, settings.kmc_label, mnc_length))
                else:
                    args = (div, imks, settings.kmc_label, settings.app_label)
                    built.append(build_card_script(h, vaulted, *args, settings.service_code))
                return built[-1].commands

            challenge = bytes.fromhex(body.host_challenge)
            try:
                secured = await hsm.call(secure_script, settings.kmc_label, challenge, iu, build)
            except KeyNotFoundError as exc:
                raise HTTPException(409, f"key {exc} is not in the HSM") from exc
            except CardCryptogramMismatch as exc:
                mismatch = exc
            except SecureChannelError as exc:
                raise HTTPException(422, str(exc)) from exc
            if mismatch is None:
                summary = built[0].summary
                if isinstance(summary, PersoSummary):
                    kcvs = tuple(k.value for _, k in summary.mk_kcvs)
                    expected = (
                        prepared["mk_ac_kcv"],
                        prepared["mk_smi_kcv"],
                        prepared["mk_smc_kcv"],
                    )
                    if kcvs != expected:
                        raise HTTPException(
                            409, "the issuer keys changed since the card was prepared"
                        )
                try:
                    if bound is None:
                        await repo.bind_chip(card_id, chip, who.name)
                except IntegrityError as exc:  # a concurrent request bound this chip first
                    raise HTTPException(409, "this chip is already bound to another card") from exc
                await repo.add_perso_session(
                    {"card_id": card_id, "chip_serial": chip, "station": who.name}
                    | {"apdu_count": len(secured.apdus), "kdek_kcv": summary.kdek_kcv.value}
                )
                await repo.record_access([(card_id, f"station:{who.name}", "perso")])
            else:
                # Recorded with the refusal; the station spoils the card and ejects the chip.
                purpose = f"perso refused: card cryptogram mismatch (chip {chip})"
                await repo.record_access([(card_id, f"station:{who.name}", purpose)])
        if mismatch is not None:
            log.warning(
                "card cryptogram mismatch",
                extra={"card_id": str(card_id), "chip_serial": chip, "station": who.name},
            )
            raise HTTPException(409, str(mismatch), headers={REFUSAL_HEADER: CRYPTOGRAM_MISMATCH})
        return {
            "card_id": str(card_id),
            "chip_serial": chip,
            "security_level": f"{secured.security_level:02X}",
            "apdus": [a.hex().upper() for a in secured.apdus],
            "dgis": list(built[0].summary.dgis),
        }

    @app.post("/v1/qa/readback", tags=["qa"])
    async def readback(body: ReadbackRequest, who: Principal = qa) -> Any:
        """Compare the chip's records with the prepared ones; problems never carry values."""
        hsm = gate.get()
        row = await vault_row(body.card_id, who, "qa-readback")
        want = await hsm.call(expected_records, row, settings.service_code, settings.app_label)
        problems = readback_problems(want, body.records)
        return {"ok": not problems, "problems": problems}

    @app.post("/v1/arqc/verify", tags=["qa"])
    async def arqc_verify(body: ArqcRequest, who: Principal = qa) -> Any:
        hsm = gate.get()
        row = await vault_row(body.card_id, who, "arqc-verify")
        try:
            imk_ac = imks_of(row["issuer_id"]).ac
            cdol1, atc, arqc = (bytes.fromhex(x) for x in (body.cdol1, body.atc, body.arqc))
            ok = await hsm.call(verify_card_arqc, row, imk_ac, cdol1, atc, arqc)
        except HsmError as exc:  # no such issuer key in the HSM, or an unusable issuer id
            raise HTTPException(409, f"cannot verify: {exc}") from exc
        return {"ok": ok}

    app.include_router(signing_router)  # the audit checkpoint-signing key (issue 6)
    app.include_router(keys_and_products_router)  # ceremonies, PIN/CVV product profiles
    app.include_router(pin_mailer_router)  # PIN mailers on the PIN printer (issue 5)
    return app
