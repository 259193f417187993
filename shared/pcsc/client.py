"""PcscClient: the asyncio entry point (waits, listing, connections)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from smartcard import scard as sc

from shared.pcsc.config import configure_socket
from shared.pcsc.connection import CardConnection
from shared.pcsc.wait import ReaderStatus, Wait, list_readers_sync


class PcscClient:
    """Async PC/SC access. `poll` bounds how long one blocking wait slice lasts."""

    def __init__(
        self, *, socket_path: str | None = None, poll: float = 0.5, reader_grace: float = 5.0
    ) -> None:
        configure_socket(socket_path)
        self.poll = poll
        self.reader_grace = reader_grace
        # One thread per concurrent wait: a station waits on every reader at once.
        self._waits = ThreadPoolExecutor(max_workers=64, thread_name_prefix="pcsc-wait")

    async def list_readers(self) -> list[str]:
        return await asyncio.get_running_loop().run_in_executor(self._waits, list_readers_sync)

    async def _wait(
        self,
        reader: str,
        want: bool | None,
        timeout: float | None,
        since: ReaderStatus | None = None,
    ) -> ReaderStatus:
        wait = Wait(reader, want, timeout, self.poll, self.reader_grace, since)
        future = asyncio.get_running_loop().run_in_executor(self._waits, wait.run)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            wait.cancel()
            # The woken thread ends the future with CancelledError: taken here, not logged
            # as "never retrieved" when the future is collected.
            future.add_done_callback(_taken)
            raise

    async def status(self, reader: str) -> ReaderStatus:
        return await self._wait(reader, None, 5.0)

    async def wait_for_card(
        self, reader: str, timeout: float | None = None, *, since: ReaderStatus | None = None
    ) -> bytes:
        """Block until a card is present; returns its ATR.

        With `since` (a status taken while the previous card was in), only a card inserted
        after it counts: pcscd keeps reporting the old card until its next poll.
        """
        return (await self.wait_for_state(reader, True, timeout, since=since)).atr

    async def wait_for_removal(
        self, reader: str, timeout: float | None = None, *, since: ReaderStatus | None = None
    ) -> None:
        """Block until the reader is empty, or (with `since`) until the card seen then left."""
        await self.wait_for_state(reader, False, timeout, since=since)

    async def wait_for_state(
        self,
        reader: str,
        present: bool,
        timeout: float | None = None,
        *,
        since: ReaderStatus | None = None,
    ) -> ReaderStatus:
        return await self._wait(reader, present, timeout, since)

    async def connect(
        self,
        reader: str,
        *,
        protocols: Literal["any", "T=0", "T=1"] = "any",
        exclusive: bool = False,
    ) -> CardConnection:
        mask = {
            "any": sc.SCARD_PROTOCOL_T0 | sc.SCARD_PROTOCOL_T1,
            "T=0": sc.SCARD_PROTOCOL_T0,
            "T=1": sc.SCARD_PROTOCOL_T1,
        }[protocols]
        share = sc.SCARD_SHARE_EXCLUSIVE if exclusive else sc.SCARD_SHARE_SHARED
        connection = CardConnection(reader)
        try:
            await connection._run(connection._connect_sync, mask, share)
        except BaseException:
            connection._thread.stop()
            raise
        return connection

    async def aclose(self) -> None:
        self._waits.shutdown(wait=False, cancel_futures=True)


def _taken(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
