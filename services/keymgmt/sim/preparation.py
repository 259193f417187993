"""Data preparation of SIM products (card.ordered for an (issuer, product) that has a SIM
product, api.py): the consumer's batch handler (emv/preparation.py) hands each run's SIM cards
here, inside the run's transaction.

Per run and product: serials reserved under the product's row lock (ICCID with its Luhn digit
and IMSI from the issuer's ranges, secrets.py), the bureau SIM storage key made when absent, and
in ONE HSM-worker call each Ki generated in the HSM, its OPc computed from the operator's OP
(TS 35.206), both wrapped under the storage key and under the operator's transport key
(secrets.generate_sim_secrets). The SIMs join the intake batch's row in sim_batches (so
`GET /v1/sim/batches/{batch_id}/output-file` is the operator's file of that batch) and each
card gets a prepared_cards row (key scheme MILENAGE, no EMV master keys) and card.prepared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.keymgmt.hsm.session import BureauKeyKind, Hsm, HsmError, KeyNotFoundError
from services.keymgmt.keys.service import ensure_generated_key
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.sim.credentials import (
    SimCredentials,
    credential_columns,
    make_batch_credentials,
)
from services.keymgmt.sim.profile import profile_json, profile_of
from services.keymgmt.sim.secrets import SimSecrets, make_iccid, make_imsi
from services.keymgmt.sim.service import make_batch, op_context, transport_key_problem
from services.keymgmt.vault.crypto import VaultError
from shared.events import CardOrdered, CardPrepared
from shared.handlers import PoisonEvent
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)

SIM_KEY_SCHEME = "MILENAGE"
# EF.ICCID, EF.IMSI, EF.AD, the profile's files, Ki || OPc, the PIN block (sim/perso.py)
SIM_DGIS = ("0201", "0202", "0203", "0205", "0206", "0207", "0208", "8101", "8102")


@dataclass(frozen=True)
class SimTodo:
    event: CardOrdered
    masked_pan: str


async def prepare_sim_cards(
    uow: UnitOfWork[KeymgmtRepository],
    cards: Sequence[SimTodo],
    hsm_of: Callable[[], Hsm],
    storage_label: str,
    actor: str,
) -> None:
    """SIM secrets and identities for the run's SIM cards, grouped by (issuer, product)."""
    groups: dict[tuple[str, str], list[SimTodo]] = {}
    for todo in cards:
        groups.setdefault((todo.event.issuer_id, todo.event.product_id), []).append(todo)
    hsm = hsm_of()  # HsmUnavailable is a ConnectionError: retried, never poison
    for (issuer_id, product_id), group in groups.items():
        await _prepare_group(uow, hsm, issuer_id, product_id, group, storage_label, actor)


async def _transport_row(repo: KeymgmtRepository, label: str, issuer_id: str) -> dict[str, Any]:
    row = await repo.keys.key(label)
    problem = transport_key_problem(row, label, issuer_id)
    if problem is not None or row is None:
        raise PoisonEvent(f"SIM transport key: {problem}")
    return row


async def _make_secrets(
    uow: UnitOfWork[KeymgmtRepository],
    hsm: Hsm,
    issuer_id: str,
    product_id: str,
    count: int,
    storage: str,
    actor: str,
) -> tuple[dict[str, Any], dict[str, Any], int, list[tuple[SimSecrets, SimCredentials]]]:
    """The product, its transport key's row, the first serial reserved, and `count` Ki/OPc
    pairs made in the HSM; PoisonEvent names what cannot be used."""
    sims = uow.repo.sim
    product = await sims.product(issuer_id, product_id)
    if product is None:  # removed since the cache saw it
        raise PoisonEvent(f"SIM product {issuer_id}/{product_id} is gone")
    transport = product["transport_key_label"]
    tkey = await _transport_row(uow.repo, transport, issuer_id)
    try:
        await ensure_generated_key(uow.repo.keys, hsm, storage, BureauKeyKind.SIM_KEK_AES256, actor)
    except HsmError as exc:
        raise PoisonEvent(f"SIM storage key: {exc}") from exc
    first = await sims.take_serials(issuer_id, product_id, count)
    if first is None:
        raise PoisonEvent(f"the ICCID/IMSI range of SIM product {product_id} is exhausted")
    context = op_context(issuer_id, product_id)
    profile = profile_of(product)
    try:
        secrets = await hsm.call(
            make_batch, bytes(product["op_sealed"]), context, storage, transport, count
        )
        credentials = await hsm.call(
            make_batch_credentials, storage, transport, count, profile.pin1_enabled, profile.ota
        )
    except (KeyNotFoundError, VaultError) as exc:
        raise PoisonEvent(f"SIM product {product_id}: {exc.__class__.__name__}: {exc}") from exc
    return product, tkey, first, list(zip(secrets, credentials, strict=True))


async def _prepare_group(
    uow: UnitOfWork[KeymgmtRepository],
    hsm: Hsm,
    issuer_id: str,
    product_id: str,
    group: list[SimTodo],
    storage: str,
    actor: str,
) -> None:
    sims = uow.repo.sim
    product, tkey, first, secrets = await _make_secrets(
        uow, hsm, issuer_id, product_id, len(group), storage, actor
    )
    transport = product["transport_key_label"]
    ids = [
        (make_iccid(product["iccid_prefix"], s, product["iccid_length"]),
         make_imsi(product["imsi_prefix"], s))
        for s in range(first, first + len(group))
    ]  # fmt: skip
    rows: list[dict[str, Any]] = []
    prepared: list[dict[str, Any]] = []
    for todo, (iccid, imsi), (sec, cred) in zip(group, ids, secrets, strict=True):
        event = todo.event
        common = {"issuer_id": issuer_id, "product_id": product_id, "card_id": event.card_id}
        rows.append(
            common
            | {"iccid": iccid, "imsi": imsi, "batch_id": event.batch_id}
            | {"storage_key_label": storage, "ki_stored": sec.ki_stored}
            | {"opc_stored": sec.opc_stored, "transport_key_label": transport}
            | {"ki_transport": sec.ki_transport, "opc_transport": sec.opc_transport}
            | credential_columns(cred)
        )
        prepared.append(
            common
            | {"batch_id": event.batch_id, "order_id": event.order_id}
            | {"masked_pan": todo.masked_pan, "key_scheme": SIM_KEY_SCHEME}
            | {"dgis": list(SIM_DGIS), "source_event_id": event.event_id}
        )
    batch_ids = {todo.event.batch_id for todo in group}
    for batch_id in batch_ids:
        mine = [r for r in rows if r["batch_id"] == batch_id]
        batch = {
            "batch_id": batch_id,
            "issuer_id": issuer_id,
            "product_id": product_id,
            "count": len(mine),
            "first_iccid": min(str(r["iccid"]) for r in mine),
            "last_iccid": max(str(r["iccid"]) for r in mine),
            "transport_key_label": transport,
            "transport_kcv": f"{tkey['kcv']} ({tkey['kcv_method']})",
            "created_by": f"service:{actor}",
            "profile": profile_json(profile_of(product)),
        }
        await sims.add_ordered_sims(batch, mine, [p for p in prepared if p["batch_id"] == batch_id])
    await _emit_prepared(uow, group, issuer_id, product_id, actor)
    log.info("SIMs prepared", extra={"count": len(group), "product_id": product_id})


async def _emit_prepared(
    uow: UnitOfWork[KeymgmtRepository],
    group: list[SimTodo],
    issuer_id: str,
    product_id: str,
    actor: str,
) -> None:
    for todo in group:
        event = todo.event
        await uow.emit(
            CardPrepared(
                issuer_id=issuer_id,
                actor=actor,
                card_id=event.card_id,
                batch_id=event.batch_id,
                product_id=product_id,
                masked_pan=todo.masked_pan,
                application="usim",
                key_scheme=SIM_KEY_SCHEME,
                trace=event.trace,
            )
        )
