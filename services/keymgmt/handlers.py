"""keymgmt's background work: card.ordered -> data preparation -> card.prepared (card.cancelled
-> never prepared nor scripted), and the
HSM keeper that opens the session, makes sure the bureau keys exist and holds it open."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pkcs11 import Mechanism
from sqlalchemy.ext.asyncio import AsyncEngine

from services.keymgmt.emv import ImkLabels
from services.keymgmt.hsm import (
    BureauKeyKind,
    Hsm,
    HsmError,
    describe_key,
    generate_bureau_key,
)
from services.keymgmt.preparation import ConfigCache, prepare_ordered_cards
from services.keymgmt.repository import KeymgmtRepository, key_row
from services.keymgmt.settings import KeymgmtSettings, process_hsm
from shared.bus import BatchHandler, HandlerTable
from shared.events import CardCancelled, CardOrdered
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
    sim_kek_label: str = "bureau/SIMKEK/1"


def build_handlers(deps: KeymgmtDeps) -> HandlerTable:
    cache = ConfigCache()

    async def prepare_cards(uow: UnitOfWork[Any], ordered: Sequence[CardOrdered]) -> None:
        """card.ordered -> MK KCVs, PIN and CVVs per the product -> card.prepared, for a
        fetched run of cards at once (one read, HSM work per card, one write)."""
        await prepare_ordered_cards(
            uow, ordered, deps.gate.get, deps.service_code, deps.actor, cache, deps.sim_kek_label
        )

    async def remember_cancelled(uow: UnitOfWork[Any], event: CardCancelled) -> None:
        """The issuer cancelled the card: never prepared from now on, and no station gets its
        script (409 card-cancelled); one already prepared stays so, unused."""
        await KeymgmtRepository(uow.conn).record_cancelled(
            event.card_id, event.reason, event.event_id
        )
        log.info("card cancelled by its issuer", extra={"card_id": str(event.card_id)})

    return {
        CardOrdered: [BatchHandler(prepare_cards)],
        CardCancelled: [remember_cancelled],
    }


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
