"""Event provenance (shared/events/producers.py): every contract has exactly one producing
service, each service's code builds only the contracts it produces, the outbox refuses to emit
any other, and the consumer takes a forged record for what it is before any handler runs."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path
from typing import Any, cast, get_args

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit import app as audit_app
from services.electrical import app as electrical_app
from services.fulfillment import app as fulfillment_app
from services.graphical import app as graphical_app
from services.intake import app as intake_app
from services.keymgmt import app as keymgmt_app
from services.qa import app as qa_app
from shared import events, metrics
from shared.bus import EventConsumer, ForgedEvent
from shared.events.control import ACT_PRODUCERS
from shared.events.producers import (
    ANY_SERVICE,
    BY_ACT,
    BY_STAGE,
    PRODUCERS,
    SERVICES,
    SPOILING_STAGES,
    UndeclaredProducer,
    check_emit,
    forgery,
    parse_forgery,
    producer_of,
)
from shared.outbox import UnitOfWork
from tests.support.bus import prepared_event

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "bureau"


def reconciled() -> events.BatchReconciled:
    return events.BatchReconciled(issuer_id="acme", actor="audit", batch_id=uuid.uuid4(), counts={})


def spoiled(stage: Any) -> events.CardSpoiled:
    return events.CardSpoiled(
        issuer_id="acme",
        actor="station",
        card_id=uuid.uuid4(),
        batch_id=uuid.uuid4(),
        stage=stage,
        reason="test",
    )


def encoded() -> events.CardEncoded:
    return events.CardEncoded(
        issuer_id="acme",
        actor="station",
        card_id=uuid.uuid4(),
        batch_id=uuid.uuid4(),
        chip_serial="A1",
        station_id="s1",
        reader="r1",
        apdu_count=1,
    )


def notice() -> events.DeadLetterRecorded:
    return events.DeadLetterRecorded(
        issuer_id="bureau",
        actor="bureau.qa",
        source_topic="bureau.graphical",
        source_partition=0,
        source_offset=1,
        consumer="bureau.qa",
        reason="poison: test",
    )


def test_every_contract_has_exactly_one_declared_producer() -> None:
    contracts = set(get_args(get_args(events.AnyEvent)[0]))
    assert set(PRODUCERS) == contracts, "a contract without a producer, or one declared twice"
    for contract, producer in PRODUCERS.items():
        assert producer in (*SERVICES, ANY_SERVICE, BY_STAGE, BY_ACT), contract
    # card.spoiled: each event's producer is the one service its stage names.
    assert [c for c, p in PRODUCERS.items() if p == BY_STAGE] == [events.CardSpoiled]
    assert set(SPOILING_STAGES) <= set(SERVICES)
    assert {producer_of(spoiled(stage)) for stage in SPOILING_STAGES} == set(SPOILING_STAGES)
    # dead_letter.recorded: any service, each on its own topic.
    assert [c for c, p in PRODUCERS.items() if p == ANY_SERVICE] == [events.DeadLetterRecorded]
    # control.recorded: each act's steps are its one owning service's.
    assert [c for c, p in PRODUCERS.items() if p == BY_ACT] == [events.ControlRecorded]
    assert set(ACT_PRODUCERS.values()) <= set(SERVICES)
    for act, service in ACT_PRODUCERS.items():
        assert producer_of(control(act)) == service
        assert forgery(control(act), f"{PREFIX}.{service}", PREFIX) is None
        for other in set(SERVICES) - {service}:
            assert forgery(control(act), f"{PREFIX}.{other}", PREFIX), (act, other)


def control(act: Any) -> events.ControlRecorded:
    return events.ControlRecorded(
        issuer_id="acme",
        actor="operator:olga",
        act=act,
        subject_id=uuid.uuid4(),
        subject="destroy 1 card(s)",
        step="requested",
        outcome="ok",
        principal="operator:olga",
    )


def test_each_service_writes_and_reads_only_service_topics() -> None:
    apps = (intake_app, keymgmt_app, electrical_app, graphical_app, qa_app, fulfillment_app)
    assert sorted(app.NAME for app in (*apps, audit_app)) == sorted(SERVICES)
    for app in (*apps, audit_app):
        assert set(app.SUBSCRIBE) <= set(SERVICES), app.NAME
    # Audit reads every service's topic, so it sees every forgery of a type it handles (all).
    assert set(audit_app.SUBSCRIBE) == set(SERVICES)


def _constructed_contracts(service: str) -> dict[str, set[str | None]]:
    """Contract name -> the `stage=` (or `act=`) literals it is built with, in
    services/<service>/."""
    names = {contract.__name__ for contract in PRODUCERS}
    found: dict[str, set[str | None]] = {}
    for path in (ROOT / "services" / service).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = getattr(func, "id", None) or getattr(func, "attr", None)
            if name not in names:
                continue
            stages = {
                str(kw.value.value) if isinstance(kw.value, ast.Constant) else "<not a literal>"
                for kw in node.keywords
                if kw.arg in ("stage", "act")
            }
            found.setdefault(name, set()).update(stages or {None})
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_builds_only_the_contracts_it_produces(service: str) -> None:
    by_name = {contract.__name__: contract for contract in PRODUCERS}
    built = _constructed_contracts(service)
    assert built, f"{service} builds no event at all?"
    for name, stages in built.items():
        producer = PRODUCERS[by_name[name]]
        if producer == BY_STAGE:
            assert stages == {service}, f"{service} builds {name} with stage {stages}"
        elif producer == BY_ACT:
            acts = {ACT_PRODUCERS.get(str(act)) for act in stages}
            assert acts == {service}, f"{service} builds {name} with act {stages}"
        else:
            assert producer in (service, ANY_SERVICE), f"{service} builds {name} ({producer}'s)"


class _Connection:
    """A unit of work's connection; the buffered unit never touches it before flush()."""

    sync_connection = None


def _unit(service: str) -> UnitOfWork[None]:
    conn = cast(AsyncConnection, _Connection())
    return UnitOfWork(conn, "s", f"{PREFIX}.{service}", buffered=True)


async def test_the_outbox_emits_a_services_own_types_and_refuses_others_naming_the_type() -> None:
    audit = _unit("audit")
    await audit.emit(reconciled())
    await audit.emit(notice())
    assert [e.type for e in audit.emitted] == ["batch.reconciled", "dead_letter.recorded"]

    electrical = _unit("electrical")
    with pytest.raises(UndeclaredProducer, match=r"electrical may not emit batch\.reconciled"):
        await electrical.emit(reconciled())
    with pytest.raises(UndeclaredProducer, match="card.spoiled"):
        await electrical.emit(spoiled("graphical"))
    await electrical.emit(spoiled("electrical"))
    # Nor on another service's topic named explicitly, even a type that service produces.
    with pytest.raises(UndeclaredProducer, match="card.prepared"):
        await electrical.emit(prepared_event(), topic=f"{PREFIX}.keymgmt")
    with pytest.raises(UndeclaredProducer, match="card.encoded only to its own topic"):
        await electrical.emit(encoded(), topic=f"{PREFIX}.graphical")
    assert [e.type for e in electrical.emitted] == ["card.spoiled"]
    with pytest.raises(UndeclaredProducer, match="dead_letter.recorded"):
        check_emit("stranger", notice())


def test_a_record_is_genuine_only_on_its_producers_topic() -> None:
    assert forgery(reconciled(), f"{PREFIX}.audit", PREFIX) is None
    assert forgery(spoiled("graphical"), f"{PREFIX}.graphical", PREFIX) is None
    assert forgery(notice(), f"{PREFIX}.qa", PREFIX) is None  # any service, its own topic
    forged = forgery(reconciled(), f"{PREFIX}.electrical", PREFIX)
    assert forged == "forged: type=batch.reconciled topic=bureau.electrical producer=audit"
    assert parse_forgery(forged) == {
        "type": "batch.reconciled",
        "topic": "bureau.electrical",
        "producer": "audit",
    }
    assert forgery(spoiled("graphical"), f"{PREFIX}.electrical", PREFIX) is not None
    # Another prefix's topic, the DLQ, or a topic no service owns is nobody's.
    assert forgery(reconciled(), "other.audit", PREFIX) is not None
    assert forgery(notice(), f"{PREFIX}.dlq", PREFIX) == (
        "forged: type=dead_letter.recorded topic=bureau.dlq producer=any-service"
    )
    assert forgery(notice(), "qa", PREFIX) is not None
    assert parse_forgery("poison: forged: type=x") is None


class _Record:
    def __init__(self, topic: str, event: events.Event, offset: int = 0) -> None:
        self.topic, self.partition, self.offset = topic, 0, offset
        self.key, self.value, self.headers = b"k", events.encode_event(event), ()


class _NoEngine:
    """The consumer must decide on a forged record before it opens any transaction."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name}) for a forged record")


def _consumer(handled: list[events.Event]) -> EventConsumer:
    async def handle(_uow: UnitOfWork[Any], event: events.BatchReconciled) -> None:
        handled.append(event)

    return EventConsumer(
        engine=_NoEngine(),  # type: ignore[arg-type]
        schema="fulfillment",
        relay=_NoEngine(),  # type: ignore[arg-type]
        bootstrap="unused",
        group_id="bureau.fulfillment",
        topics=["bureau.audit", "bureau.electrical"],
        handlers={events.BatchReconciled: [handle]},
        emit_topic="bureau.fulfillment",
        dead_letter_topic="bureau.dlq",
    )


async def test_the_consumer_refuses_a_forged_record_before_inbox_and_handler() -> None:
    handled: list[events.Event] = []
    consumer = _consumer(handled)
    with pytest.raises(ForgedEvent, match="type=batch.reconciled topic=bureau.electrical"):
        await consumer._apply(_Record("bureau.electrical", reconciled()))
    # The batch path hands a fetched run holding a forged record to the record-by-record path.
    run = [_Record("bureau.electrical", reconciled(), n) for n in range(3)]
    assert await consumer._apply_batch(run) is False
    assert handled == []


def test_the_forged_count_starts_at_zero_for_each_type_a_topic_may_not_carry() -> None:
    _consumer([])

    def sample(topic: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(
            "bureau_forged_events_total",
            {"service": metrics.service_name(), "type": "batch.reconciled", "topic": topic},
        )

    assert sample("bureau.electrical") == 0.0
    assert sample("bureau.audit") is None  # genuine there: nothing to count
