"""The encoding machine's transport (ports.Transport) over the shared feeder client
(shared/feeder_client.py): a finished card must leave the reader before the next one can come
in, so an eject waits, retried with backoff, until the feeder answers."""

from __future__ import annotations

from shared.feeder_client import FeederClient


class FeederTransport:
    def __init__(self, feeder: FeederClient) -> None:
        self.feeder = feeder

    async def eject(self, reader: str) -> str | None:
        return await self.feeder.eject_until_answered(reader)
