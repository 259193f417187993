"""Where the HSM keeper (keys/keeper.py) puts the open session for handlers and endpoints, and
the readiness check that asks it for a sign of life."""

from __future__ import annotations

import asyncio
from typing import Any

from services.keymgmt.hsm.mechanisms import MechanismInventory
from services.keymgmt.hsm.session import Hsm
from shared.errors import Unavailable


class HsmUnavailable(Unavailable, ConnectionError):
    """The HSM session is not open (yet): endpoints answer 503, and, being a ConnectionError,
    the consumer retries the event instead of dead-lettering it."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"HSM unavailable: {problem}")
        self.problem = problem


class HsmGate:
    """The open session, or why there is none."""

    def __init__(self) -> None:
        self.hsm: Hsm | None = None
        self.problem = "HSM session not opened yet"
        self.inventory: MechanismInventory | None = None  # what runs in the HSM, once surveyed

    def get(self) -> Hsm:
        if self.hsm is None:
            raise HsmUnavailable(self.problem)
        return self.hsm


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


class HsmReadiness:
    """A readiness check (shared.service.ReadinessCheck): not ready while the HSM session is
    unusable; its details name, per secret-handling operation, whether it runs in the HSM or
    in keymgmt's dev/test fallback (hsm/mechanisms.py)."""

    def __init__(self, gate: HsmGate, timeout: float) -> None:
        self.gate, self.timeout = gate, timeout

    async def __call__(self, report: dict[str, Any]) -> None:
        inventory = self.gate.inventory
        if inventory is not None:
            report["hsm"] = {"operations": inventory.report()}
        problem = await hsm_problem(self.gate, self.timeout)
        if problem:
            report["problems"].append(f"hsm: {problem}")
