"""Reader state: one-shot listing and the SCardGetStatusChange wait loop.

The loop re-establishes its context whenever pcscd goes away, so a wait outlives a pcscd
restart (pyscard's CardMonitor threads do not, see shared/INFRA.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from smartcard import scard as sc

from shared.pcsc.config import note_socket
from shared.pcsc.errors import (
    _CANCELLED,
    _READER_GONE,
    _SERVICE_DOWN,
    _TIMEOUT,
    _U32,
    SUCCESS,
    PcscTimeout,
    PcscUnavailable,
    ReaderGone,
    _call,
    _code,
    error_for,
)

log = logging.getLogger(__name__)


def establish() -> int:
    note_socket()
    hr, ctx = _call("SCardEstablishContext", sc.SCardEstablishContext, sc.SCARD_SCOPE_USER)
    if _code(hr) != SUCCESS:
        raise error_for(hr, "cannot reach pcscd")
    return int(ctx)


def release(ctx: int) -> None:
    try:
        sc.SCardReleaseContext(ctx)
    except SystemError:
        pass


def list_readers_sync() -> list[str]:
    ctx = establish()
    try:
        hr, names = _call("SCardListReaders", sc.SCardListReaders, ctx, [])
        if _code(hr) == _code(sc.SCARD_E_NO_READERS_AVAILABLE):
            return []
        if _code(hr) != SUCCESS:
            raise error_for(hr, "SCardListReaders")
        return [str(n) for n in names]
    finally:
        release(ctx)


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


class Wait:
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
            release(ctx)

    def run(self) -> ReaderStatus:
        known = sc.SCARD_STATE_UNAWARE
        missing_since: float | None = None
        warned = False
        try:
            while not self.cancelled.is_set():
                slice_s = self._remaining()
                if self._ctx is None:
                    try:
                        ctx = establish()
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
