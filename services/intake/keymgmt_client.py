"""Intake's door to keymgmt's PAN vault: the clear PAN leaves intake here and nowhere else."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

log = logging.getLogger(__name__)


class VaultUnavailable(Exception):
    """keymgmt could not be reached or refused; the order is not accepted."""


class VaultClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        attempts: int = 3,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._client = client or httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(60.0, connect=5.0)
        )
        self._headers = {"Authorization": f"Bearer {token}"}
        self._attempts = attempts

    async def close(self) -> None:
        await self._client.aclose()

    async def store_cards(self, issuer_id: str, cards: list[dict[str, Any]]) -> dict[str, Any]:
        """Vault the records; returns card_id -> {pan_token, masked_pan}."""
        body = {"issuer_id": issuer_id, "cards": cards}
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(
                    "/v1/vault/cards", json=body, headers=self._headers
                )
            except httpx.TransportError as exc:
                log.warning("vault unreachable (attempt %d): %s", attempt, exc.__class__.__name__)
            else:
                if response.status_code == 200:
                    return {c["card_id"]: c for c in response.json()["cards"]}
                if response.status_code < 500:
                    raise VaultUnavailable(f"vault refused the cards: HTTP {response.status_code}")
                log.warning("vault error HTTP %d (attempt %d)", response.status_code, attempt)
            await asyncio.sleep(0.5 * attempt)
        raise VaultUnavailable("the PAN vault (keymgmt) is unavailable; retry the order later")
