"""The envelope every card-lifecycle event shares (ARCHITECTURE.md, "The card's life")."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    return datetime.now(UTC)


class TraceContext(BaseModel):
    """W3C trace context carried inside the event so a trace survives every Kafka hop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    traceparent: str
    tracestate: str = ""


class Event(BaseModel):
    """Immutable, versioned contract. Subclasses pin `type` with a Literal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=uuid4)
    type: str
    version: int = 1
    occurred_at: datetime = Field(default_factory=utc_now)
    issuer_id: str = Field(min_length=1, max_length=64)
    actor: str = Field(min_length=1, max_length=128, description="service, station or person")
    trace: TraceContext | None = None

    def partition_key(self) -> str:
        """Records are keyed by the card id, else the batch id, else the order id."""
        for name in ("card_id", "batch_id", "order_id", "lot_id"):
            value = getattr(self, name, None)
            if value is not None:
                return str(value)
        return str(self.event_id)
