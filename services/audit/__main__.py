"""`python -m services.audit`: serve the audit service on its port (8107)."""

import uvicorn
from fastapi import FastAPI

from services.audit.app import NAME, bootstrap, build_app
from services.audit.settings import AuditSettings
from shared.logs import configure_logging
from shared.telemetry import configure_tracing


def main() -> None:
    settings = AuditSettings()
    configure_logging(NAME, settings.log_level)
    configure_tracing(NAME, settings.trace_file)

    # ServiceRuntime builds its aiokafka producer when constructed, and aiokafka 0.14 wants a
    # running event loop for that; uvicorn calls an app factory inside its loop, while
    # shared.service.serve() takes an app built before any loop runs.
    def app_factory() -> FastAPI:
        return build_app(bootstrap(settings))

    uvicorn.run(
        app_factory,
        factory=True,
        host=settings.http_host,
        port=settings.audit_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
