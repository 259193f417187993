"""keymgmt's background work: card.ordered -> data preparation -> card.prepared, and the
HSM keeper that opens the session, makes sure the bureau keys exist and holds it open."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pkcs11 import Mechanism
from sqlalchemy.ext.asyncio import AsyncEngine

from services.keymgmt.emv import ImkLabels
from services.keymgmt.hsm import (
    BureauKeyKind,
    Hsm,
    HsmError,
    KeyNotFoundError,
    describe_key,
    generate_bureau_key,
)
from services.keymgmt.repository import KeymgmtRepository, key_row
from services.keymgmt.repository_security import SecurityRepository
from services.keymgmt.security import prepare_card_security, profile_key_labels, security_rows
from services.keymgmt.service import PREPARED_DGIS, prepare_card_keys
from services.keymgmt.settings import KeymgmtSettings, process_hsm
from services.keymgmt.vault import VaultError
from shared.bus import HandlerTable, PoisonEvent
from shared.events import CardOrdered, CardPrepared
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime, Worker

log = logging.getLogger(__name__)


class HsmUnavailable(ConnectionError):
    """The HSM session is not open (yet): endpoints answer 503, the consumer retries."""


class HsmGate:
    """Where the HSM keeper puts the open session for handlers and endpoints."""

    def __init__(self) -> None:
        self.hsm: Hsm | None = None
        self.problem = "HSM session not opened yet"

    def get(self) -> Hsm:
        if self.hsm is None:
            raise HsmUnavailable(self.problem)
        return self.hsm


def imks_of(issuer_id: str) -> ImkLabels:
    """The issuer's IMK labels; an issuer id that cannot name a key is a HsmError."""
    try:
        return ImkLabels.for_issuer(issuer_id)
    except ValueError as exc:
        raise HsmError(f"issuer id {issuer_id!r} cannot name keys") from exc


@dataclass(frozen=True)
class KeymgmtDeps:
    gate: HsmGate
    service_code: str
    actor: str = "keymgmt"


def build_handlers(deps: KeymgmtDeps) -> HandlerTable:
    async def prepare_card(uow: UnitOfWork, event: CardOrdered) -> None:
        """Derive the card's MK-AC/SMI/SMC in the HSM, keep their KCVs, emit card.prepared.

        The consumer's inbox drops a redelivered event; a second card.ordered for a card
        already prepared (another event id) prepares nothing and emits nothing.
        """
        repo = KeymgmtRepository(uow.conn)
        card = f"card {event.card_id}"
        vaulted = await repo.vault_card(event.card_id)
        if vaulted is None:
            raise PoisonEvent(f"{card} is not in the vault")
        if vaulted["issuer_id"] != event.issuer_id or vaulted["pan_token"] != event.pan_token:
            raise PoisonEvent(f"{card}: issuer or pan_token differ from the vault's record")
        if await repo.prepared(event.card_id) is not None:
            log.warning("card already prepared; nothing to do", extra={"card_id": card})
            return
        try:
            imks = imks_of(event.issuer_id)
        except HsmError as exc:
            raise PoisonEvent(str(exc)) from exc
        labels = {"IMK-AC": imks.ac, "IMK-SMI": imks.smi, "IMK-SMC": imks.smc}
        active = await repo.active_labels(list(labels.values()))
        missing = [name for name, label in labels.items() if label not in active]
        if missing:
            raise PoisonEvent(
                f"issuer {event.issuer_id} has no active {', '.join(missing)}"
                f" ({', '.join(labels[m] for m in missing)}): load them by key ceremony"
            )
        hsm = deps.gate.get()  # HsmUnavailable is a ConnectionError: retried, never poison
        try:
            prep = await hsm.call(prepare_card_keys, vaulted, imks, deps.service_code)
        except KeyNotFoundError as exc:
            raise PoisonEvent(f"{card}: key {exc} is in the inventory but not in the HSM") from exc
        except (ValueError, VaultError) as exc:
            raise PoisonEvent(f"{card}: the vault record cannot be prepared: {exc}") from exc
        security = await _card_security(uow, deps, vaulted, event)
        await repo.add_prepared(
            {
                "card_id": event.card_id,
                "issuer_id": event.issuer_id,
                "batch_id": event.batch_id,
                "order_id": event.order_id,
                "product_id": event.product_id,
                "masked_pan": vaulted["masked_pan"],
                "key_scheme": prep.key_scheme,
                "dgis": list(PREPARED_DGIS),
                "mk_ac_kcv": prep.mk_kcvs[0],
                "mk_smi_kcv": prep.mk_kcvs[1],
                "mk_smc_kcv": prep.mk_kcvs[2],
                "source_event_id": event.event_id,
            }
        )
        if security:
            await SecurityRepository(uow.conn).add_card_security(security)
        await repo.record_access([(event.card_id, f"service:{deps.actor}", "prepare")])
        await uow.emit(
            CardPrepared(
                issuer_id=event.issuer_id,
                actor=deps.actor,
                card_id=event.card_id,
                batch_id=event.batch_id,
                product_id=event.product_id,
                masked_pan=vaulted["masked_pan"],
                dgis=list(PREPARED_DGIS),
                key_scheme=prep.key_scheme,
            )
        )
        log.info(
            "card prepared",
            extra={"card_id": str(event.card_id), "key_scheme": prep.key_scheme},
        )

    return {CardOrdered: [prepare_card]}


async def _card_security(
    uow: UnitOfWork, deps: KeymgmtDeps, vaulted: dict[str, Any], event: CardOrdered
) -> dict[str, Any]:
    """PIN and CVV rows when the issuer's product profile asks for them (else nothing)."""
    profile = await SecurityRepository(uow.conn).product(event.issuer_id, event.product_id)
    if profile is None:
        return {}
    card = f"card {event.card_id} ({event.product_id})"
    needed = profile_key_labels(event.issuer_id, profile)
    missing = sorted(set(needed) - await KeymgmtRepository(uow.conn).active_labels(needed))
    if missing:
        raise PoisonEvent(f"{card}: keys not active: {', '.join(missing)}")
    hsm = deps.gate.get()
    try:
        sec = await hsm.call(prepare_card_security, vaulted, profile, deps.service_code)
    except HsmError as exc:  # KeyNotFoundError included: in the inventory, not in the HSM
        raise PoisonEvent(f"{card}: cannot make its PIN or CVV: {exc}") from exc
    return security_rows(event.card_id, event.issuer_id, sec)


# -- the HSM keeper ---------------------------------------------------------------------------
def _ping(hsm: Hsm) -> None:
    hsm.random(1)


async def hsm_problem(gate: HsmGate, timeout: float) -> str | None:
    """None when the HSM session answers within the timeout, else what is wrong."""
    if gate.hsm is None:
        return gate.problem
    try:
        await asyncio.wait_for(gate.hsm.call(_ping), timeout)
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except Exception as exc:
        return f"session broken: {exc.__class__.__name__}"
    return None


def _hmac_kcv(hsm: Hsm, label: str) -> str:
    """An HMAC key has no standard KCV: first 3 bytes of HMAC-SHA256(key, 16 zero bytes)."""
    mac = hsm.key(label).sign(bytes(16), mechanism=Mechanism.SHA256_HMAC)
    return bytes(mac)[:3].hex().upper()


async def ensure_bureau_keys(engine: AsyncEngine, hsm: Hsm, settings: KeymgmtSettings) -> list[str]:
    """Generate the vault and PAN-hash keys in the HSM when absent and keep them in the
    inventory (idempotent; replicas serialise on an advisory lock). Returns labels generated.
    The KMC is not among them: it is shared with the card manufacturer, so loaded by ceremony.
    """
    generated: list[str] = []
    wanted = (
        (settings.vault_key_label, BureauKeyKind.VAULT_AES256, "vault"),
        (settings.pan_hash_key_label, BureauKeyKind.PAN_HMAC, "pan-hash"),
    )
    async with engine.begin() as conn:
        repo = KeymgmtRepository(conn)
        await repo.lock("keymgmt.bureau-keys")
        for label, kind, usage in wanted:
            row = await repo.key(label)
            present = await hsm.call(Hsm.find_key, label) is not None
            if row is not None and (row["state"] != "active" or not present):
                raise HsmError(
                    f"bureau key {label} is {row['state']} in the inventory"
                    f"{'' if present else ' and absent from the HSM'}: not generating another"
                    " (data sealed under it would be lost); restore or rotate it first"
                )
            if row is not None:
                continue
            if present:  # made by an earlier run whose inventory row was lost: adopt it
                info = await hsm.call(describe_key, label)
            else:
                info = await hsm.call(generate_bureau_key, label, kind)
                generated.append(label)
            kcvs = [(k.value, k.method.value) for k in info.kcvs]
            if not kcvs:
                kcvs = [(await hsm.call(_hmac_kcv, label), "HMAC-SHA256-ZERO-BLOCK")]
            key_type, owner = f"{info.key_type}-{info.bits}", label.split("/")[0]
            await repo.add_key(key_row(label, owner, key_type, usage, kcvs, "generated"))
            log.info("bureau key recorded", extra={"label": label, "generated": not present})
    return generated


def hsm_keeper(settings: KeymgmtSettings, gate: HsmGate) -> Worker:
    async def keep_hsm_open(runtime: ServiceRuntime) -> None:
        """Open the session (retrying until it opens), make sure the bureau keys exist, hold
        the session until shutdown. Readiness reports every failure on the way."""
        while True:
            try:
                async with process_hsm(settings) as hsm:
                    await ensure_bureau_keys(runtime.engine, hsm, settings)
                    gate.hsm, gate.problem = hsm, ""
                    log.info("hsm session ready", extra={"token": settings.hsm_token})
                    try:
                        await asyncio.Event().wait()
                    finally:
                        gate.hsm, gate.problem = None, "HSM session closed"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                gate.problem = f"cannot use the HSM: {exc.__class__.__name__}: {exc}"
                log.error("hsm unavailable; retrying", extra={"problem": gate.problem})
                await asyncio.sleep(settings.hsm_retry_seconds)

    return keep_hsm_open
