"""The runtime every service shares: engine + migrations, producer + outbox relay, event
consumer, background workers, and a FastAPI app with /health and /ready (CONVENTIONS.md 3, 7).

One way to wire a service (docs/architecture.md, "wiring"):
- `services/<name>/app.py` has `SUBSCRIBE` (the streams it consumes), `bootstrap(settings,
  **overrides) -> ServiceRuntime` and `build_app(runtime) -> FastAPI`, nothing else of weight.
- bootstrap() builds the service's typed deps (a frozen dataclass: settings, ports, clients),
  binds the module-level HANDLERS table to them (shared.handlers.bind_handlers), names the
  repository factory and the workers, and adds readiness checks; tests pass other parts as
  keyword overrides.
- build_app() mounts module-level routers; endpoints take typed `Annotated` dependencies
  (`deps_of(XDeps)`, `runtime_dep`), raise shared.errors.DomainError subclasses, and own their
  transaction through `runtime.unit_of_work()`: commit, outbox flush and relay wake-up happen there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import metrics
from shared.auth import Authenticator, StaticTokens
from shared.bus import DEAD_LETTER_STREAM, EventConsumer, ensure_topics, make_producer
from shared.db import make_engine, migrate
from shared.errors import install_error_handlers
from shared.handlers import HandlerTable
from shared.limits import install_request_limits
from shared.logs import configure_logging
from shared.outbox import OutboxRelay, RepositoryFactory, UnitOfWork
from shared.settings import BureauSettings
from shared.telemetry import configure_tracing

log = logging.getLogger(__name__)

Worker = Callable[["ServiceRuntime"], Awaitable[None]]
# A readiness check adds what it finds to the /ready report: problems (strings) under
# "problems", and any fields of its own (a station's readers, the HSM's state).
ReadinessCheck = Callable[[dict[str, Any]], Awaitable[None]]
DepsT = TypeVar("DepsT")


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
        repository: RepositoryFactory[Any] | None = None,
        deps: Any = None,
        readiness: Sequence[ReadinessCheck] = (),
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
        self.repository = repository
        # The service's typed dependencies (a frozen dataclass made by its bootstrap()).
        self.deps = deps
        self.readiness_checks = list(readiness)
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

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork[Any]]:
        """An entrypoint's transaction with the service's repository: the state change and the
        events it emits commit together, then the relay is woken to publish them."""
        async with self.engine.begin() as conn:
            uow: UnitOfWork[Any] = UnitOfWork(
                conn, self.schema, self.emit_topic, buffered=True, repository=self.repository
            )
            yield uow
            await uow.flush()
        if uow.emit_count and self._relay is not None:
            self._relay.wake()

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
            self.consumer = self.build_consumer(self.relay)
            self._spawn(self.consumer.run(), "event-consumer")
        for worker in self.workers:
            self._spawn(worker(self), getattr(worker, "__name__", "worker"))

    def build_consumer(self, relay: OutboxRelay) -> EventConsumer:
        """The consumer of this service's HANDLERS; start() runs it on Kafka, tests may feed it
        records in process (EventConsumer.deliver) on the real database without a broker."""
        return EventConsumer(
            engine=self.engine,
            schema=self.schema,
            relay=relay,
            bootstrap=self.settings.kafka_bootstrap,
            group_id=self.consumer_group,
            topics=self.subscribe,
            handlers=self.handlers,
            emit_topic=self.emit_topic,
            dead_letter_topic=self.settings.topic(DEAD_LETTER_STREAM),
            repository=self.repository,
        )

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
        report: dict[str, Any] = {"service": self.name, "problems": problems}
        for check in self.readiness_checks:
            await check(report)
        report["ready"] = not report["problems"]
        return report


def create_app(
    runtime: ServiceRuntime,
    *,
    title: str,
    description: str = "",
    authenticators: Sequence[Authenticator] = (),
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=title, description=description, lifespan=lifespan, version="0.1.0")
    install_error_handlers(app)
    install_request_limits(app, routers)  # credentials and size bounds before any body is read
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

    for router in routers:
        app.include_router(router)
    return app


def runtime_of(request: Request) -> ServiceRuntime:
    """The runtime create_app() attached to the app serving this request."""
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


# An endpoint's typed handle on its service's runtime: `runtime: RuntimeDep`.
RuntimeDep = Annotated[ServiceRuntime, Depends(runtime_of)]


def deps_of(kind: type[DepsT]) -> Callable[[Request], DepsT]:
    """A FastAPI dependency giving the service's typed deps; use it as
    `XDepsDep = Annotated[XDeps, Depends(deps_of(XDeps))]` once per service."""

    def dependency(request: Request) -> DepsT:
        deps = runtime_of(request).deps
        if not isinstance(deps, kind):
            raise RuntimeError(f"the runtime carries {type(deps).__name__}, not {kind.__name__}")
        return deps

    dependency.__name__ = f"deps_of_{kind.__name__}"
    return dependency


def service_principals(settings: BureauSettings) -> str:
    """Service-to-service tokens as principal specs (role 'service', name = the service)."""
    return ",".join(
        f"service:{name}={token}" for name, token in settings.parsed_service_tokens().items()
    )


def serve(app: FastAPI, settings: BureauSettings, name: str, port: int) -> None:
    configure_logging(name, settings.log_level)
    configure_tracing(name, settings.trace_file)
    uvicorn.run(app, host=settings.http_host, port=port, log_config=None, access_log=False)
