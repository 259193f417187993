"""The encoding machine's transport (the card feeder's HTTP API, vcard/api.py): eject the card
in a reader; a hopper reader then takes the next blank. A feeder that does not answer is retried
with backoff: a finished card must leave the reader before the next one can come in."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)


class FeederClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        backoff_s: float = 0.2,
        backoff_max_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport)
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s

    async def aclose(self) -> None:
        await self._http.aclose()

    async def eject(self, reader: str) -> str | None:
        """Eject the reader's card (retrying until the feeder answers); returns the serial of
        the blank fed in next, if the feeder says."""
        delay = self._backoff_s
        path = f"/readers/{quote(reader, safe='')}/eject"
        while True:
            try:
                response = await self._http.post(path, json={})
                if response.status_code == 200:
                    inserted = response.json().get("inserted")
                    return str(inserted) if inserted else None
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
            except (httpx.TransportError, ValueError) as exc:
                problem = exc.__class__.__name__
            log.warning(
                "feeder eject failed; retrying", extra={"reader": reader, "problem": problem}
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max_s)
