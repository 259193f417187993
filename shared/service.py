"""The runtime every service shares: engine + migrations, producer + outbox relay, event
consumer, background workers, and a FastAPI app with /health and /ready (CONVENTIONS.md 3, 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import metrics
from shared.auth import Authenticator, StaticTokens
from shared.bus import (
    DEAD_LETTER_STREAM,
    EventConsumer,
    HandlerTable,
    ensure_topics,
    make_producer,
)
from shared.db import make_engine, migrate
from shared.logs import configure_logging
from shared.outbox import OutboxRelay
from shared.settings import BureauSettings
from shared.telemetry import configure_tracing

log = logging.getLogger(__name__)

Worker = Callable[["ServiceRuntime"], Awaitable[None]]


class ServiceRuntime:
    """Wires one service's infrastructure. Tests build one with other settings or handlers."""

    def __init__(
        self,
        *,
        name: str,
        settings: BureauSettings,
        migrations: Path,
        handlers: HandlerTable | None = None,
        subscribe: Sequence[str] = (),
        workers: Sequence[Worker] = (),
        schema: str | None = None,
        consumer_group: str | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.schema = schema or name
        self.migrations = migrations
        self.handlers = handlers or {}
        self.subscribe = [settings.topic(stream) for stream in subscribe]
        self.workers = list(workers)
        self.consumer_group = consumer_group or f"{settings.topic_prefix}.{name}"
        self.engine: AsyncEngine = make_engine(settings.database_url, self.schema)
        # aiokafka clients bind to the running loop, so they are made in start(), not here.
        self._producer: AIOKafkaProducer | None = None
        self._relay: OutboxRelay | None = None
        self.consumer: EventConsumer | None = None
        self.state: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(f"{self.name}: the runtime is not started")
        return self._producer

    @property
    def relay(self) -> OutboxRelay:
        if self._relay is None:
            raise RuntimeError(f"{self.name}: the runtime is not started")
        return self._relay

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Register a cleanup (an HTTP client, the HSM session) run when the service stops."""
        self._on_stop.append(callback)

    @property
    def emit_topic(self) -> str:
        return self.settings.topic(self.name)

    async def start(self) -> None:
        applied = await migrate(self.engine, self.schema, self.migrations)
        if applied:
            log.info("migrations applied", extra={"applied": applied})
        await ensure_topics(
            self.settings.kafka_bootstrap,
            [*self.subscribe, self.emit_topic, self.settings.topic(DEAD_LETTER_STREAM)],
        )
        self._producer = make_producer(self.settings.kafka_bootstrap, client_id=self.name)
        self._relay = OutboxRelay(self.engine, self.schema, self._producer)
        await self._producer.start()
        self._spawn(self._relay.run(), "outbox-relay")
        if self.subscribe:
            self.consumer = EventConsumer(
                engine=self.engine,
                schema=self.schema,
                relay=self.relay,
                bootstrap=self.settings.kafka_bootstrap,
                group_id=self.consumer_group,
                topics=self.subscribe,
                handlers=self.handlers,
                emit_topic=self.emit_topic,
                dead_letter_topic=self.settings.topic(DEAD_LETTER_STREAM),
            )
            self._spawn(self.consumer.run(), "event-consumer")
        for worker in self.workers:
            self._spawn(worker(self), getattr(worker, "__name__", "worker"))

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                # A dead loop must not look alive: readiness reports it and the log says why.
                log.exception("background task %s died", name)
                raise

        self._tasks.append(asyncio.create_task(guarded(), name=f"{self.name}:{name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for callback in reversed(self._on_stop):
            try:
                await callback()
            except Exception:
                log.exception("cleanup failed while stopping %s", self.name)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        await self.engine.dispose()

    def dead_tasks(self) -> list[str]:
        return [t.get_name() for t in self._tasks if t.done()]

    async def check_ready(self) -> dict[str, Any]:
        problems: list[str] = [f"task stopped: {name}" for name in self.dead_tasks()]
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            problems.append(f"database: {exc.__class__.__name__}")
        if self.consumer is not None and not self.consumer.ready.is_set():
            problems.append("consumer: no partitions assigned yet")
        return {"service": self.name, "ready": not problems, "problems": problems}


def create_app(
    runtime: ServiceRuntime,
    *,
    title: str,
    description: str = "",
    authenticators: Sequence[Authenticator] = (),
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=title, description=description, lifespan=lifespan, version="0.1.0")
    app.state.runtime = runtime
    app.state.authenticators = [
        *authenticators,
        StaticTokens(service_principals(runtime.settings)),
        StaticTokens(runtime.settings.principals),
    ]

    @app.get("/health", tags=["ops"], summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @app.get("/ready", tags=["ops"], summary="Readiness: database, Kafka consumer, workers")
    async def ready(response: Response) -> dict[str, Any]:
        report = await runtime.check_ready()
        if not report["ready"]:
            response.status_code = 503
        return report

    metrics.set_service_name(runtime.name)

    @app.get(
        "/metrics", tags=["ops"], summary="Prometheus metrics", response_class=PlainTextResponse
    )
    async def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type=metrics.CONTENT_TYPE)

    return app


def runtime_of(request: Request) -> ServiceRuntime:
    """The runtime create_app() attached to the app serving this request."""
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def service_principals(settings: BureauSettings) -> str:
    """Service-to-service tokens as principal specs (role 'service', name = the service)."""
    return ",".join(
        f"service:{name}={token}" for name, token in settings.parsed_service_tokens().items()
    )


def serve(app: FastAPI, settings: BureauSettings, name: str, port: int) -> None:
    configure_logging(name, settings.log_level)
    configure_tracing(name, settings.trace_file)
    uvicorn.run(app, host=settings.http_host, port=port, log_config=None, access_log=False)
