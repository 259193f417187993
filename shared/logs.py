"""Structured JSON logs. Every line passes PAN redaction before it is written: digit runs, and
PANs inside hex strings such as APDU traces and BER-TLV dumps (shared/pan.py)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from shared.outage import DATABASE, KAFKA, Dependency
from shared.pan import redact_pans

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact_pans(json.dumps(entry, default=str))


class OutageFold(logging.Filter):
    """aiokafka logs every failed reconnect and metadata refresh, and SQLAlchemy's pool every
    connection it cannot reset: several lines a second while Kafka or PostgreSQL is away
    (5,400 to 8,000 in a 60 s Kafka outage). Those lines are folded into shared.outage's two
    lines per outage (down, and back with its duration and retries)."""

    _FOLDED: tuple[tuple[str, Dependency], ...] = (
        ("aiokafka", KAFKA),
        ("sqlalchemy.pool", DATABASE),
        ("asyncpg", DATABASE),
    )

    # What a line says when its dependency cannot be reached (not a rebalance, not a bug).
    # The fault suite's Kafka kill found aiokafka's loudest ones, each a few hundred times a
    # second per service: "node which is not ready" (fetcher, coordinator, sender), "marking
    # coordinator dead", "coordinator ... is either not started or not valid", and
    # NotLeaderForPartitionError while the restarted broker elects its leaders.
    _UNREACHABLE = (
        "connect",
        "metadata",
        "timed out",
        "timeout",
        "not available",
        "closed",
        "not ready",
        "coordinator dead",
        "not started or not valid",
        "notleaderforpartition",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.levelno >= logging.CRITICAL:
            return True
        for prefix, dependency in self._FOLDED:
            if record.name == prefix or record.name.startswith(prefix + "."):
                message = record.getMessage()
                if not any(word in message.lower() for word in self._UNREACHABLE):
                    return True
                dependency.down(message)
                return False
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(OutageFold())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO: two lines a card from keymgmt alone.
    for noisy in ("aiokafka", "uvicorn.access", "sqlalchemy.engine", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
