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
import os
import signal
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
from shared.db import make_engine, migrate, require_migrated, transaction
from shared.errors import install_error_handlers
from shared.handlers import HandlerTable
from shared.kafka_client import KafkaSecurity
from shared.limits import install_request_limits
from shared.logs import configure_logging
from shared.outage import DATABASE, KAFKA
from shared.outbox import OutboxRelay, RepositoryFactory, UnitOfWork
from shared.settings import BureauSettings
from shared.supervise import Supervision, Supervisor
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
        supervision: Supervision | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.schema = schema or name
        self.migrations = migrations
        self.handlers = handlers or {}
        self.subscribe = [settings.topic(stream) for stream in subscribe]
        self.workers = list(workers)
        self.consumer_group = consumer_group or f"{settings.topic_prefix}.{name}"
        self.engine: AsyncEngine = make_engine(
            settings.database_url, self.schema, settings.database_pool_size
        )
        # aiokafka clients bind to the running loop, so they are made in start(), not here.
        self._producer: AIOKafkaProducer | None = None
        self._relay: OutboxRelay | None = None
        self.consumer: EventConsumer | None = None
        self.repository = repository
        # The service's typed dependencies (a frozen dataclass made by its bootstrap()).
        self.deps = deps
        self.readiness_checks = list(readiness)
        # Every long-running task runs under one rule (shared/supervise.py); a task that cannot
        # run calls on_give_up, which serve() points at ending the process.
        self.supervisor = Supervisor(name, supervision or Supervision(), self._gave_up)
        self.on_give_up: Callable[[str], None] | None = None
        self._on_stop: list[Callable[[], Awaitable[None]]] = []

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None or self._relay is None:
            raise RuntimeError(f"{self.name}: the runtime is not started")
        producer: AIOKafkaProducer = self._relay.producer  # renewed after a refused row
        return producer

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
        events it emits commit together, then the relay is woken to publish them. A pooled
        connection the server dropped is replaced before the block runs (shared.db.transaction)."""
        async with transaction(self.engine) as conn:
            uow: UnitOfWork[Any] = UnitOfWork(
                conn, self.schema, self.emit_topic, buffered=True, repository=self.repository
            )
            yield uow
            await uow.flush()
        if uow.emit_count and self._relay is not None:
            self._relay.wake()

    async def start(self) -> None:
        if self.settings.migrate_on_start:
            applied = await migrate(self.engine, self.schema, self.migrations)
            if applied:
                log.info("migrations applied", extra={"applied": applied})
        else:  # a runtime role: shared.migrate ran as the owner before (shared/dbroles.py)
            await require_migrated(self.engine, self.schema, self.migrations, self.name)
        await ensure_topics(
            self.settings.kafka_bootstrap,
            [*self.subscribe, self.emit_topic, self.settings.topic(DEAD_LETTER_STREAM)],
            security=KafkaSecurity.of(self.settings),
        )
        self._producer = self._make_producer()
        self._relay = OutboxRelay(
            self.engine, self.schema, self._producer, new_producer=self._make_producer
        )
        await self._producer.start()
        self.supervisor.spawn("outbox-relay", self._relay.run)
        if self.subscribe:
            consumer = self.consumer = self.build_consumer(self.relay)
            self.supervisor.spawn("event-consumer", consumer.run)
        for worker in self.workers:
            self.supervisor.spawn(getattr(worker, "__name__", "worker"), self._bind(worker))

    def _make_producer(self) -> AIOKafkaProducer:
        return make_producer(
            self.settings.kafka_bootstrap,
            client_id=self.name,
            security=KafkaSecurity.of(self.settings),
        )

    def _bind(self, worker: Worker) -> Callable[[], Awaitable[None]]:
        def run() -> Awaitable[None]:
            return worker(self)

        return run

    def _gave_up(self, task: str) -> None:
        if self.on_give_up is not None:
            self.on_give_up(task)

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
            security=KafkaSecurity.of(self.settings),
        )

    async def stop(self) -> None:
        await self.supervisor.stop()
        for callback in reversed(self._on_stop):
            try:
                await callback()
            except Exception:
                log.exception("cleanup failed while stopping %s", self.name)
        if self._relay is not None:
            await self._relay.producer.stop()
            self._producer = None
        await self.engine.dispose()

    def alive(self) -> dict[str, Any]:
        """Liveness: False once a task gave up (the process is then ending)."""
        gave_up = self.supervisor.given_up()
        status = "failed" if gave_up else "ok"
        return {"status": status, "service": self.name, "alive": not gave_up, "gave_up": gave_up}

    async def _kafka_answers(self) -> bool:
        """While Kafka is counted down, readiness asks the broker itself (a metadata request),
        so an idle service sees it back without waiting for traffic."""
        if self._relay is None:
            return False
        try:
            async with asyncio.timeout(2.0):
                await self._relay.producer.client.fetch_all_metadata()
        except Exception:
            return False
        KAFKA.up()
        return True

    async def check_ready(self) -> dict[str, Any]:
        problems: list[str] = self.supervisor.problems()
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            DATABASE.up()
        except Exception as exc:
            DATABASE.down(exc)
            problems.append(f"database: {exc.__class__.__name__}")
        if KAFKA.is_down and not await self._kafka_answers():
            problems.append(f"{KAFKA.problem()}")
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

    @app.get("/health", tags=["ops"], summary="Liveness: every task can run")
    async def health(response: Response) -> dict[str, Any]:
        report = runtime.alive()
        if not report["alive"]:
            response.status_code = 503
        return report

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


async def runtime_of(request: Request) -> ServiceRuntime:
    """The runtime create_app() attached to the app serving this request. The dependencies
    here are `async def` although they never wait: FastAPI runs a plain `def` dependency in
    its thread pool, a thread handoff on every request (3% of keymgmt's samples)."""
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


# An endpoint's typed handle on its service's runtime: `runtime: RuntimeDep`.
RuntimeDep = Annotated[ServiceRuntime, Depends(runtime_of)]


def deps_of(kind: type[DepsT]) -> Callable[[Request], Awaitable[DepsT]]:
    """A FastAPI dependency giving the service's typed deps; use it as
    `XDepsDep = Annotated[XDeps, Depends(deps_of(XDeps))]` once per service."""

    async def dependency(request: Request) -> DepsT:
        deps = (await runtime_of(request)).deps
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


def server_options(settings: BureauSettings, port: int) -> dict[str, Any]:
    """uvicorn's settings for every service: on uvloop with httptools, the event loop and HTTP
    parser in C, a measured cut of every service's CPU a card (docs/architecture.md); our own
    JSON logging, no access log."""
    return {
        "host": settings.http_host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
    }


def serve(app: FastAPI, settings: BureauSettings, name: str, port: int) -> None:
    configure_logging(name, settings.log_level)
    configure_tracing(name, settings.trace_file)
    runtime = runtime_of_app(app)
    gave_up: list[str] = []

    def end_process(task: str) -> None:
        # uvicorn shuts down cleanly on SIGTERM; the exit status below tells the orchestrator
        # (services.sh, Kubernetes) that this process must be started afresh.
        gave_up.append(task)
        os.kill(os.getpid(), signal.SIGTERM)

    runtime.on_give_up = end_process
    uvicorn.run(app, **server_options(settings, port))
    if gave_up:
        raise SystemExit(f"{name}: task {gave_up[0]} cannot run; exiting so it is restarted")


def runtime_of_app(app: FastAPI) -> ServiceRuntime:
    runtime: ServiceRuntime = app.state.runtime
    return runtime
