"""QA's door to keymgmt (docs/services.md), with the service token: keymgmt compares the
records read from the chip with what it prepared (POST /v1/qa/readback) and recomputes the
chip's ARQC in the HSM (POST /v1/arqc/verify). QA never holds the clear records' meaning.

keymgmt being away (network, 5xx, refused credentials) is retried with capped backoff; any
other 4xx is a verdict on the card (KeymgmtRefused), which fails its QA.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

import httpx

from shared.pan import redact_pans

log = logging.getLogger(__name__)


class KeymgmtRefused(Exception):
    """keymgmt answered a 4xx about this card, or broke the contract."""


class KeymgmtClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 5.0,
        backoff_s: float = 0.2,
        backoff_max_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            transport=transport,
        )
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self.failures = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def readback(self, card_id: UUID, records: dict[int, bytes]) -> list[str]:
        """The problems keymgmt found in the records read from the chip ([] = they match)."""
        body = {
            "card_id": str(card_id),
            "records": {str(n): data.hex().upper() for n, data in records.items()},
        }
        answer = await self._post("/v1/qa/readback", body)
        if answer.get("ok") is True:
            return []
        problems = answer.get("problems") or ["keymgmt says the records do not match"]
        return [redact_pans(str(p))[:200] for p in problems][:10]

    async def verify_arqc(self, card_id: UUID, cdol1: bytes, atc: bytes, arqc: bytes) -> bool:
        body = {"card_id": str(card_id), "cdol1": cdol1.hex(), "atc": atc.hex(), "arqc": arqc.hex()}
        answer = await self._post("/v1/arqc/verify", body)
        if not isinstance(answer.get("ok"), bool):
            raise KeymgmtRefused("keymgmt's ARQC answer breaks the contract (no boolean ok)")
        return bool(answer["ok"])

    async def sim_challenge(self, card_id: UUID) -> dict[str, Any]:
        """RAND and AUTN for the card's SIM, with the ICCID and IMSI prepared (sim_check.py)."""
        answer = await self._post("/v1/sim/qa/challenge", {"card_id": str(card_id)})
        if not all(isinstance(answer.get(k), str) for k in ("rand", "autn", "iccid", "imsi")):
            raise KeymgmtRefused("keymgmt's SIM challenge breaks the contract")
        return answer

    async def sim_check(self, card_id: UUID, rand: bytes, response: bytes) -> list[str]:
        """The problems keymgmt found in the chip's AUTHENTICATE answer ([] = it checks out)."""
        body = {"card_id": str(card_id), "rand": rand.hex(), "response": response.hex()}
        answer = await self._post("/v1/sim/qa/check", body)
        if answer.get("ok") is True:
            return []
        problems = answer.get("problems") or ["keymgmt says the answer does not check out"]
        return [str(p)[:200] for p in problems][:10]

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        delay = self._backoff_s
        while True:
            try:
                response = await self._http.post(path, json=body)
            except httpx.TransportError as exc:
                problem = exc.__class__.__name__
            else:
                if response.status_code == 200:
                    try:
                        answer = response.json()
                    except ValueError as exc:
                        raise KeymgmtRefused(f"{path} answered no JSON") from exc
                    if not isinstance(answer, dict):
                        raise KeymgmtRefused(f"{path} answered no JSON object")
                    return answer
                if response.status_code < 500 and response.status_code not in (401, 403):
                    detail = redact_pans(response.text[:200])
                    raise KeymgmtRefused(f"{path} answered {response.status_code}: {detail}")
                problem = f"HTTP {response.status_code}"
            self.failures += 1
            log.warning("keymgmt unavailable; retrying", extra={"path": path, "problem": problem})
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max_s)
