"""`python -m services.electrical`: serve the station agent on its port (8103)."""

import asyncio

import uvicorn

from services.electrical.app import bootstrap, build_app
from services.electrical.settings import ElectricalSettings
from shared.logs import configure_logging
from shared.telemetry import configure_tracing


async def serve_electrical(settings: ElectricalSettings) -> None:
    # The runtime's aiokafka producer needs a running loop, so it is built inside the loop
    # uvicorn then serves on (as services/graphical does).
    configure_logging("electrical", settings.log_level)
    configure_tracing("electrical", settings.trace_file)
    app = build_app(bootstrap(settings))
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.electrical_port,
        log_config=None,
        access_log=False,
    )
    await uvicorn.Server(config).serve()


def main() -> None:
    asyncio.run(serve_electrical(ElectricalSettings()))


if __name__ == "__main__":
    main()
