"""The card feeder's HTTP API (vcard/api.py), as the machines around a reader drive it: the
encoding station ejects a finished card (a hopper reader then takes the next blank), QA puts a
printed card into its reader by chip serial and takes it out again. One client, one error
vocabulary; each service keeps its own small port for the calls it makes."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)


class FeederUnavailable(Exception):
    """The feeder did not do it (unreachable, or it answered an error); the card is not at
    fault, the caller tries again."""


class CardNotFound(Exception):
    """The feeder has no such chip: the card cannot be put into a reader."""


class FeederClient:
    """`refill`: whether an eject asks for the next blank (None: the feeder's default, a hopper
    reader refills, a manual one does not)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        refill: bool | None = None,
        backoff_s: float = 0.2,
        backoff_max_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport)
        self._refill = refill
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s

    async def aclose(self) -> None:
        await self._http.aclose()

    async def eject(self, reader: str) -> str | None:
        """Eject the reader's card, once; returns the serial of the blank fed in next, if the
        feeder says."""
        body = {} if self._refill is None else {"refill": self._refill}
        response = await self._call(f"{_reader_path(reader)}/eject", body)
        if response.status_code != 200:
            raise FeederUnavailable(f"eject: HTTP {response.status_code} {response.text[:200]}")
        try:
            inserted = response.json().get("inserted")
        except ValueError as exc:
            raise FeederUnavailable("eject: the feeder's answer is not JSON") from exc
        return str(inserted) if inserted else None

    async def eject_until_answered(self, reader: str) -> str | None:
        """Eject, retried with a capped backoff until the feeder answers: for a finished card
        that must leave the reader before the next one can come in."""
        delay = self._backoff_s
        while True:
            try:
                return await self.eject(reader)
            except FeederUnavailable as exc:
                log.warning(
                    "feeder eject failed; retrying", extra={"reader": reader, "problem": str(exc)}
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max_s)

    async def insert(self, reader: str, chip_serial: str) -> None:
        """Insert the card; a card left in the reader by an earlier check is ejected first."""
        path = f"{_reader_path(reader)}/insert"
        for _ in range(2):
            response = await self._call(path, {"chip_serial": chip_serial})
            if response.status_code == 200:
                return
            if response.status_code == 404:
                raise CardNotFound(f"the feeder has no chip {chip_serial}")
            holder = await self._call(_reader_path(reader), None, get=True)
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

    async def _call(self, path: str, body: object, *, get: bool = False) -> httpx.Response:
        try:
            if get:
                return await self._http.get(path)
            return await self._http.post(path, json=body)
        except httpx.TransportError as exc:
            raise FeederUnavailable(f"feeder unreachable: {exc.__class__.__name__}") from exc


def _reader_path(reader: str) -> str:
    return f"/readers/{quote(reader, safe='')}"
