"""The outbox relay (ARCHITECTURE.md, delivery guarantees): publishes a service's outbox rows
(shared/outbox.py writes them) to Kafka, acks=all and idempotent, and deletes them once the
broker has them. Per-stream order, parking of refused rows, outages waited out quietly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiokafka import errors as kafka_errors
from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import metrics
from shared.db import checked_identifier, transaction
from shared.outage import DATABASE, KAFKA, is_outage, report_failure

log = logging.getLogger(__name__)

# How long a batch's delivery reports are awaited before the producer is taken for wedged: past
# the producer's own request timeout (30 s, shared/bus.py) and its retries of a broker that
# comes back.
DELIVERY_TIMEOUT_S = 60.0

# The idempotent producer's own state broke (a refused batch leaves its sequence numbers out of
# step with the broker's): no fault of the row. The relay renews the producer and tries again.
_PRODUCER_STATE: tuple[type[BaseException], ...] = (
    kafka_errors.OutOfOrderSequenceNumber,
    kafka_errors.UnknownProducerId,
    kafka_errors.InvalidProducerEpoch,
)


class OutboxRelay:
    """Publishes a service's outbox. Woken at once after a local commit, else it polls.

    Order is kept per stream (topic and partition key, i.e. per card), not across the whole
    outbox: a row the broker refuses holds back only the rows of its own key. A refused row is
    retried alone (so it cannot take innocent rows of its batch down with it) and parked after
    `max_attempts` refusals: counted on `bureau_outbox_parked_total`, kept for an operator to
    replay (`python -m shared.outbox_admin`). An outage (database or Kafka away) is no
    refusal: nothing is counted against a row, the relay waits and tries again.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        producer: Any,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        max_attempts: int = 5,
        new_producer: Callable[[], Any] | None = None,
        delivery_timeout: float = DELIVERY_TIMEOUT_S,
    ) -> None:
        self._engine = engine
        # Makes a fresh producer after a refusal (see _PRODUCER_STATE); None: keep the one given.
        self._new_producer = new_producer
        self._renew = False
        self._schema = checked_identifier(schema)
        self._producer = producer
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self.max_attempts = max_attempts
        self._delivery_timeout = delivery_timeout
        self._wakeup = asyncio.Event()
        self.published = 0
        self.parked = 0

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        """Publish until cancelled. An outage is waited out here (logged once, by
        shared.outage); anything else ends the loop for the supervisor to restart."""
        backoff = 0.2
        while True:
            try:
                sent = await self.publish_once()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not report_failure(exc):
                    raise
                metrics.count_error("outbox_relay")
                if self._renew and self._new_producer is not None:
                    with contextlib.suppress(Exception):  # still away: renewed on the next turn
                        await self._renew_producer()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if sent < self._batch_size:
                await self._idle()

    async def _idle(self) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that
        # arrives as the event is set, and stop() then waited for a relay that went on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._poll_interval):
                await self._wakeup.wait()
        self._wakeup.clear()

    async def publish_once(self) -> int:
        """Claim up to a batch of unparked rows, publish them, delete those the broker took and
        count a refusal against the others. Returns the rows published."""
        async with transaction(self._engine) as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, topic, key, payload, headers, attempts"
                        f" FROM {self._schema}.outbox WHERE parked_at IS NULL"
                        " ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                    ),
                    {"n": self._batch_size},
                )
            ).all()
            DATABASE.up()
            if not rows:
                return 0
            published, refused = await self._publish(rows)
            if published:
                await conn.execute(
                    text(f"DELETE FROM {self._schema}.outbox WHERE id = ANY(:ids)"),
                    {"ids": [row.id for row in published]},
                )
            if refused:
                await self._count_refusals(conn, refused)
        if (refused or self._renew) and self._new_producer is not None:
            await self._renew_producer()
        self.published += len(published)
        for row in published:
            metrics.EVENTS_PUBLISHED.labels(service=metrics.service_name(), topic=row.topic).inc()
        return len(published)

    async def _publish(self, rows: Sequence[Row[Any]]) -> tuple[list[Row[Any]], dict[int, str]]:
        """Rows refused before alone first, one at a time, then the rest together, in id order
        per stream; a stream stops at its first refused row for this round."""
        blocked: set[tuple[str, str]] = set()
        refused: dict[int, str] = {}
        published: list[Row[Any]] = []
        outage: BaseException | None = None
        for row in (r for r in rows if r.attempts):
            if (row.topic, row.key) in blocked:
                continue
            error = await self._send_alone(row)
            if error is None:
                published.append(row)
            elif is_outage(error):
                outage = error
                blocked.add((row.topic, row.key))
            else:
                if (reason := self._refusal(error)) is not None:
                    refused[row.id] = reason
                blocked.add((row.topic, row.key))
        if outage is not None:
            raise outage
        sent: list[tuple[Row[Any], Any]] = []
        for row in (r for r in rows if not r.attempts):
            if (row.topic, row.key) in blocked:
                continue  # behind a refused row of its own card: keeps its order
            try:
                async with self._delivered():
                    sent.append((row, await self._send(row)))
            except Exception as exc:
                if is_outage(exc):
                    raise
                if (reason := self._refusal(exc)) is not None:
                    refused[row.id] = reason
                blocked.add((row.topic, row.key))
        async with self._delivered():
            results = await asyncio.gather(*(f for _r, f in sent), return_exceptions=True)
        for (row, _future), result in zip(sent, results, strict=True):
            if not isinstance(result, BaseException):
                published.append(row)
            elif is_outage(result):
                outage = result
            elif (reason := self._refusal(result)) is not None:
                refused[row.id] = reason
        if published:
            KAFKA.up()
        if outage is not None and not published:
            raise outage
        return published, refused

    @property
    def producer(self) -> Any:
        return self._producer

    async def _renew_producer(self) -> None:
        assert self._new_producer is not None
        old, self._producer = self._producer, self._new_producer()
        self._renew = False
        await self._producer.start()
        with contextlib.suppress(Exception):
            await old.stop()

    def _refusal(self, error: BaseException) -> str | None:
        """What to count against a row for `error`; None when the producer is at fault."""
        if isinstance(error, _PRODUCER_STATE):
            self._renew = True
            return None
        return repr(error)

    async def _send(self, row: Row[Any]) -> Any:
        headers = [(k, str(v).encode()) for k, v in (row.headers or {}).items()]
        return await self._producer.send(
            row.topic, value=bytes(row.payload), key=row.key.encode(), headers=headers
        )

    @contextlib.asynccontextmanager
    async def _delivered(self) -> AsyncIterator[None]:
        """Deliveries awaited at most `delivery_timeout`: after a broker killed and started
        again, aiokafka's idempotent producer was seen holding its futures for good (the
        fault suite: rows claimed, the transaction open, the outbox stalled for minutes after
        Kafka was back). Past the deadline it is an outage, and the producer is renewed."""
        try:
            async with asyncio.timeout(self._delivery_timeout):
                yield
        except TimeoutError:
            self._renew = True
            raise kafka_errors.KafkaTimeoutError(
                f"no delivery report within {self._delivery_timeout:g} s"
            ) from None

    async def _send_alone(self, row: Row[Any]) -> BaseException | None:
        try:
            async with self._delivered():
                await (await self._send(row))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return exc
        return None

    async def _count_refusals(self, conn: AsyncConnection, refused: dict[int, str]) -> None:
        parked = (
            await conn.execute(
                text(
                    f"UPDATE {self._schema}.outbox SET attempts = attempts + 1,"
                    " last_error = (CAST(:errors AS jsonb) ->> CAST(id AS text)),"
                    " parked_at = CASE WHEN attempts + 1 >= :max THEN now() END"
                    " WHERE id = ANY(:ids) RETURNING id, topic, key, attempts, parked_at"
                ),
                {
                    "ids": list(refused),
                    "errors": json.dumps({str(k): v[:2000] for k, v in refused.items()}),
                    "max": self.max_attempts,
                },
            )
        ).all()
        for row in parked:
            if row.parked_at is None:
                continue
            self.parked += 1
            metrics.OUTBOX_PARKED.labels(service=metrics.service_name()).inc()
            log.error(
                "outbox row parked after %d refusals; the rows behind it go on",
                row.attempts,
                extra={"row": row.id, "topic": row.topic, "error": refused[row.id][:300]},
            )
