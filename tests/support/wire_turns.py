"""Count client round trips to a server by standing between them: a TCP relay on 127.0.0.1 that
forwards bytes both ways untouched and counts the client's turns.

A turn is a burst of bytes the client sends after the server last spoke (or first on its
connection): messages the client pipelines in one go count once, as they cost one wait for the
server. It knows nothing of the PostgreSQL protocol (nor of TLS, which it forwards as it is), so
it counts what any client does, ours or a raw one, the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


@dataclass
class WireTurns:
    """The relay's counts; `reset()` them after a warm-up to count one stretch of work."""

    turns: int = 0
    connections: int = 0
    port: int = 0
    _client_spoke_last: dict[int, bool] = field(default_factory=dict)

    def reset(self) -> None:
        self.turns = 0
        self.connections = 0

    def client_sent(self, link: int) -> None:
        if not self._client_spoke_last.get(link, False):
            self.turns += 1
        self._client_spoke_last[link] = True

    def server_sent(self, link: int) -> None:
        self._client_spoke_last[link] = False


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    seen: WireTurns,
    link: int,
    from_client: bool,
) -> None:
    try:
        while data := await reader.read(65536):
            if from_client:
                seen.client_sent(link)
            else:
                seen.server_sent(link)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _link(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    server_r: asyncio.StreamReader,
    server_w: asyncio.StreamWriter,
    seen: WireTurns,
    link: int,
) -> None:
    await asyncio.gather(
        _pump(client_r, server_w, seen, link, from_client=True),
        _pump(server_r, client_w, seen, link, from_client=False),
    )


@contextlib.asynccontextmanager
async def wire_turns(host: str, port: int) -> AsyncIterator[WireTurns]:
    """A counting relay to host:port for as long as the block runs; connect to `seen.port`."""
    seen = WireTurns()
    links: set[asyncio.Task[None]] = set()

    async def accept(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        link = id(client_w)
        seen.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        task = asyncio.create_task(_link(client_r, client_w, server_r, server_w, seen, link))
        links.add(task)
        task.add_done_callback(links.discard)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    seen.port = server.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        server.close()
        for task in list(links):
            task.cancel()
        await asyncio.gather(*links, return_exceptions=True)


def via_port(url: str, port: int) -> str:
    """`url` (a database URL) pointed at 127.0.0.1:`port` instead of its own host and port."""
    parts = urlsplit(url)
    userinfo, _, _hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))
