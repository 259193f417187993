"""PC/SC client for station agents and QA: asyncio over pyscard's low-level `smartcard.scard`.

Blocking PC/SC calls run in threads. pcsc-lite serialises calls on one context, so every card
connection owns a context and a thread, and every wait owns a context too. Waits
loop on SCardGetStatusChange and re-establish their context when pcscd goes away, so they live
through a pcscd restart (pyscard's CardMonitor threads do not, see shared/INFRA.md).

A private pcscd (deploy/local/pcscd.sh) is reached through PCSCLITE_CSOCK_NAME, which
libpcsclite reads once per process: `configure_socket()` must run before the first context;
`load_readers()` does it from readers.json's "pcsc_socket".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeVar

from smartcard import scard as sc

from shared.iso7816 import SW1_BYTES_REMAINING, SW1_WRONG_LE, CommandAPDU

log = logging.getLogger(__name__)
T = TypeVar("T")
Disposition = Literal["leave", "reset", "unpower", "eject"]

_U32: Final = 0xFFFFFFFF


def _code(value: int) -> int:
    return value & _U32


SUCCESS: Final = _code(sc.SCARD_S_SUCCESS)
_TIMEOUT: Final = _code(sc.SCARD_E_TIMEOUT)
_CANCELLED: Final = _code(sc.SCARD_E_CANCELLED)
_NOT_TRANSACTED: Final = _code(sc.SCARD_E_NOT_TRANSACTED)
_SERVICE_DOWN: Final = frozenset(
    _code(c)
    for c in (
        sc.SCARD_E_NO_SERVICE,
        sc.SCARD_E_SERVICE_STOPPED,
        sc.SCARD_F_COMM_ERROR,
        sc.SCARD_E_INVALID_HANDLE,  # a context or card handle of a pcscd that has restarted
    )
)
_READER_GONE: Final = frozenset(
    _code(c)
    for c in (
        sc.SCARD_E_UNKNOWN_READER,
        sc.SCARD_E_READER_UNAVAILABLE,
        sc.SCARD_E_NO_READERS_AVAILABLE,
    )
)
_CARD_GONE: Final = frozenset(
    _code(c)
    for c in (
        sc.SCARD_W_REMOVED_CARD,
        sc.SCARD_E_NO_SMARTCARD,
        sc.SCARD_W_UNPOWERED_CARD,
        sc.SCARD_W_UNRESPONSIVE_CARD,
    )
)
_DISPOSITIONS: Final[dict[str, int]] = {
    "leave": sc.SCARD_LEAVE_CARD,
    "reset": sc.SCARD_RESET_CARD,
    "unpower": sc.SCARD_UNPOWER_CARD,
    "eject": sc.SCARD_EJECT_CARD,
}


class PcscError(Exception):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message if code is None else f"{message}: {_describe(code)}")
        self.code = code


class PcscUnavailable(PcscError):
    """pcscd is not running (or restarted under an open handle)."""


class ReaderGone(PcscError):
    """The reader is unknown to pcscd or has been removed."""


class CardRemoved(PcscError):
    """No card in the reader, or the card left it during the operation."""


class PcscTimeout(PcscError, TimeoutError):
    pass


def _describe(code: int) -> str:
    try:
        message = str(sc.SCardGetErrorMessage(code))
    except Exception:  # pyscard has no text for some codes
        message = "unknown"
    return f"{message} (0x{_code(code):08X})"


def error_for(code: int, message: str) -> PcscError:
    code = _code(code)
    if code in _SERVICE_DOWN:
        return PcscUnavailable(message, code)
    if code in _READER_GONE:
        return ReaderGone(message, code)
    if code in _CARD_GONE:
        return CardRemoved(message, code)
    if code == _TIMEOUT:
        return PcscTimeout(message, code)
    return PcscError(message, code)


def _call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """pyscard raises SystemError instead of returning a code when a handle died under it."""
    try:
        return fn(*args)
    except SystemError as exc:
        raise PcscUnavailable(f"{what}: pyscard failed ({exc}); pcscd restarted?") from exc


# -- configuration ----------------------------------------------------------------------------

_socket_lock = threading.Lock()
_socket_used: str | None = None


def configure_socket(path: str | None) -> None:
    """Point libpcsclite at a private pcscd socket (PCSCLITE_CSOCK_NAME), before first use.

    An explicit PCSCLITE_CSOCK_NAME in the environment wins over `path`.
    """
    if path and "PCSCLITE_CSOCK_NAME" not in os.environ:
        os.environ["PCSCLITE_CSOCK_NAME"] = path
    _note_socket()


def _note_socket() -> None:
    global _socket_used
    current = os.environ.get("PCSCLITE_CSOCK_NAME", "/run/pcscd/pcscd.comm")
    with _socket_lock:
        if _socket_used is None:
            _socket_used = current
        elif _socket_used != current:
            log.warning(
                "PCSCLITE_CSOCK_NAME changed to %s after libpcsclite read %s; ignored",
                current,
                _socket_used,
            )


@dataclass(frozen=True)
class ReaderConfig:
    name: str
    port: int
    pcsc_socket: str | None = None


def load_readers(path: str | os.PathLike[str] | None = None) -> list[ReaderConfig]:
    """Readers from readers.json (default $BUREAU_PCSC_READERS); configures the socket."""
    source = path or os.environ.get("BUREAU_PCSC_READERS")
    if not source:
        raise PcscError("no readers file: pass a path or set BUREAU_PCSC_READERS")
    entries = json.loads(Path(source).read_text())
    readers = [ReaderConfig(e["name"], int(e["port"]), e.get("pcsc_socket")) for e in entries]
    sockets = {r.pcsc_socket for r in readers if r.pcsc_socket}
    if len(sockets) > 1:
        raise PcscError(f"readers file names several pcscd sockets: {sorted(sockets)}")
    configure_socket(next(iter(sockets), None))
    return readers


# -- contexts ---------------------------------------------------------------------------------


def _establish() -> int:
    _note_socket()
    hr, ctx = _call("SCardEstablishContext", sc.SCardEstablishContext, sc.SCARD_SCOPE_USER)
    if _code(hr) != SUCCESS:
        raise error_for(hr, "cannot reach pcscd")
    return int(ctx)


def _release(ctx: int) -> None:
    try:
        sc.SCardReleaseContext(ctx)
    except SystemError:
        pass


def list_readers_sync() -> list[str]:
    ctx = _establish()
    try:
        hr, names = _call("SCardListReaders", sc.SCardListReaders, ctx, [])
        if _code(hr) == _code(sc.SCARD_E_NO_READERS_AVAILABLE):
            return []
        if _code(hr) != SUCCESS:
            raise error_for(hr, "SCardListReaders")
        return [str(n) for n in names]
    finally:
        _release(ctx)


@dataclass(frozen=True)
class ReaderStatus:
    reader: str
    present: bool
    atr: bytes
    event_state: int

    @property
    def events(self) -> int:
        """Card insertions + removals seen by pcscd: the upper word of dwEventState (PC/SC
        SCardGetStatusChange). A changed count proves a swap even if no empty state was seen."""
        return (self.event_state >> 16) & 0xFFFF


class _Wait:
    """A cancellable SCardGetStatusChange loop that survives pcscd restarts."""

    def __init__(
        self,
        reader: str,
        want_present: bool | None,
        timeout: float | None,
        poll: float,
        reader_grace: float,
        since: ReaderStatus | None = None,
    ) -> None:
        self.reader = reader
        self.want_present = want_present
        self.since = since
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.poll = poll
        self.reader_grace = reader_grace
        self.cancelled = threading.Event()
        self._ctx: int | None = None
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """From any thread: wake the blocked SCardGetStatusChange (SCardCancel)."""
        self.cancelled.set()
        with self._lock:
            if self._ctx is not None:
                try:
                    sc.SCardCancel(self._ctx)
                except SystemError:
                    pass

    def _remaining(self) -> float:
        if self.deadline is None:
            return self.poll
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PcscTimeout(f"timed out waiting on {self.reader!r}")
        return min(left, self.poll)

    def _satisfied(self, status: ReaderStatus) -> bool:
        if self.want_present is None:
            return True
        # vpcd shows a swapped card as empty for one 400 ms poll; a loaded machine can miss
        # that window, so an event count that moved past `since` counts as the swap as well.
        swapped = self.since is not None and status.events != self.since.events
        if self.want_present:
            return status.present and (self.since is None or swapped)
        return not status.present or swapped

    def _drop_context(self) -> None:
        with self._lock:
            ctx, self._ctx = self._ctx, None
        if ctx is not None:
            _release(ctx)

    def run(self) -> ReaderStatus:
        known = sc.SCARD_STATE_UNAWARE
        missing_since: float | None = None
        warned = False
        try:
            while not self.cancelled.is_set():
                slice_s = self._remaining()
                if self._ctx is None:
                    try:
                        ctx = _establish()
                    except PcscUnavailable:
                        if not warned:
                            log.warning("pcscd unavailable; waiting on %s goes on", self.reader)
                            warned = True
                        time.sleep(slice_s)
                        continue
                    with self._lock:
                        self._ctx = ctx
                    known = sc.SCARD_STATE_UNAWARE
                hr, states = _call(
                    "SCardGetStatusChange",
                    sc.SCardGetStatusChange,
                    self._ctx,
                    int(slice_s * 1000),
                    [(self.reader, known)],
                )
                code = _code(hr)
                if code in (_TIMEOUT, _CANCELLED):
                    continue
                if code in _SERVICE_DOWN:
                    self._drop_context()  # pcscd stopped: a new context is needed afterwards
                    time.sleep(min(0.05, slice_s))
                    continue
                event = int(states[0][1]) if states else 0
                if code in _READER_GONE or (code == SUCCESS and event & sc.SCARD_STATE_UNKNOWN):
                    # Right after a pcscd restart the readers come back within milliseconds.
                    now = time.monotonic()
                    missing_since = missing_since or now
                    if now - missing_since > self.reader_grace:
                        raise ReaderGone(f"reader {self.reader!r} is not known to pcscd", code)
                    self._drop_context()
                    time.sleep(min(0.1, slice_s))
                    continue
                if code != SUCCESS:
                    raise error_for(code, f"SCardGetStatusChange({self.reader!r})")
                missing_since = None
                present = bool(event & sc.SCARD_STATE_PRESENT) and not event & sc.SCARD_STATE_MUTE
                status = ReaderStatus(self.reader, present, bytes(states[0][2]), event)
                log.debug("%s: state %08X (present=%s)", self.reader, event & _U32, present)
                if self._satisfied(status):
                    return status
                known = event & ~sc.SCARD_STATE_CHANGED
            raise asyncio.CancelledError
        finally:
            self._drop_context()


# -- card connections -------------------------------------------------------------------------


class _CardThread:
    """One thread per card connection. Cheaper than run_in_executor per APDU (measured 4.0k vs
    2.9k APDU/s on one reader): a bare queue in, call_soon_threadsafe out."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, future, loop))
        # A cancelled caller cannot abort an APDU on the wire; its result is dropped.
        return await future

    def _main(self) -> None:
        while (job := self._queue.get()) is not None:
            fn, args, future, loop = job
            try:
                outcome: tuple[bool, Any] = (True, fn(*args))
            except BaseException as exc:  # handed to the awaiting coroutine
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the event loop is closed: nobody waits any more
                pass

    def stop(self) -> None:
        self._queue.put(None)


_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class CardConnection:
    """A connected card: own context, own thread; APDUs in order. Use `PcscClient.connect`."""

    def __init__(self, reader: str) -> None:
        self.reader = reader
        self.protocol: Literal["T=0", "T=1"] = "T=1"
        self.atr = b""
        self._thread = _CardThread(f"pcsc-card {reader}")
        self._ctx: int | None = None
        self._card: int | None = None
        self._pci: Any = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._thread.call(fn, *args)

    def _connect_sync(self, protocols: int, share: int) -> None:
        self._ctx = _establish()
        hr, card, active = _call(
            "SCardConnect", sc.SCardConnect, self._ctx, self.reader, share, protocols
        )
        if _code(hr) != SUCCESS:
            _release(self._ctx)
            self._ctx = None
            raise error_for(hr, f"SCardConnect({self.reader!r})")
        self._card = int(card)
        if active == sc.SCARD_PROTOCOL_T0:
            self.protocol, self._pci = "T=0", sc.SCARD_PCI_T0
        else:
            self.protocol, self._pci = "T=1", sc.SCARD_PCI_T1
        hr, _, _, _, atr = _call("SCardStatus", sc.SCardStatus, self._card)
        self.atr = bytes(atr) if _code(hr) == SUCCESS else b""

    def transmit_raw_sync(self, apdu: bytes) -> bytes:
        """One exchange, no GET RESPONSE handling; returns data || SW1 SW2."""
        if self._card is None:
            raise PcscError(f"not connected to {self.reader!r}")
        hr, response = _call("SCardTransmit", sc.SCardTransmit, self._card, self._pci, list(apdu))
        code = _code(hr)
        if code == SUCCESS and len(response) >= 2:
            return bytes(response)
        if code == _NOT_TRANSACTED and self._card_left():
            raise CardRemoved(f"card left {self.reader!r} during the exchange", code)
        raise error_for(code, f"SCardTransmit({self.reader!r})")

    def _card_left(self) -> bool:
        """vpcd reports a vanished card as a failed exchange; its poll sees it within 400 ms."""
        try:
            status = _Wait(self.reader, False, 0.6, 0.6, 0.0).run()
        except PcscError:
            return False
        return not status.present

    def transmit_sync(self, apdu: bytes) -> tuple[bytes, int]:
        """Exchange with ISO 7816-4 §5.1.3 handling: 6Cxx resends with Le=xx, 61xx fetches
        the rest with GET RESPONSE (T=0 case 4, or chained long answers)."""
        response = self.transmit_raw_sync(apdu)
        if response[-2] == SW1_WRONG_LE:
            cmd = CommandAPDU.parse(apdu)
            le = response[-1] or 256
            apdu = CommandAPDU(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, le).to_bytes()
            response = self.transmit_raw_sync(apdu)
        data = bytearray(response[:-2])
        for _ in range(64):  # bounded: a card answering 61xx forever is broken
            if response[-2] != SW1_BYTES_REMAINING:
                break
            get_response = bytes((apdu[0] & 0x03, 0xC0, 0x00, 0x00, response[-1]))
            response = self.transmit_raw_sync(get_response)
            if response[-2] == SW1_WRONG_LE:
                response = self.transmit_raw_sync(get_response[:4] + response[-1:])
            data += response[:-2]
        return bytes(data), int.from_bytes(response[-2:], "big")

    async def transmit(self, apdu: bytes | CommandAPDU) -> tuple[bytes, int]:
        raw = apdu.to_bytes() if isinstance(apdu, CommandAPDU) else bytes(apdu)
        return await self._run(self.transmit_sync, raw)

    def _script_sync(self, apdus: list[bytes], stop_on_error: bool) -> list[tuple[bytes, int]]:
        results: list[tuple[bytes, int]] = []
        for apdu in apdus:
            results.append(self.transmit_sync(apdu))
            if stop_on_error and results[-1][1] != 0x9000:
                break
        return results

    async def transmit_script(
        self, apdus: Sequence[bytes | CommandAPDU], *, stop_on_error: bool = True
    ) -> list[tuple[bytes, int]]:
        """Several exchanges in one thread hand-off (a perso script: fewer wake-ups per APDU).
        Stops after the first status word other than 9000 unless told otherwise."""
        raws = [a.to_bytes() if isinstance(a, CommandAPDU) else bytes(a) for a in apdus]
        return await self._run(self._script_sync, raws, stop_on_error)

    async def transmit_raw(self, apdu: bytes) -> bytes:
        return await self._run(self.transmit_raw_sync, bytes(apdu))

    def _disconnect_sync(self, disposition: int) -> None:
        card, ctx = self._card, self._ctx
        self._card = self._ctx = None
        try:
            if card is not None:
                hr = _call("SCardDisconnect", sc.SCardDisconnect, card, disposition)
                if _code(hr) not in (SUCCESS, *_CARD_GONE, *_SERVICE_DOWN, *_READER_GONE):
                    log.warning("SCardDisconnect(%s): %s", self.reader, _describe(hr))
        except PcscUnavailable:
            pass
        finally:
            if ctx is not None:
                _release(ctx)

    async def disconnect(self, disposition: Disposition = "leave") -> None:
        try:
            await self._run(self._disconnect_sync, _DISPOSITIONS[disposition])
        finally:
            self._thread.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()


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
        wait = _Wait(reader, want, timeout, self.poll, self.reader_grace, since)
        future = asyncio.get_running_loop().run_in_executor(self._waits, wait.run)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            wait.cancel()
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
