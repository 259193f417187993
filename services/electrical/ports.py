"""What the station agent needs from the world around it, and what it tells about a reader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.keymgmt.contract import Refusal, SecureScript, SecureScriptRequest
from shared.keymgmt.errors import KeymgmtRefused


class ScriptSource(Protocol):
    """keymgmt's side of perso (shared/keymgmt/client.py): the card's protected script.

    Waits out any outage of keymgmt (the card stays assigned in its reader meanwhile); a 4xx is
    keymgmt's verdict on the card (KeymgmtRefused, its refusal code telling a cancelled card
    and a chip with other keys apart); an answer outside the contract is KeymgmtBadResponse.
    """

    async def secure_script(self, request: SecureScriptRequest) -> SecureScript: ...


def refusal_reason(refused: KeymgmtRefused) -> str:
    """Why the card is spoiled, as its card.spoiled event says (no card data)."""
    if refused.refusal is Refusal.CARD_CRYPTOGRAM_MISMATCH:
        return "card cryptogram mismatch: the chip does not hold our keys"
    return f"keymgmt refused the script: HTTP {refused.status} {refused.detail}"


class Transport(Protocol):
    async def eject(self, reader: str) -> str | None: ...


@dataclass
class ReaderActivity:
    """What one reader is doing, for /ready and for tests."""

    reader: str
    activity: str = "starting"
    encoded: int = 0
    spoiled: int = 0
    chips_rejected: int = 0
    identify_failures: int = 0  # in a row, on the chip now in the reader
    busy_s: float = 0.0  # time spent on encoded cards, from claim to commit
    last_problem: str | None = None
    last_ejected: str | None = None
