"""Event provenance: which service produces each contract, declared once, next to the contracts.

Each service writes only its own topic, `<prefix>.<service>` (shared/service.py), and with
Kafka's ACLs on (deploy/local, the Strimzi KafkaUsers) only that service's principal can write
it: the topic a record arrives on IS its authenticated producer. Kafka does not pass the
producer's principal to consumers, and a header saying who produced a record would be as
forgeable as the record, so the topic is the one thing to check.

A consumer accepts a type only from its producer's topic (shared/bus.py dead-letters anything
else as forged); the outbox refuses to emit a type the emitting service does not produce
(shared/outbox.py), so a service's own code cannot drift from this declaration either.

Two contracts are declared otherwise than by one service name, explicitly:
- `card.spoiled` is produced by the station that spoiled the card: electrical or graphical,
  the one its `stage` names (`BY_STAGE`); each such event still has exactly one producer.
- `dead_letter.recorded` is produced by every consumer that dead-letters a record, each on
  its own topic (`ANY_SERVICE`).
- `control.recorded` (a step of an act under dual control) is produced by the service that
  owns its `act` (`BY_ACT`: shared/events/control.py ACT_PRODUCERS); each still has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, get_args

from shared.events import control, lifecycle
from shared.events.base import Event

# The services that write a topic of their own (each `<prefix>.<service>`).
SERVICES: Final = ("intake", "keymgmt", "electrical", "graphical", "qa", "fulfillment", "audit")
# Produced by whichever service dead-letters a record, on its own topic.
ANY_SERVICE: Final = "<any service, on its own topic>"
# Produced by the service the event's `stage` names.
BY_STAGE: Final = "<the service its stage names>"
# Produced by the service that owns the event's `act`.
BY_ACT: Final = "<the service its act names>"

PRODUCERS: Final[Mapping[type[Event], str]] = {
    lifecycle.OrderReceived: "intake",
    lifecycle.OrderAccepted: "intake",
    lifecycle.OrderRejected: "intake",
    lifecycle.CardOrdered: "intake",
    lifecycle.StockReceived: "intake",
    lifecycle.StockIssued: "intake",
    lifecycle.StockReturned: "intake",
    lifecycle.StockDestroyed: "intake",
    lifecycle.CardCancelled: "intake",
    lifecycle.CardPrepared: "keymgmt",
    lifecycle.BatchAssigned: "keymgmt",
    lifecycle.CardDataPurged: "keymgmt",
    lifecycle.IccKeyPoolRefilled: "keymgmt",
    lifecycle.IccKeyPairDrawn: "keymgmt",
    lifecycle.CardEncoded: "electrical",
    lifecycle.CardSpoiled: BY_STAGE,
    lifecycle.CardPrinted: "graphical",
    lifecycle.CardQaPassed: "qa",
    lifecycle.CardQaFailed: "qa",
    lifecycle.CardPacked: "fulfillment",
    lifecycle.PinMailerPrinted: "fulfillment",
    lifecycle.ShipmentDispatched: "fulfillment",
    lifecycle.CardDestroyed: "fulfillment",
    lifecycle.BatchReconciled: "audit",
    lifecycle.BatchDiscrepancy: "audit",
    lifecycle.BatchClosed: "audit",
    lifecycle.LogCheckpoint: "audit",
    lifecycle.DeadLetterRecorded: ANY_SERVICE,
    control.ControlRecorded: BY_ACT,
}

# The stages of card.spoiled, each a service (checked by the unit tests).
SPOILING_STAGES: Final = get_args(lifecycle.CardSpoiled.model_fields["stage"].annotation)


class UndeclaredProducer(RuntimeError):
    """A service tried to emit a type it is not declared to produce."""


def producer_of(event: Event) -> str | None:
    """The one service that produces this event; None when any service may (on its own
    topic). A contract missing from PRODUCERS has no producer: KeyError names it."""
    declared = PRODUCERS.get(type(event))
    if declared is None:
        raise KeyError(f"{event.type}: no producing service is declared for this contract")
    if declared == ANY_SERVICE:
        return None
    if declared == BY_STAGE and isinstance(event, lifecycle.CardSpoiled):
        return event.stage
    if declared == BY_ACT and isinstance(event, control.ControlRecorded):
        return control.ACT_PRODUCERS[event.act]
    return declared


def genuine_on(contract: type[Event], stream: str) -> bool:
    """Whether the service `stream` may produce some event of this contract."""
    declared = PRODUCERS[contract]
    if declared == ANY_SERVICE:
        return stream in SERVICES
    if declared == BY_STAGE:
        return stream in SPOILING_STAGES
    if declared == BY_ACT:
        return stream in control.ACT_PRODUCERS.values()
    return declared == stream


def forgeable(
    contracts: Iterable[type[Event]], topics: Iterable[str], prefix: str
) -> list[tuple[str, str]]:
    """(type, topic) of each contract that would be forged on each topic."""
    found: list[tuple[str, str]] = []
    for topic in topics:
        stream = stream_of_topic(topic, prefix)
        for contract in contracts:
            if stream is None or not genuine_on(contract, stream):
                found.append((str(contract.model_fields["type"].default), topic))
    return found


def stream_of_topic(topic: str, prefix: str) -> str | None:
    """The service whose topic this is (`<prefix>.<service>`), or None for any other topic."""
    head, dot, stream = topic.rpartition(".")
    if not dot or head != prefix or stream not in SERVICES:
        return None
    return stream


def check_emit(service: str, event: Event) -> None:
    """Raise UndeclaredProducer unless `service` produces `event` (the outbox's check)."""
    producer = producer_of(event)
    if producer is None and service in SERVICES:
        return
    if producer != service:
        raise UndeclaredProducer(
            f"{service} may not emit {event.type}: its producer is"
            f" {producer or 'a service, on its own topic'} (shared/events/producers.py)"
        )


def forgery(event: Event, topic: str, prefix: str) -> str | None:
    """Why a consumed record is forged, or None when its topic is its producer's: the reason
    dead-lettered and raised to audit, in the form `forged: type=T topic=X producer=P` (P is
    `any-service` for a type any service produces on its own topic)."""
    producer = producer_of(event)
    stream = stream_of_topic(topic, prefix)
    if stream is not None and producer in (None, stream):
        return None
    expected = producer or "any-service"
    return f"forged: type={event.type} topic={topic} producer={expected}"


def parse_forgery(reason: str) -> dict[str, str] | None:
    """The fields of a `forged: ...` dead-letter reason (type, topic, producer); None for any
    other reason."""
    kind, colon, rest = reason.partition(":")
    if not colon or kind.strip() != "forged":
        return None
    fields = dict(part.partition("=")[::2] for part in rest.split())
    return {name: fields.get(name, "") for name in ("type", "topic", "producer")}
