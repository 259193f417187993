"""Key endpoints: the key inventory (issuers see their own keys), key ceremonies through the API
beside the custodians' CLI, and bureau-owned keys generated in the HSM (the audit log's
checkpoint signing is signing_api.py).

A ceremony is opened by a custodian or admin, optionally naming its custodians (one per
component, in order); each component is then submitted by an authenticated custodian principal
(the token names the person: nobody types a name). The same principal twice refuses the
ceremony (409 same-principal-twice); a custodian the ceremony did not name for the next
component is refused (403 not-your-component, recorded) and the ceremony waits for the named
one. The key is combined when the last component arrives.
Components travel wrapped under the key-exchange key (GET /v1/ceremony-kek; RSA-OAEP, unwrapped
in the HSM: keys/ceremony_kek.py); a clear component is accepted in dev/test only, and in
production it is refused (403) together with its ceremony.
Every step (open, each component, combine, refusal, abort) is a ceremony_steps row through
the same KeyCeremony the CLI uses, so a refused or aborted ceremony leaves no key and a record.
Open ceremonies live in this process (ceremonies.OpenCeremonies); one that is idle for
CEREMONY_TTL is refused as expired on its next request.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, NoReturn
from uuid import UUID

from fastapi import APIRouter, Depends

from services.keymgmt.deps import (
    Auditors,
    Conductor,
    KeymgmtDepsDep,
    KeyReader,
    who_of,
)
from services.keymgmt.hsm.session import HsmError, key_label
from services.keymgmt.keys.ceremonies import (
    CLEAR_REFUSED,
    CeremonyPolicy,
    CeremonyRefused,
    CeremonySpec,
    KeyCeremony,
    NotThisCustodiansStep,
    SameCustodianTwice,
)
from services.keymgmt.keys.ceremony_kek import KEK_ALGORITHM
from services.keymgmt.keys.kek_inventory import ensure_kek_recorded
from services.keymgmt.keys.open_ceremonies import CEREMONY_TTL, OpenCeremonies, OpenCeremony
from services.keymgmt.keys.schemas import (
    CeremonyNotOpen,
    CeremonyOpen,
    CeremonyStopped,
    ClearComponentRefused,
    ComponentIn,
    CustodianTwiceRefused,
    GenerateKey,
    KeyExists,
    KeyInUse,
    KeyNotActive,
    NoSuchKey,
    NotACustodian,
    NotYourComponent,
)
from services.keymgmt.keys.service import ensure_generated_key
from services.keymgmt.keys.signing import key_id, pem
from shared.auth import Principal, require
from shared.service import RuntimeDep

router = APIRouter(prefix="/v1")
# Who may try a component: the bureau staff keymgmt verifies anyway (deploy/k8s/make_secrets.py;
# stations stay off this route: the floor ingress passes the routes stations use). Only a
# custodian's component is taken; the others' attempts are refused and recorded (wrong-role).
ComponentAttempt = Annotated[Principal, Depends(require("custodian", "admin", "auditor"))]


# -- the key inventory ---------------------------------------------------------------------------
@router.get("/keys", tags=["keys"], summary="Key inventory (issuers see their own keys)")
async def list_keys(who: KeyReader, runtime: RuntimeDep, issuer_id: str | None = None) -> Any:
    if who.role == "issuer":
        if issuer_id not in (None, who.issuer_id):
            raise NoSuchKey("no such issuer")
        issuer_id = who.issuer_id
    async with runtime.unit_of_work() as uow:
        return {"keys": await uow.repo.keys.keys(issuer_id)}


@router.get("/keys/{label:path}", tags=["keys"])
async def get_key(label: str, who: KeyReader, runtime: RuntimeDep) -> Any:
    async with runtime.unit_of_work() as uow:
        key = await uow.repo.keys.key(label)
    if key is None or (who.role == "issuer" and who.issuer_id != key["issuer_id"]):
        raise NoSuchKey("no such key")
    return key


@router.post("/keys/{label:path}/retire", tags=["keys"])
async def retire_key(label: str, who: Conductor, runtime: RuntimeDep, deps: KeymgmtDepsDep) -> Any:
    settings = deps.settings
    if label in (settings.vault_key_label, settings.pan_hash_key_label):
        raise KeyInUse("the vault keys in use cannot be retired; rotate first")
    async with runtime.unit_of_work() as uow:
        if await uow.repo.keys.key(label) is None:
            raise NoSuchKey("no such key")
        if not await uow.repo.keys.retire_key(label, who_of(who)):
            raise KeyNotActive("the key is not active")
        return await uow.repo.keys.key(label)


@router.get("/ceremonies", tags=["keys"], summary="Key ceremonies and their steps")
async def ceremonies(_: Auditors, runtime: RuntimeDep, label: str | None = None) -> Any:
    async with runtime.unit_of_work() as uow:
        return {"ceremonies": await uow.repo.keys.ceremonies(label)}


# -- key ceremonies ------------------------------------------------------------------------------
@router.get(
    "/ceremony-kek", tags=["keys"], summary="The key-exchange key components are wrapped under"
)
async def ceremony_kek(who: KeyReader, runtime: RuntimeDep, deps: KeymgmtDepsDep) -> dict[str, Any]:
    label = deps.settings.ceremony_kek_label
    async with runtime.unit_of_work() as uow:
        der = await ensure_kek_recorded(uow.repo.keys, deps.hsm(), label, who_of(who))
    return {
        "label": label,
        "key_id": key_id(der),
        "algorithm": KEK_ALGORITHM,
        "public_key_pem": pem(der),
    }


@router.post("/ceremonies", tags=["keys"], summary="Open a key ceremony (custodian or admin)")
async def open_ceremony(
    body: CeremonyOpen, who: Conductor, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    label = key_label(body.issuer_id, body.usage_name, body.version)
    spec = CeremonySpec(
        label,
        body.issuer_id,
        body.key_type,
        body.usage,
        body.components,
        who_of(who),
        body.expected_kcv,
        tuple(f"custodian:{name}" for name in body.custodians),
    )
    policy = CeremonyPolicy.of(deps.settings, deps.gate.inventory)
    ceremony = KeyCeremony(runtime.engine, deps.hsm(), spec, policy)
    try:
        await ceremony.open()
    except CeremonyRefused as exc:
        raise CeremonyStopped(f"ceremony {ceremony.ceremony_id} refused: {exc}") from exc
    deps.ceremonies[ceremony.ceremony_id] = OpenCeremony(ceremony)
    return {"ceremony_id": str(ceremony.ceremony_id), "label": label, "state": "open"}


async def _take(registry: OpenCeremonies, ceremony_id: UUID) -> OpenCeremony:
    entry = registry.get(ceremony_id)
    if entry is None:
        raise CeremonyNotOpen("no open ceremony with this id in this keymgmt process")
    if time.monotonic() - entry.touched > CEREMONY_TTL:
        registry.pop(ceremony_id, None)
        await entry.ceremony.stop("expire", None, "expired waiting for a custodian")
        raise CeremonyStopped("the ceremony expired waiting for a custodian")
    entry.touched = time.monotonic()
    return entry


async def _refuse_clear(registry: OpenCeremonies, ceremony_id: UUID, who: str) -> NoReturn:
    """Production: a clear component is refused, and the ceremony it was meant for (if any) is
    refused with it: the component was exposed, so it must not be used."""
    entry = registry.pop(ceremony_id, None)
    if entry is not None:
        async with entry.lock:
            await entry.ceremony.stop("component", who, CLEAR_REFUSED)
    raise ClearComponentRefused(CLEAR_REFUSED)


async def _refuse_role(registry: OpenCeremonies, ceremony_id: UUID, who: str) -> NoReturn:
    """A component from a principal who is no custodian: a refused attempt, on record (and in
    audit's log); the ceremony stays open for its custodians."""
    why = f"{who} is not a custodian: only custodians hold components"
    entry = await _take(registry, ceremony_id)
    async with entry.lock:
        await entry.ceremony.refuse_attempt(who, why)
    raise NotACustodian(why)


@router.post("/ceremonies/{ceremony_id}/components", tags=["keys"], summary="A component")
async def submit_component(
    ceremony_id: UUID,
    body: ComponentIn,
    who: ComponentAttempt,
    deps: KeymgmtDepsDep,
) -> Any:
    if who.role != "custodian":  # before anything reads the component
        await _refuse_role(deps.ceremonies, ceremony_id, who_of(who))
    if body.component is not None and deps.settings.hsm_only:
        await _refuse_clear(deps.ceremonies, ceremony_id, who_of(who))
    entry = await _take(deps.ceremonies, ceremony_id)
    ceremony, spec = entry.ceremony, entry.ceremony.spec
    async with entry.lock:
        try:
            if body.component is not None:  # clear: dev/test only (the ceremony refuses it)
                await ceremony.add_component(who_of(who), body.component, body.kcv, body.kcv_method)
            else:
                wrapped = body.wrapped_bytes()
                await ceremony.add_wrapped_component(
                    who_of(who), wrapped, body.kcv, body.kcv_method
                )
            received = ceremony.received
            if received < spec.components:
                return {"ceremony_id": str(ceremony_id), "state": "open", "received": received}
            result = await ceremony.complete()
        except NotThisCustodiansStep as exc:
            raise NotYourComponent(str(exc)) from exc  # recorded; the ceremony stays open
        except SameCustodianTwice as exc:
            deps.ceremonies.pop(ceremony_id, None)
            raise CustodianTwiceRefused(f"ceremony refused: {exc}") from exc
        except CeremonyRefused as exc:
            deps.ceremonies.pop(ceremony_id, None)
            raise CeremonyStopped(f"ceremony refused: {exc}") from exc
    deps.ceremonies.pop(ceremony_id, None)
    return {
        "ceremony_id": str(ceremony_id),
        "state": "completed",
        "label": result.label,
        "kcvs": [{"kcv": k.value, "method": k.method.value} for k in result.kcvs],
        "custodians": list(result.custodians),
    }


@router.post("/ceremonies/{ceremony_id}/abort", tags=["keys"], summary="Abort: no key, on record")
async def abort_ceremony(ceremony_id: UUID, who: Conductor, deps: KeymgmtDepsDep) -> Any:
    entry = await _take(deps.ceremonies, ceremony_id)
    async with entry.lock:
        deps.ceremonies.pop(ceremony_id, None)
        await entry.ceremony.stop("abort", who_of(who), f"aborted by {who_of(who)}")
    return {"ceremony_id": str(ceremony_id), "state": "refused", "reason": "aborted"}


@router.post("/bureau-keys", tags=["keys"], summary="Generate a bureau-owned key inside the HSM")
async def generate_key(
    body: GenerateKey, who: Conductor, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    label = key_label(body.owner, body.kind.value, body.version)
    async with runtime.unit_of_work() as uow:
        if await uow.repo.keys.key(label) is not None:
            raise KeyExists(f"{label} already exists")
        try:
            return await ensure_generated_key(
                uow.repo.keys, deps.hsm(), label, body.kind, who_of(who)
            )
        except HsmError as exc:
            raise KeyExists(str(exc)) from exc
