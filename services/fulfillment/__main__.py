"""`python -m services.fulfillment`: serve the fulfillment service on its port (8106)."""

import asyncio

import uvicorn

from services.fulfillment.app import bootstrap, build_app
from services.fulfillment.settings import FulfillmentSettings
from shared.logs import configure_logging
from shared.telemetry import configure_tracing


async def serve_fulfillment(settings: FulfillmentSettings) -> None:
    # Not shared.service.serve(): ServiceRuntime builds its aiokafka producer in __init__,
    # which needs a running event loop, and serve() only starts one inside uvicorn.run. So
    # the runtime is built here, inside the loop uvicorn then serves on.
    configure_logging("fulfillment", settings.log_level)
    configure_tracing("fulfillment", settings.trace_file)
    app = build_app(bootstrap(settings))
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.fulfillment_port,
        log_config=None,
        access_log=False,
    )
    await uvicorn.Server(config).serve()


def main() -> None:
    asyncio.run(serve_fulfillment(FulfillmentSettings()))


if __name__ == "__main__":
    main()
