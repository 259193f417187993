"""Which pcscd to talk to, and which readers it has (deploy/local/pcscd.sh's readers.json).

libpcsclite reads PCSCLITE_CSOCK_NAME once per process, at its first context: set it first.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from shared.pcsc.errors import PcscError

log = logging.getLogger(__name__)

_socket_lock = threading.Lock()
_socket_used: str | None = None


def configure_socket(path: str | None) -> None:
    """Point libpcsclite at a private pcscd socket (PCSCLITE_CSOCK_NAME), before first use.

    An explicit PCSCLITE_CSOCK_NAME in the environment wins over `path`.
    """
    if path and "PCSCLITE_CSOCK_NAME" not in os.environ:
        os.environ["PCSCLITE_CSOCK_NAME"] = path
    note_socket()


def note_socket() -> None:
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
