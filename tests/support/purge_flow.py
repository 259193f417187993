"""A card taken through the bureau to dispatch, in this process on the real stack, for the
retention tests: keymgmt served over HTTP on a loopback port (graphical and fulfillment call it
as they would another process), the issuer's keys with a PIN key that PIN mailers may decrypt
under, and the settings of graphical and fulfillment pointed at that keymgmt."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from services.fulfillment.settings import FulfillmentSettings
from services.graphical.settings import GraphicalSettings
from tests.support.bus import wait_for
from tests.support.printer import TestPrinter


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app on 127.0.0.1, an ephemeral port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return server.started

    try:
        await wait_for(started, timeout=10)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def graphical_for(unique: str, keymgmt_url: str, printer: TestPrinter) -> GraphicalSettings:
    return GraphicalSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        service_tokens=f"graphical=gr-{unique}",
        principals=f"operator:olga=op-{unique}",
        keymgmt_url=keymgmt_url,
        card_printer_uri=printer.uri,
        card_printer_ca=printer.ca,
        graphical_printer="test-card",
        print_backoff_s=0.1,
        print_backoff_max_s=0.5,
    )


def fulfillment_for(unique: str, keymgmt_url: str, files: Path) -> FulfillmentSettings:
    return FulfillmentSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        service_tokens=f"fulfillment=fu-{unique}",
        principals=f"operator:olga=op-{unique}",
        keymgmt_url=keymgmt_url,
        run_dir=files,
        fulfillment_manifest_dir=files / "manifests",
        fulfillment_inserter_dir=files / "inserter",
        fulfillment_courier="swift-post",
    )
