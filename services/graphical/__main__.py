"""`python -m services.graphical`: serve the graphical service on its port (8104)."""

import asyncio

import uvicorn

from services.graphical.app import bootstrap, build_app
from services.graphical.settings import GraphicalSettings
from shared.logs import configure_logging
from shared.telemetry import configure_tracing


async def serve_graphical(settings: GraphicalSettings) -> None:
    # Not shared.service.serve(): ServiceRuntime builds its aiokafka producer in __init__,
    # which needs a running event loop, and serve() only starts one inside uvicorn.run. So
    # the runtime is built here, inside the loop uvicorn then serves on.
    configure_logging("graphical", settings.log_level)
    configure_tracing("graphical", settings.trace_file)
    app = build_app(bootstrap(settings))
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.graphical_port,
        log_config=None,
        access_log=False,
    )
    await uvicorn.Server(config).serve()


def main() -> None:
    asyncio.run(serve_graphical(GraphicalSettings()))


if __name__ == "__main__":
    main()
