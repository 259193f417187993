"""The QA machine's transport (the card feeder's HTTP API, vcard/api.py): put a printed card
into the QA reader by chip serial, and take it out again."""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)


class FeederUnavailable(Exception):
    """The feeder did not do it; the card is not at fault (QA tries again later)."""


class CardNotFound(Exception):
    """The feeder has no such chip: the card cannot be checked."""


class FeederClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def insert(self, reader: str, chip_serial: str) -> None:
        """Insert the card; a card left in the QA reader by an earlier check is taken out first."""
        path = f"/readers/{quote(reader, safe='')}/insert"
        for _ in range(2):
            response = await self._call(path, {"chip_serial": chip_serial})
            if response.status_code == 200:
                return
            if response.status_code == 404:
                raise CardNotFound(f"the feeder has no chip {chip_serial}")
            holder = await self._call(f"/readers/{quote(reader, safe='')}", None, get=True)
            # 409: the reader still holds a card. (A feeder started as `python -m vcard.feeder`
            # answers its own errors with 500: the reader's state tells which it was.)
            busy = holder.status_code == 200 and holder.json().get("card")
            if response.status_code in (409, 500) and busy:
                await self.eject(reader)  # the reader still holds another card: clear it
                continue
            break
        raise FeederUnavailable(
            f"insert {chip_serial}: HTTP {response.status_code} {response.text[:200]}"
        )

    async def eject(self, reader: str) -> None:
        response = await self._call(f"/readers/{quote(reader, safe='')}/eject", {"refill": False})
        if response.status_code != 200:
            raise FeederUnavailable(f"eject: HTTP {response.status_code} {response.text[:200]}")

    async def _call(self, path: str, body: object, *, get: bool = False) -> httpx.Response:
        try:
            if get:
                return await self._http.get(path)
            return await self._http.post(path, json=body)
        except httpx.TransportError as exc:
            raise FeederUnavailable(f"feeder unreachable: {exc.__class__.__name__}") from exc
