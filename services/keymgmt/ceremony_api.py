"""Key ceremonies through the HTTP API, beside the custodians' CLI (cli.py), and bureau-owned
keys generated inside the HSM on a custodian's request.

A ceremony is opened by a custodian or admin; each component is then submitted by an
authenticated custodian principal (the token names the person: nobody types a name), the
same principal twice is refused, and the key is combined when the last component arrives.
Every step (open, each component, combine, refusal, abort) is a ceremony_steps row through
the same KeyCeremony primitive the CLI uses, so a refused or aborted ceremony leaves no key
and a record.

Open ceremonies live in this process (their checked components are bytearrays, zeroed on
refusal, abort, expiry and combination: the SoftHSM shortcut of ceremony.py). Custodians of
one ceremony therefore talk to one keymgmt replica; one that is idle for CEREMONY_TTL is
refused as expired on its next request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from services.keymgmt.bureau_keys import ensure_generated_key
from services.keymgmt.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.cli import CeremonyRefused, CeremonySpec, KeyCeremony
from services.keymgmt.hsm import BureauKeyKind, HsmError, key_label
from services.keymgmt.kcv import KcvMethod
from services.keymgmt.repository import KeymgmtRepository
from shared.auth import Principal, require

router = APIRouter(prefix="/v1", tags=["keys"])
Conductor = Annotated[Principal, Depends(require("custodian", "admin"))]
Custodian = Annotated[Principal, Depends(require("custodian"))]
CEREMONY_TTL = 900.0  # seconds a ceremony may wait for its next custodian


class CeremonyOpen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    usage_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", examples=["IMK-AC"])
    version: int = Field(default=1, ge=1)
    key_type: CeremonyKeyType
    usage: KeyUsage
    components: int = Field(ge=2, le=3)
    expected_kcv: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{6}$")


class ComponentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    component: str = Field(repr=False, description="hex; never logged or stored")
    kcv: str = Field(pattern=r"^[0-9A-Fa-f ]{6,8}$", description="from the component form")
    kcv_method: KcvMethod | None = Field(default=None, description="AES only; default CMAC")


class GenerateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(default="bureau", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    kind: BureauKeyKind
    version: int = Field(default=1, ge=1)


class ApiCeremony(KeyCeremony):
    """The CLI's ceremony, plus what the API needs: components so far, abort and expiry."""

    @property
    def received(self) -> int:
        return len(self._components)

    async def stop(self, step: str, who: str | None, reason: str) -> None:
        """Refuse the ceremony now (zeroes the components, records the step and outcome)."""
        try:
            await self._refuse(step, who, reason)
        except CeremonyRefused:
            pass


@dataclass
class OpenCeremony:
    ceremony: ApiCeremony
    touched: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _registry(request: Request) -> dict[UUID, OpenCeremony]:
    state = request.app.state
    if not hasattr(state, "open_ceremonies"):
        state.open_ceremonies = {}
    registry: dict[UUID, OpenCeremony] = state.open_ceremonies
    return registry


def _who(p: Principal) -> str:
    return f"{p.role}:{p.name}"


@router.post("/ceremonies", summary="Open a key ceremony (custodian or admin)")
async def open_ceremony(body: CeremonyOpen, who: Conductor, request: Request) -> Any:
    runtime = request.app.state.runtime
    label = key_label(body.issuer_id, body.usage_name, body.version)
    spec = CeremonySpec(
        label,
        body.issuer_id,
        body.key_type,
        body.usage,
        body.components,
        _who(who),
        body.expected_kcv,
    )
    ceremony = ApiCeremony(runtime.engine, runtime.gate.get(), spec)
    try:
        await ceremony.open()
    except CeremonyRefused as exc:
        raise HTTPException(409, f"ceremony {ceremony.ceremony_id} refused: {exc}") from exc
    _registry(request)[ceremony.ceremony_id] = OpenCeremony(ceremony)
    return {"ceremony_id": str(ceremony.ceremony_id), "label": label, "state": "open"}


async def _take(request: Request, ceremony_id: UUID) -> OpenCeremony:
    entry = _registry(request).get(ceremony_id)
    if entry is None:
        raise HTTPException(404, "no open ceremony with this id in this keymgmt process")
    if time.monotonic() - entry.touched > CEREMONY_TTL:
        _registry(request).pop(ceremony_id, None)
        await entry.ceremony.stop("expire", None, "expired waiting for a custodian")
        raise HTTPException(409, "the ceremony expired waiting for a custodian")
    entry.touched = time.monotonic()
    return entry


@router.post("/ceremonies/{ceremony_id}/components", summary="A custodian's component")
async def submit_component(
    ceremony_id: UUID, body: ComponentIn, who: Custodian, request: Request
) -> Any:
    entry = await _take(request, ceremony_id)
    ceremony, spec = entry.ceremony, entry.ceremony.spec
    async with entry.lock:
        try:
            await ceremony.add_component(_who(who), body.component, body.kcv, body.kcv_method)
            received = ceremony.received
            if received < spec.components:
                return {"ceremony_id": str(ceremony_id), "state": "open", "received": received}
            result = await ceremony.complete()
        except CeremonyRefused as exc:
            _registry(request).pop(ceremony_id, None)
            raise HTTPException(409, f"ceremony refused: {exc}") from exc
    _registry(request).pop(ceremony_id, None)
    return {
        "ceremony_id": str(ceremony_id),
        "state": "completed",
        "label": result.label,
        "kcvs": [{"kcv": k.value, "method": k.method.value} for k in result.kcvs],
        "custodians": list(result.custodians),
    }


@router.post("/ceremonies/{ceremony_id}/abort", summary="Abort: no key, and on record")
async def abort_ceremony(ceremony_id: UUID, who: Conductor, request: Request) -> Any:
    entry = await _take(request, ceremony_id)
    async with entry.lock:
        _registry(request).pop(ceremony_id, None)
        await entry.ceremony.stop("abort", _who(who), f"aborted by {_who(who)}")
    return {"ceremony_id": str(ceremony_id), "state": "refused", "reason": "aborted"}


@router.post("/bureau-keys", summary="Generate a bureau-owned key inside the HSM")
async def generate_key(body: GenerateKey, who: Conductor, request: Request) -> Any:
    runtime = request.app.state.runtime
    label = key_label(body.owner, body.kind.value, body.version)
    async with runtime.engine.begin() as conn:
        if await KeymgmtRepository(conn).key(label) is not None:
            raise HTTPException(409, f"{label} already exists")
        try:
            row = await ensure_generated_key(conn, runtime.gate.get(), label, body.kind, _who(who))
        except HsmError as exc:
            raise HTTPException(409, str(exc)) from exc
    return row
