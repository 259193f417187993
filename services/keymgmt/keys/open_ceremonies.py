"""The ceremonies the API holds open between their custodians' requests (keys/api.py): the
CLI's KeyCeremony, kept in this process with its lock and the time it was last touched."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from uuid import UUID

from services.keymgmt.keys.ceremonies import KeyCeremony

CEREMONY_TTL = 900.0  # seconds a ceremony may wait for its next custodian


@dataclass
class OpenCeremony:
    ceremony: KeyCeremony
    touched: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class OpenCeremonies(dict[UUID, OpenCeremony]):
    """The ceremonies open in this process (their checked components are bytearrays, zeroed on
    refusal, abort, expiry and combination: the SoftHSM shortcut of ceremony.py). Custodians of
    one ceremony therefore talk to one keymgmt replica."""
