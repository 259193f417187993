"""`python -m services.qa`: serve the QA service on its port (8105)."""

import asyncio

import uvicorn

from services.qa.app import bootstrap, build_app
from services.qa.settings import QaSettings
from shared.logs import configure_logging
from shared.telemetry import configure_tracing


async def serve_qa(settings: QaSettings) -> None:
    # The runtime's aiokafka producer needs a running loop, so it is built inside the loop
    # uvicorn then serves on (as services/graphical does).
    configure_logging("qa", settings.log_level)
    configure_tracing("qa", settings.trace_file)
    app = build_app(bootstrap(settings))
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.qa_port,
        log_config=None,
        access_log=False,
    )
    await uvicorn.Server(config).serve()


def main() -> None:
    asyncio.run(serve_qa(QaSettings()))


if __name__ == "__main__":
    main()
