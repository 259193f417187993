"""electrical's /ready queue when the database is away: the queue is unknown (null), the check
raises nothing (a probe must answer), and the station's readiness is left to the database check.
The counts themselves are tested on the real Postgres (test_electrical_station_planning.py)."""

from __future__ import annotations

import socket
from typing import Any

from services.electrical.app import MIGRATIONS, queue_readiness
from shared.service import ServiceRuntime
from shared.settings import BureauSettings


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the socket is


async def test_the_queue_is_unknown_while_the_database_is_away() -> None:
    url = f"postgresql+asyncpg://bureau:unused@127.0.0.1:{closed_port()}/bureau"
    settings = BureauSettings(environment="test", database_url=url)
    runtime = ServiceRuntime(name="electrical", settings=settings, migrations=MIGRATIONS)
    report: dict[str, Any] = {"problems": []}
    try:
        await queue_readiness(runtime, "station-a", report)
    finally:
        await runtime.engine.dispose()
    assert report == {"problems": [], "queue": None}
