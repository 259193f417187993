"""Event contracts and the one decoder every consumer uses."""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

from shared.events.base import Event, TraceContext, utc_now
from shared.events.control import ControlRecorded
from shared.events.lifecycle import (
    BatchAssigned,
    BatchClosed,
    BatchDiscrepancy,
    BatchReconciled,
    CardCancelled,
    CardDataPurged,
    CardDestroyed,
    CardEncoded,
    CardOrdered,
    CardPacked,
    CardPrepared,
    CardPrinted,
    CardQaFailed,
    CardQaPassed,
    CardSpoiled,
    DeadLetterRecorded,
    IccKeyPairDrawn,
    IccKeyPoolRefilled,
    LogCheckpoint,
    OrderAccepted,
    OrderReceived,
    OrderRejected,
    PinMailerPrinted,
    ShipmentDispatched,
    StockDestroyed,
    StockIssued,
    StockReceived,
    StockReturned,
)
from shared.events.upcasters import OLD_VERSIONS, upcast

AnyEvent = Annotated[
    OrderReceived
    | OrderAccepted
    | OrderRejected
    | CardOrdered
    | StockReceived
    | StockIssued
    | StockReturned
    | CardPrepared
    | BatchAssigned
    | CardEncoded
    | CardSpoiled
    | CardPrinted
    | CardQaPassed
    | CardQaFailed
    | CardPacked
    | PinMailerPrinted
    | ShipmentDispatched
    | CardDestroyed
    | CardCancelled
    | CardDataPurged
    | IccKeyPoolRefilled
    | IccKeyPairDrawn
    | StockDestroyed
    | BatchReconciled
    | BatchDiscrepancy
    | BatchClosed
    | LogCheckpoint
    | DeadLetterRecorded
    | ControlRecorded,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


# Only records of a type that has older versions take the slower dict path (to be upcast).
_OLD_VERSION = re.compile(
    rb'"type":\s*"(?:' + b"|".join(re.escape(t.encode()) for t, _v in OLD_VERSIONS) + rb')"'
)


class UndecodableEvent(ValueError):
    """The bytes are not a known event contract; the reason names what is wrong."""


def decode_event(raw: bytes | str) -> Event:
    """Decode any lifecycle event, upcasting older versions of a contract to the current one.
    Raises UndecodableEvent with the validation errors."""
    try:
        if _OLD_VERSION.search(raw if isinstance(raw, bytes) else raw.encode()):
            event: Event = _ADAPTER.validate_python(upcast(json.loads(raw)))
        else:
            event = _ADAPTER.validate_json(raw)
    except json.JSONDecodeError as exc:
        raise UndecodableEvent(f"<root>: not JSON: {exc.msg}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise UndecodableEvent(problems) from exc
    return event


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode()


def event_types() -> list[str]:
    """Every dotted type name the contracts define."""
    names: list[str] = []
    for model in Event.__subclasses__():
        field = model.model_fields["type"]
        if isinstance(field.default, str):
            names.append(field.default)
    return sorted(names)


__all__ = [
    "AnyEvent",
    "BatchAssigned",
    "BatchClosed",
    "BatchDiscrepancy",
    "BatchReconciled",
    "CardCancelled",
    "CardDataPurged",
    "CardDestroyed",
    "CardEncoded",
    "CardOrdered",
    "CardPacked",
    "CardPrepared",
    "CardPrinted",
    "CardQaFailed",
    "CardQaPassed",
    "CardSpoiled",
    "ControlRecorded",
    "DeadLetterRecorded",
    "Event",
    "IccKeyPairDrawn",
    "IccKeyPoolRefilled",
    "LogCheckpoint",
    "OrderAccepted",
    "OrderReceived",
    "OrderRejected",
    "PinMailerPrinted",
    "ShipmentDispatched",
    "StockDestroyed",
    "StockIssued",
    "StockReceived",
    "StockReturned",
    "TraceContext",
    "UndecodableEvent",
    "decode_event",
    "encode_event",
    "event_types",
    "utc_now",
]
