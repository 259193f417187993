"""Data preparation of one card.ordered: the consumer's handler body (handlers.py wires it).

Per card: one read (the vault row and whether the card is already prepared), one HSM-worker
call (security.prepare_card_data: MK KCVs, PIN, CVVs, the vault record opened once) and one
write statement (prepared card, PIN blocks, sealed CVVs, vault access), plus card.prepared
through the unit of work's buffered outbox. The issuer's active key labels and the product
profile are cached per (issuer, product) for CONFIG_TTL seconds: a key retired or a profile
changed takes effect for new cards within that time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from services.keymgmt.emv import ImkLabels
from services.keymgmt.hsm import Hsm, HsmError, KeyNotFoundError
from services.keymgmt.repository_security import SecurityRepository
from services.keymgmt.security import (
    ProductProfile,
    prepare_card_data,
    profile_key_labels,
    security_rows,
)
from services.keymgmt.service import PREPARED_DGIS
from services.keymgmt.vault import VaultError
from shared.bus import PoisonEvent
from shared.events import CardOrdered, CardPrepared
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)
CONFIG_TTL = 2.0


class ConfigCache:
    """(issuer, product) -> (the issuer's active key labels, the product profile or None)."""

    def __init__(self, ttl: float = CONFIG_TTL) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, set[str], ProductProfile | None]] = {}

    async def get(
        self, repo: SecurityRepository, issuer_id: str, product_id: str
    ) -> tuple[set[str], ProductProfile | None]:
        now = time.monotonic()
        hit = self._entries.get((issuer_id, product_id))
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1], hit[2]
        active = await repo.active_issuer_labels(issuer_id)
        profile = await repo.product(issuer_id, product_id)
        self._entries[(issuer_id, product_id)] = (now, active, profile)
        return active, profile


def _imks(issuer_id: str) -> ImkLabels:
    try:
        return ImkLabels.for_issuer(issuer_id)
    except ValueError as exc:
        raise PoisonEvent(f"issuer id {issuer_id!r} cannot name keys") from exc


async def prepare_ordered_card(
    uow: UnitOfWork,
    event: CardOrdered,
    hsm_of: Callable[[], Hsm],
    service_code: str,
    actor: str,
    cache: ConfigCache,
) -> None:
    """Derive the card's MK-AC/SMI/SMC in the HSM (KCVs kept), issue PIN and CVVs when the
    product asks, emit card.prepared. A second card.ordered for a card already prepared
    (another event id) prepares nothing and emits nothing."""
    repo = SecurityRepository(uow.conn)
    card = f"card {event.card_id}"
    vaulted = await repo.vault_card_to_prepare(event.card_id)
    if vaulted is None:
        raise PoisonEvent(f"{card} is not in the vault")
    if vaulted["issuer_id"] != event.issuer_id or vaulted["pan_token"] != event.pan_token:
        raise PoisonEvent(f"{card}: issuer or pan_token differ from the vault's record")
    if vaulted.pop("prepared"):
        log.warning("card already prepared; nothing to do", extra={"card_id": card})
        return
    imks = _imks(event.issuer_id)
    active, profile = await cache.get(repo, event.issuer_id, event.product_id)
    labels = {"IMK-AC": imks.ac, "IMK-SMI": imks.smi, "IMK-SMC": imks.smc}
    missing = [name for name, label in labels.items() if label not in active]
    if missing:
        raise PoisonEvent(
            f"issuer {event.issuer_id} has no active {', '.join(missing)}"
            f" ({', '.join(labels[m] for m in missing)}): load them by key ceremony"
        )
    if profile is not None:
        absent = sorted(set(profile_key_labels(event.issuer_id, profile)) - active)
        if absent:
            raise PoisonEvent(f"{card} ({event.product_id}): keys not active: {', '.join(absent)}")
    hsm = hsm_of()  # HsmUnavailable is a ConnectionError: retried, never poison
    try:
        prep, security = await hsm.call(prepare_card_data, vaulted, imks, service_code, profile)
    except KeyNotFoundError as exc:
        raise PoisonEvent(f"{card}: key {exc} is in the inventory but not in the HSM") from exc
    except (ValueError, VaultError) as exc:
        raise PoisonEvent(f"{card}: the vault record cannot be prepared: {exc}") from exc
    except HsmError as exc:
        raise PoisonEvent(f"{card}: cannot make its PIN or CVV: {exc}") from exc
    prepared: dict[str, Any] = {
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
    extra = {} if security is None else security_rows(event.card_id, event.issuer_id, security)
    await repo.record_preparation(prepared, extra, f"service:{actor}")
    await uow.emit(
        CardPrepared(
            issuer_id=event.issuer_id,
            actor=actor,
            card_id=event.card_id,
            batch_id=event.batch_id,
            product_id=event.product_id,
            masked_pan=vaulted["masked_pan"],
            dgis=list(PREPARED_DGIS),
            key_scheme=prep.key_scheme,
        )
    )
    log.info("card prepared", extra={"card_id": str(event.card_id), "key_scheme": prep.key_scheme})
