"""A key ceremony's record: each step is a `ceremony_steps` row (who, when, outcome; never a
component) and, in the same transaction, a `control.recorded` event (shared/events/control.py)
that audit appends to its hash-chained log, so auditors see every ceremony step (opened, each
custodian's component with its KCV, refused steps, combined, aborted, expired) with the
principal who took it. The event names principals and key check values, never key material.

The policy a ceremony runs under (where components may be combined, the topic its steps go to)
is here too: the API and the CLI build it from the service's settings (CeremonyPolicy.of).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.keymgmt.hsm.mechanisms import HsmOperation, MechanismInventory
from services.keymgmt.keys.repository import KeysRepository
from services.keymgmt.settings import KeymgmtSettings
from shared.events import ControlRecorded
from shared.outbox import UnitOfWork

if TYPE_CHECKING:  # only annotations: ceremonies.py imports this module
    from services.keymgmt.keys.ceremonies import CeremonySpec

ACTOR = "keymgmt"  # the actor of the ceremony's own steps (combine, expire)


@dataclass(frozen=True)
class CeremonyPolicy:
    """Where components may be combined. ``hsm_only`` (production): a clear component is
    refused, and wrapped ones are combined only inside the HSM. ``xor_mechanism``: the
    token's vendor XOR-of-keys mechanism, None when it has none (the dev/test fallback).
    ``control_topic``: keymgmt's topic, where each step goes to audit's log; the API and the
    CLI's `import` always set it (CeremonyPolicy.of). None only for the demo driver
    (run_demo_ceremony, load_demo_keys): the public TEST keys, refused outside dev/test, whose
    steps stay in ceremony_steps and off the services' topics the tests read."""

    hsm_only: bool = False
    kek_label: str = "bureau/CEREMONYKEK/1"
    xor_mechanism: int | None = None
    control_topic: str | None = None

    @classmethod
    def of(cls, settings: KeymgmtSettings, inventory: MechanismInventory | None) -> CeremonyPolicy:
        in_hsm = inventory is not None and inventory.in_hsm(HsmOperation.CEREMONY_COMBINE)
        xor = settings.hsm_key_xor_mechanism if in_hsm else None
        return cls(settings.hsm_only, settings.ceremony_kek_label, xor, settings.topic(ACTOR))


@dataclass(frozen=True)
class CeremonyStep:
    """One step as recorded. `finish`: the ceremony's outcome this step gives it (`completed`
    or `refused`), written in the same transaction; None while the ceremony stays open."""

    name: str
    custodian: str | None
    outcome: str  # ok | refused
    detail: str
    kcv: str | None = None
    finish: str | None = None


def control_event(ceremony_id: UUID, spec: CeremonySpec, step: CeremonyStep) -> ControlRecorded:
    """The step as audit logs it: the custodian (or None for keymgmt's own step), the
    ceremony's opener, the KCV of a component or of the combined key; a refusal's reason."""
    refused = step.outcome != "ok"
    # The opener takes the open step (ceremony_steps keeps custodians only in its column).
    who = step.custodian or (spec.conducted_by if step.name == "open" else None)
    return ControlRecorded(
        issuer_id=spec.issuer_id,
        actor=who or ACTOR,
        act="key-ceremony",
        subject_id=ceremony_id,
        subject=f"{spec.label}: {spec.key_type} {spec.usage} from {spec.components} components",
        step=step.name[:40],
        outcome="refused" if refused else "ok",
        principal=who,
        started_by=spec.conducted_by,
        reason=step.detail[:500] if refused else None,
        kcv=step.kcv,
        final=step.finish is not None,
    )


async def record_step(
    conn: AsyncConnection,
    ceremony_id: UUID,
    spec: CeremonySpec,
    policy: CeremonyPolicy,
    step: CeremonyStep,
) -> None:
    """The step's row, the ceremony's outcome when the step ends it, and the step's event for
    audit, all in `conn`'s transaction (the caller's)."""
    repo = KeysRepository(conn)
    await repo.add_step(ceremony_id, step.name, step.custodian, step.outcome, step.detail)
    if step.finish is not None:
        reason = None if step.finish == "completed" else step.detail
        await repo.finish_ceremony(ceremony_id, step.finish, reason)
    if policy.control_topic is None:
        return
    # The outbox of the schema the ceremony's engine works in (the service's, or --schema's).
    schema = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
    outbox: UnitOfWork[None] = UnitOfWork(conn, str(schema), policy.control_topic)
    await outbox.emit(control_event(ceremony_id, spec, step))
