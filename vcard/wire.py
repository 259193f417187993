"""Attach a VirtualCard to a vpcd reader slot, as the card side of vpcd's TCP protocol.

vsmartcard's vpcd (the pcscd driver) listens on 127.0.0.1:<port>; the card is the TCP client.
Every message both ways is a 2-byte big-endian length and a payload. One-byte payloads from
vpcd are control codes: 00 power off, 01 power on, 02 reset (no reply), 04 get ATR (reply: the
ATR). Longer payloads are command APDUs, answered with data || SW1 SW2. Closing the socket is
card removal; vpcd's 400 ms ATR polls double as its presence check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Final

from vcard.card import VirtualCard

log = logging.getLogger(__name__)

CTRL_OFF: Final = 0x00
CTRL_ON: Final = 0x01
CTRL_RESET: Final = 0x02
CTRL_ATR: Final = 0x04
CONNECT_TIMEOUT: Final = 0.5


class VpcdCardProtocol(asyncio.Protocol):
    def __init__(self, card: VirtualCard) -> None:
        self.card = card
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.removed_by_fault = False
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._quickack()

    def _quickack(self) -> None:
        """Re-arm TCP_QUICKACK before the next receive; Linux clears it after delayed ACKs
        resume, and without it each request/response stalls ~40 ms on the delayed ACK timer."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 2:
            size = int.from_bytes(self._buffer[:2], "big")
            if len(self._buffer) < 2 + size:
                break
            frame = bytes(self._buffer[2 : 2 + size])
            del self._buffer[: 2 + size]
            if not self._handle(frame):
                return
        self._quickack()

    def _send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(len(payload).to_bytes(2, "big") + payload)

    def _handle(self, frame: bytes) -> bool:
        """Answer one frame; False once the card has left the reader."""
        if len(frame) == 1:
            code = frame[0]
            if code == CTRL_ATR:
                self._send(self.card.atr)
            elif code == CTRL_ON:
                self.card.power_on()
            elif code == CTRL_OFF:
                self.card.power_off()
            elif code == CTRL_RESET:
                self.card.reset()
            else:
                log.warning("unknown vpcd control byte %02X", code)
            return True
        if not frame:
            return True
        self._send(self.card.process(frame))
        if self.card.removal_due:
            # Injected fault: the card leaves right after answering its Nth APDU.
            log.info("card %s removed after %d APDUs", self.card.chip_serial, self.card.apdu_count)
            self.removed_by_fault = True
            assert self.transport is not None
            self.transport.close()  # flushes the pending answer first
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class CardLink:
    """Keeps one card in one vpcd slot until `detach()`, or until a removal fault fires.

    If vpcd drops the connection (pcscd stopped or restarted) the card is still physically in
    the reader, so the link reconnects every `retry_interval` seconds until vpcd is back.
    """

    def __init__(
        self,
        card: VirtualCard,
        port: int,
        *,
        host: str = "127.0.0.1",
        retry_interval: float = 0.1,
        on_removed: Callable[[CardLink], None] | None = None,
    ) -> None:
        self.card = card
        self.port = port
        self.host = host
        self.retry_interval = retry_interval
        self.on_removed = on_removed
        self.connections = 0
        self.attached = asyncio.Event()
        self._stop = asyncio.Event()
        self._protocol: VpcdCardProtocol | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"card-{self.card.chip_serial}@{self.port}"
        )

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.retry_interval)

    async def _connect(self) -> tuple[asyncio.BaseTransport, VpcdCardProtocol] | None:
        """One attempt, bounded in time. vpcd listens with a backlog of 0: while an earlier
        card's connection waits there for vpcd's next accept, the kernel drops our SYN and a
        plain connect() would sleep through TCP's 1 s, 3 s, 7 s retransmissions."""
        loop = asyncio.get_running_loop()
        attempt = loop.create_task(
            loop.create_connection(lambda: VpcdCardProtocol(self.card), self.host, self.port)
        )
        await asyncio.wait({attempt}, timeout=CONNECT_TIMEOUT)
        if not attempt.done():
            attempt.cancel()
            await asyncio.wait({attempt})
        if attempt.cancelled():
            return None
        if attempt.exception() is not None:
            await self._pause()  # refused: vpcd not listening, pcscd is down or restarting
            return None
        return attempt.result()

    async def _run(self) -> None:
        while not self._stop.is_set():
            connected = await self._connect()
            if connected is None:
                continue
            transport, protocol = connected
            if self._stop.is_set():  # detached while connecting: close, never leave it
                transport.close()  # connected, or it would answer vpcd as a phantom card
                break
            self._protocol = protocol
            self.connections += 1
            self.attached.set()
            await protocol.closed
            self.attached.clear()
            self._protocol = None
            if protocol.removed_by_fault:
                if self.on_removed is not None:
                    self.on_removed(self)
                return
            if not self._stop.is_set():
                log.info("vpcd port %d went away; card %s waits", self.port, self.card.chip_serial)
                await self._pause()

    async def detach(self) -> None:
        """Pull the card out of the reader."""
        self._stop.set()
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        if self._task is not None:
            await self._task
