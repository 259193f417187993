"""PC/SC client for station agents and QA: asyncio over pyscard's low-level `smartcard.scard`.

Blocking PC/SC calls run in threads. pcsc-lite serialises calls on one context, so every card
connection owns a context and a thread, and every wait owns a context too. Waits loop on
SCardGetStatusChange and re-establish their context when pcscd goes away, so they live through
a pcscd restart (pyscard's CardMonitor threads do not, see shared/INFRA.md).

A private pcscd (deploy/local/pcscd.sh) is reached through PCSCLITE_CSOCK_NAME, which
libpcsclite reads once per process: `configure_socket()` must run before the first context;
`load_readers()` does it from readers.json's "pcsc_socket".

    client = PcscClient()
    before = await client.status(reader)            # while the old card is in
    atr = await client.wait_for_card(reader, since=before)
    async with await client.connect(reader) as conn:
        data, sw = await conn.transmit(apdu)         # 61xx / 6Cxx handled
"""

from shared.pcsc.client import PcscClient
from shared.pcsc.config import ReaderConfig, configure_socket, load_readers
from shared.pcsc.connection import CardConnection, Disposition
from shared.pcsc.errors import (
    CardRemoved,
    PcscError,
    PcscTimeout,
    PcscUnavailable,
    ReaderGone,
    error_for,
)
from shared.pcsc.wait import ReaderStatus, list_readers_sync

__all__ = [
    "CardConnection",
    "CardRemoved",
    "Disposition",
    "PcscClient",
    "PcscError",
    "PcscTimeout",
    "PcscUnavailable",
    "ReaderConfig",
    "ReaderGone",
    "ReaderStatus",
    "configure_socket",
    "error_for",
    "list_readers_sync",
    "load_readers",
]
