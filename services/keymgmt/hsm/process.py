"""The process' one open Hsm per PKCS#11 module and token, shared by the service runtime and an
in-process ceremony (the demo driver, tests)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.keymgmt.hsm.mechanisms import MechanismInventory, require_hsm_paths, survey
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.settings import KeymgmtSettings


@dataclass
class _SharedHsm:
    hsm: Hsm
    users: int = 0


_OPEN: dict[tuple[str, str], _SharedHsm] = {}


@contextlib.asynccontextmanager
async def process_hsm(settings: KeymgmtSettings) -> AsyncIterator[Hsm]:
    """The process' one open Hsm for the configured module and token.

    A PKCS#11 module is initialised once per process (C_Initialize) and SoftHSM is not
    thread-safe (INFRA.md), so every user in one process (the service runtime, an in-process
    ceremony of the demo driver) shares one Hsm and its single worker thread. The last user
    to leave closes the session.
    """
    key = (settings.pkcs11_module, settings.hsm_token)
    entry = _OPEN.get(key)
    if entry is None:
        entry = _OPEN[key] = _SharedHsm(settings.make_hsm())
    entry.users += 1
    try:
        await entry.hsm.start()  # idempotent; serialised on the HSM worker
        yield entry.hsm
    finally:
        entry.users -= 1
        if entry.users == 0:
            if _OPEN.get(key) is entry:
                del _OPEN[key]
            await entry.hsm.aclose()


async def survey_mechanisms(hsm: Hsm, settings: KeymgmtSettings) -> MechanismInventory:
    """The token's mechanism inventory (hsm/mechanisms.py); in production, ProductionRefused
    names every operation the HSM cannot run."""
    inventory = await hsm.call(survey, settings.hsm_key_xor_mechanism)
    if settings.hsm_only:
        require_hsm_paths(inventory, settings.environment)
    return inventory


async def production_check(settings: KeymgmtSettings) -> MechanismInventory | None:
    """At process start: in production, open the token and refuse (ProductionRefused) unless
    every secret-handling operation runs inside it; dev/test skip this (the keeper records the
    fallbacks once its session is open)."""
    if not settings.hsm_only:
        return None
    async with process_hsm(settings) as hsm:
        return await survey_mechanisms(hsm, settings)
