"""The station's door to keymgmt: the SCP03-protected personalisation script for one card and
chip (POST /v1/perso/secure-scripts, docs/services.md, docs/perso-protocol.md), called as the
station principal with what the station read from the card: its chip serial, the host challenge
it sent and the card's INITIALIZE UPDATE answer. Nothing secret reaches the station.

keymgmt being away (network, 5xx, refused credentials) is retried with capped exponential
backoff for as long as it takes: the card stays assigned in its reader and is never marked
encoded meanwhile. Any other 4xx is keymgmt's verdict on this card (KeymgmtRefused); a card
cryptogram mismatch (the chip holds other keys) is ChipRejected: that chip takes no card.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.pan import redact_pans

log = logging.getLogger(__name__)


class KeymgmtRefused(Exception):
    """keymgmt answered, and will not give this card a script (the reason has no card data)."""


class ChipRejected(KeymgmtRefused):
    """keymgmt refused the chip itself: it failed to prove it holds this bureau's keys."""


class CardCancelled(KeymgmtRefused):
    """keymgmt refused the card: its issuer cancelled it. The chip was not touched."""


# docs/perso-protocol.md: keymgmt marks a refusal of the chip (or the card) with this header.
REFUSAL_HEADER = "X-Bureau-Refusal"
CRYPTOGRAM_MISMATCH = "card-cryptogram-mismatch"
CARD_CANCELLED = "card-cancelled"


class KeymgmtBadResponse(KeymgmtRefused):
    """keymgmt answered 200 with something that is not the contract."""


class _ScriptResponse(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    card_id: UUID
    chip_serial: str = Field(pattern=r"^[0-9A-Fa-f]{12}$")
    security_level: str = Field(pattern=r"^0[13]$")
    apdus: list[str] = Field(min_length=2)


@dataclass(frozen=True)
class PersoScript:
    """EXTERNAL AUTHENTICATE then the protected commands, to send in order."""

    card_id: UUID
    chip_serial: str
    apdus: tuple[bytes, ...]
    security_level: int = 0x03


@dataclass
class RetryState:
    """How an outage looks from the station (readiness and tests read it)."""

    failures: int = 0
    last_problem: str = ""


class KeymgmtClient:
    def __init__(
        self,
        base_url: str,
        station_token: str,
        *,
        timeout_s: float = 5.0,
        backoff_s: float = 0.2,
        backoff_max_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {station_token}"},
            timeout=timeout_s,
            transport=transport,
        )
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self.retries = RetryState()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def secure_script(
        self, card_id: UUID, chip_serial: str, host_challenge: bytes, iu_answer: bytes
    ) -> PersoScript:
        body = {
            "card_id": str(card_id),
            "chip_serial": chip_serial,
            "host_challenge": host_challenge.hex(),
            "initialize_update_response": iu_answer.hex(),
        }
        delay = self._backoff_s
        while True:
            problem = await self._try_once(body)
            if isinstance(problem, PersoScript):
                return problem
            self.retries.failures += 1
            self.retries.last_problem = problem
            log.warning(
                "keymgmt unavailable; the card stays assigned and the call is retried",
                extra={"card_id": str(card_id), "problem": problem, "retry_in_s": delay},
            )
            await self._sleep(delay)
            delay = min(delay * 2, self._backoff_max_s)

    async def _try_once(self, body: dict[str, str]) -> PersoScript | str:
        """The script, or why keymgmt is unavailable (to retry); raises KeymgmtRefused."""
        try:
            response = await self._http.post("/v1/perso/secure-scripts", json=body)
        except httpx.TransportError as exc:
            return f"{exc.__class__.__name__}"
        if response.status_code >= 500:
            return f"HTTP {response.status_code}"
        if response.status_code in (401, 403):
            # Our station credentials are refused: configuration, not the card's fault.
            return f"station token refused (HTTP {response.status_code})"
        if response.status_code != 200:
            detail = redact_pans(response.text[:200])
            if response.headers.get(REFUSAL_HEADER) == CRYPTOGRAM_MISMATCH:
                raise ChipRejected("card cryptogram mismatch: the chip does not hold our keys")
            if response.headers.get(REFUSAL_HEADER) == CARD_CANCELLED:
                raise CardCancelled("the card was cancelled by its issuer")
            raise KeymgmtRefused(
                f"keymgmt refused the script: HTTP {response.status_code} {detail}"
            )
        try:
            parsed = _ScriptResponse.model_validate_json(response.content)
            apdus = tuple(bytes.fromhex(apdu) for apdu in parsed.apdus)
        except (ValidationError, ValueError) as exc:
            raise KeymgmtBadResponse("keymgmt's script answer breaks the contract") from exc
        if str(parsed.card_id) != body["card_id"]:
            raise KeymgmtBadResponse("keymgmt answered with the script of another card")
        if parsed.chip_serial.upper() != body["chip_serial"].upper():
            raise KeymgmtBadResponse("keymgmt answered with the script of another chip")
        level = int(parsed.security_level, 16)
        return PersoScript(parsed.card_id, parsed.chip_serial.upper(), apdus, level)
