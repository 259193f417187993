"""Data preparation of card.ordered events: the consumer's batch handler (handlers.py wires
it as a shared.handlers.BatchHandler, so a fetched run of card.ordered arrives in one call).

Per run of cards, inside the consumer's one transaction: one read (the vault rows and which
cards are already prepared), one HSM-worker call per PREP_CHUNK cards
(security.prepare_cards_data: per card MK KCVs, PIN, CVVs, the vault record opened once),
one pipelined write (prepared cards, PIN blocks, sealed CVVs, vault access), and card.prepared
per card through the unit of work's buffered outbox, each in its card.ordered's own trace. The
issuer's active key labels and the product profile are cached per (issuer, product) for
CONFIG_TTL seconds: a key retired or a profile changed takes effect for new cards within that
time. One bad card makes the run raise PoisonEvent; the consumer then replays the records one
by one, so only that card is dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any
from uuid import UUID

from services.keymgmt.emv.card_data import IssuerOdaInputs
from services.keymgmt.emv.icc_pool import emit_draws
from services.keymgmt.emv.key_checks import product_key_problems
from services.keymgmt.emv.keys import ImkLabels
from services.keymgmt.emv.oda import issuer_key_label
from services.keymgmt.emv.records import dgi_names
from services.keymgmt.emv.repository import EmvRepository
from services.keymgmt.emv.schemas import ProductProfile
from services.keymgmt.emv.security import (
    CardSecurity,
    EmvInputs,
    oda_row,
    prepare_card_data,
    profile_key_labels,
    security_rows,
)
from services.keymgmt.emv.service import PREPARED_DGIS, Preparation
from services.keymgmt.hsm.rsa import RsaPublic
from services.keymgmt.hsm.session import Hsm, HsmError, KeyNotFoundError
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.sim.preparation import SimTodo, prepare_sim_cards
from services.keymgmt.sim.repository import SimRepository
from services.keymgmt.vault.crypto import VaultError
from shared.events import CardOrdered, CardPrepared
from shared.handlers import PoisonEvent
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)
CONFIG_TTL = 2.0


class ConfigCache:
    """(issuer, product) -> (the issuer's active key labels, the product profile or None)."""

    def __init__(self, ttl: float = CONFIG_TTL) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, set[str], ProductProfile | None]] = {}
        self._sims: dict[tuple[str, str], tuple[float, bool]] = {}
        self._checks: dict[tuple[str, str], tuple[float, list[str]]] = {}

    async def key_problems(
        self,
        repo: KeymgmtRepository,
        hsm: Hsm,
        issuer_id: str,
        product_id: str,
        profile: ProductProfile,
        kmc_label: str,
    ) -> list[str]:
        """key_checks.product_key_problems of an EMV-profile product, cached for ``ttl``."""
        now = time.monotonic()
        hit = self._checks.get((issuer_id, product_id))
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        found = await product_key_problems(repo, hsm, issuer_id, profile, kmc_label, date.today())
        self._checks[(issuer_id, product_id)] = (now, found)
        return found

    async def is_sim(self, sims: SimRepository, issuer_id: str, product_id: str) -> bool:
        """Whether (issuer, product) is a SIM product (sim_products has it)."""
        now = time.monotonic()
        hit = self._sims.get((issuer_id, product_id))
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        found = await sims.product(issuer_id, product_id) is not None
        self._sims[(issuer_id, product_id)] = (now, found)
        return found

    async def get(
        self, repo: EmvRepository, issuer_id: str, product_id: str
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


# Cards per HSM-worker call: other HSM work (stations, QA) interleaves between two calls. 5 was
# tried (issue 17): a station then waited behind ~0.1 s of preparation instead of ~1 s, but a
# 10,000-card batch took three times as long to prepare and the floor went no faster (the
# machine's CPU, not the HSM's queue, limits it).
PREP_CHUNK = 50


@dataclass(frozen=True)
class _Todo:
    event: CardOrdered
    vaulted: dict[str, Any]
    imks: ImkLabels
    profile: ProductProfile | None


class ProductIncomplete(ConnectionError):
    """A product's EMV keys or certificate are missing, or the ICC key pool is dry: the run is
    retried (a transient failure to the consumer), so the batch waits, named in the log, until
    the key is loaded or the pool refilled; no card is failed for it."""


async def _hold_incomplete_products(
    repo: KeymgmtRepository, hsm: Hsm, todo: Sequence[_Todo], cache: ConfigCache, kmc: str
) -> None:
    """Key checks of each EMV-profile product in the run (key_checks.py): ProductIncomplete
    naming every missing or mismatching key holds the run."""
    products = {
        (t.event.issuer_id, t.event.product_id): t.profile
        for t in todo
        if t.profile is not None and t.profile.emv is not None
    }
    for (issuer, product), profile in products.items():
        problems = await cache.key_problems(repo, hsm, issuer, product, profile, kmc)
        if problems:
            raise ProductIncomplete(
                f"product {product} of issuer {issuer} is held: {'; '.join(problems)}"
            )


async def _emv_inputs(repo: KeymgmtRepository, todo: Sequence[_Todo]) -> dict[UUID, EmvInputs]:
    """Per EMV-profile card: the issuer certificate and a drawn ICC pool pair."""
    certs: dict[str, IssuerOdaInputs | None] = {}
    wants_icc: list[UUID] = []
    inputs: dict[UUID, EmvInputs] = {}
    today = date.today()
    for item in todo:
        emv = None if item.profile is None else item.profile.emv
        if emv is None:
            continue
        issuer, product = item.event.issuer_id, item.event.product_id
        cert = None
        if emv.oda_methods:
            if issuer not in certs:
                row = await repo.oda.issuer_certificate(issuer, issuer_key_label(issuer))
                certs[issuer] = None if row is None else IssuerOdaInputs.of_row(row)
            cert = certs[issuer]
            if cert is None:
                raise ProductIncomplete(
                    f"product {product} of issuer {issuer} uses ODA but the issuer has no"
                    f" issuer public key certificate for {issuer_key_label(issuer)}"
                )
        if emv.needs_icc_key:
            wants_icc.append(item.event.card_id)
        inputs[item.event.card_id] = EmvInputs(cert, None, None, today)
    drawn = await repo.oda.draw_pool_pairs(wants_icc)
    if len(drawn) < len(wants_icc):
        raise ProductIncomplete(
            f"the ICC key pool has {len(drawn)} free pairs, the run needs {len(wants_icc)}"
        )
    for row in drawn:
        card_id = row["taken_by"]
        public = RsaPublic(bytes(row["modulus"]), bytes(row["exponent"]))
        inputs[card_id] = replace(inputs[card_id], icc=public, pool_id=row["id"])
    return inputs


async def _checked(
    repo: EmvRepository,
    event: CardOrdered,
    vaulted: dict[str, Any] | None,
    cache: ConfigCache,
    taken: bool,
) -> _Todo | None:
    """The card's work item, None when it is prepared already (or ``taken`` earlier in the
    run), or PoisonEvent naming what is wrong with it."""
    card = f"card {event.card_id}"
    if not _to_prepare(event, vaulted, taken) or vaulted is None:
        return None
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
    return _Todo(event, vaulted, imks, profile)


CardData = tuple[Preparation, CardSecurity | None]


def prepare_cards_data(
    hsm: Hsm,
    work: Sequence[tuple[dict[str, Any], ImkLabels, ProductProfile | None, EmvInputs | None]],
    service_code: str,
) -> list[CardData | Exception]:
    """security.prepare_card_data for each card in ONE HSM-worker call. A card whose keys,
    record or profile cannot be used gets its exception in its place (the caller makes it
    poison); a PKCS#11 failure of the session itself propagates and fails the whole call."""
    out: list[CardData | Exception] = []
    for vaulted, imks, profile, emv in work:
        try:
            out.append(prepare_card_data(hsm, vaulted, imks, service_code, profile, emv))
        except (HsmError, ValueError, VaultError) as exc:
            out.append(exc)
    return out


def _to_prepare(event: CardOrdered, vaulted: dict[str, Any] | None, taken: bool) -> bool:
    """False when the card is prepared already (or ``taken`` earlier in the run); PoisonEvent
    when the vault has no such card or another issuer's or token's."""
    card = f"card {event.card_id}"
    if vaulted is None:
        raise PoisonEvent(f"{card} is not in the vault")
    if vaulted["issuer_id"] != event.issuer_id or vaulted["pan_token"] != event.pan_token:
        raise PoisonEvent(f"{card}: issuer or pan_token differ from the vault's record")
    return not (vaulted["prepared"] or taken)


def _poison_of(card_id: UUID, exc: Exception) -> PoisonEvent:
    card = f"card {card_id}"
    if isinstance(exc, KeyNotFoundError):
        return PoisonEvent(f"{card}: key {exc} is in the inventory but not in the HSM")
    if isinstance(exc, ValueError | VaultError):
        return PoisonEvent(f"{card}: the vault record cannot be prepared: {exc}")
    return PoisonEvent(f"{card}: cannot make its PIN or CVV: {exc}")


async def prepare_ordered_cards(
    uow: UnitOfWork[KeymgmtRepository],
    ordered: Sequence[CardOrdered],
    hsm_of: Callable[[], Hsm],
    service_code: str,
    actor: str,
    cache: ConfigCache,
    sim_storage_label: str = "bureau/SIMKEK/1",
    kmc_label: str = "bureau/KMC/1",
) -> None:
    """Derive each card's MK-AC/SMI/SMC in the HSM (KCVs kept), issue PIN and CVVs when the
    product asks, emit card.prepared; cards of SIM products go to sim/preparation.py. A
    card.ordered for a card already prepared (another event id, or twice in the run)
    prepares nothing and emits nothing."""
    repo = uow.repo.emv
    vaulted_rows = await repo.vault_cards_to_prepare([e.card_id for e in ordered])
    todo: list[_Todo] = []
    sims: list[SimTodo] = []
    taken: set[UUID] = set()
    for event in ordered:
        vaulted = vaulted_rows.get(event.card_id)
        if vaulted is not None and vaulted["cancelled"]:
            log.info(
                "card cancelled by its issuer; not prepared", extra={"card_id": str(event.card_id)}
            )
            continue
        if await cache.is_sim(uow.repo.sim, event.issuer_id, event.product_id):
            if _to_prepare(event, vaulted, event.card_id in taken) and vaulted is not None:
                taken.add(event.card_id)
                sims.append(SimTodo(event, vaulted["masked_pan"]))
            continue
        item = await _checked(repo, event, vaulted, cache, event.card_id in taken)
        if item is None:
            log.warning(
                "card already prepared; nothing to do", extra={"card_id": str(event.card_id)}
            )
            continue
        taken.add(event.card_id)
        todo.append(item)
    if sims:
        await prepare_sim_cards(uow, sims, hsm_of, sim_storage_label, actor)
    if not todo:
        return
    hsm = hsm_of()  # HsmUnavailable is a ConnectionError: retried, never poison
    await _hold_incomplete_products(uow.repo, hsm, todo, cache, kmc_label)
    emv = await _emv_inputs(uow.repo, todo)
    results: list[CardData | Exception] = []
    for start in range(0, len(todo), PREP_CHUNK):
        chunk = todo[start : start + PREP_CHUNK]
        work = [(t.vaulted, t.imks, t.profile, emv.get(t.event.card_id)) for t in chunk]
        results += await hsm.call(prepare_cards_data, work, service_code)
    await _record_prepared(uow, todo, results, emv, actor)
    log.info("cards prepared", extra={"count": len(todo)})


async def _record_prepared(
    uow: UnitOfWork[KeymgmtRepository],
    todo: Sequence[_Todo],
    results: Sequence[CardData | Exception],
    emv: dict[UUID, EmvInputs],
    actor: str,
) -> None:
    """The run's rows (prepared cards, PINs, CVVs, offline PINs, ODA) and card.prepared."""
    rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
    oda_rows: list[dict[str, Any]] = []
    done: list[tuple[_Todo, Preparation]] = []
    for item, result in zip(todo, results, strict=True):
        if isinstance(result, Exception):
            raise _poison_of(item.event.card_id, result) from result
        rows.append(_rows_of(item, *result))
        done.append((item, result[0]))
        security = result[1]
        if security is not None and security.emv is not None:
            card_id, issuer = item.event.card_id, item.event.issuer_id
            oda_rows.append(oda_row(card_id, issuer, security.emv, emv.get(card_id)))
    await uow.repo.emv.record_preparations(rows, f"service:{actor}")
    offline = [extra["offline_pin"] for _, extra in rows if "offline_pin" in extra]
    await uow.repo.oda.put_offline_pins(offline)
    await uow.repo.oda.put_card_oda(oda_rows)
    draws = [(t.event.card_id, t.event.issuer_id, emv.get(t.event.card_id)) for t in todo]
    await emit_draws(
        uow,
        [(c, i, e.pool_id, e.icc.modulus) for c, i, e in draws if e and e.icc and e.pool_id],
        actor,
    )
    for item, prep in done:
        event = item.event
        await uow.emit(
            CardPrepared(
                issuer_id=event.issuer_id,
                actor=actor,
                card_id=event.card_id,
                batch_id=event.batch_id,
                product_id=event.product_id,
                masked_pan=item.vaulted["masked_pan"],
                application="emv",
                key_scheme=prep.key_scheme,
                trace=event.trace,
            )
        )


def _rows_of(
    item: _Todo, prep: Preparation, security: CardSecurity | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    event = item.event
    emv = None if item.profile is None else item.profile.emv
    prepared: dict[str, Any] = {
        "card_id": event.card_id,
        "issuer_id": event.issuer_id,
        "batch_id": event.batch_id,
        "order_id": event.order_id,
        "product_id": event.product_id,
        "masked_pan": item.vaulted["masked_pan"],
        "key_scheme": prep.key_scheme,
        "dgis": list(PREPARED_DGIS) if emv is None else dgi_names(emv),
        "mk_ac_kcv": prep.mk_kcvs[0],
        "mk_smi_kcv": prep.mk_kcvs[1],
        "mk_smc_kcv": prep.mk_kcvs[2],
        "source_event_id": event.event_id,
    }
    extra = {} if security is None else security_rows(event.card_id, event.issuer_id, security)
    return prepared, extra
