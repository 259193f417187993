"""The steps of dual-control acts for audit's log (shared/events/control.py): the contract
carries principals and key check values and refuses anything shaped like key material; each
act's steps are its owning service's; the destructions' and the ceremonies' steps name both
people; audit logs every step, raises the refused ones, and serves them to auditors."""

from __future__ import annotations

import logging
import uuid
from typing import Any, cast

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.control_api import control_event as auditor_view
from services.audit.handlers import HANDLERS, append_to_log, note_control_step
from services.audit.store import AuditStore
from services.keymgmt.keys.ceremonies import CeremonySpec
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.keys.ceremony_record import CeremonyPolicy, CeremonyStep, control_event
from services.keymgmt.settings import KeymgmtSettings
from shared.dual_control import TwoPersonTables, control_step
from shared.events import ControlRecorded, decode_event, encode_event
from shared.events.producers import UndeclaredProducer, check_emit
from shared.outbox import UnitOfWork

TABLES = TwoPersonTables("card-destruction", "requests", "refusals", "destruction request")
SPEC = CeremonySpec(
    "acme/IMK-AC/1",
    "acme",
    CeremonyKeyType.DES2,
    KeyUsage.DERIVE,
    2,
    "admin:root",
    custodians=("custodian:carol", "custodian:cyril"),
)


def step(**overrides: Any) -> ControlRecorded:
    fields: dict[str, Any] = {
        "issuer_id": "bureau",
        "actor": "operator:oscar",
        "act": "card-destruction",
        "subject_id": uuid.uuid4(),
        "subject": "destroy 2 card(s) awaiting destruction",
        "step": "confirm",
        "outcome": "ok",
        "principal": "operator:oscar",
        "started_by": "operator:olga",
    }
    return ControlRecorded(**(fields | overrides))


def test_the_contract_round_trips_and_keys_by_its_act() -> None:
    event = step(final=True)
    assert decode_event(encode_event(event)) == event
    assert event.partition_key() == str(event.subject_id)


@pytest.mark.parametrize(
    "kcv",
    [
        "0123456789ABCDEFFEDCBA9876543210",  # a double-length DES key
        "0123456789ABCDEF",  # a single-length one
        "08d7b4",  # lower case: not how KCVs are normalised
        "",
    ],
)
def test_the_kcv_field_takes_three_bytes_of_hex_and_no_key_material(kcv: str) -> None:
    with pytest.raises(ValidationError, match="kcv"):
        step(act="key-ceremony", kcv=kcv)
    assert step(act="key-ceremony", kcv="08D7B4").kcv == "08D7B4"


def test_an_unknown_act_or_a_field_more_is_refused() -> None:
    with pytest.raises(ValidationError, match="act"):
        step(act="vault-opening")
    with pytest.raises(ValidationError, match="component"):
        step(component="0123456789ABCDEF")


@pytest.mark.parametrize(
    ("act", "service"),
    [
        ("card-destruction", "fulfillment"),
        ("stock-destruction", "intake"),
        ("key-ceremony", "keymgmt"),
    ],
)
def test_only_the_acts_service_may_emit_its_steps(act: str, service: str) -> None:
    check_emit(service, step(act=act))
    for other in {"fulfillment", "intake", "keymgmt", "audit", "electrical"} - {service}:
        with pytest.raises(UndeclaredProducer, match="control.recorded"):
            check_emit(other, step(act=act))


def test_a_destruction_step_names_who_took_it_and_who_asked() -> None:
    request = {"request_id": uuid.uuid4(), "requested_by": "operator:olga"}
    refused = control_step(
        TABLES,
        request,
        issuer_id="bureau",
        subject="destroy 1 card(s)",
        step="confirm",
        principal="operator:olga",
        reason="same-principal-twice: " + "x" * 600,
    )
    assert (refused.outcome, refused.final, refused.subject_id) == (
        "refused",
        False,
        request["request_id"],
    )
    assert (refused.principal, refused.started_by) == ("operator:olga", "operator:olga")
    assert refused.reason is not None
    assert len(refused.reason) == 500
    kwargs: dict[str, Any] = {"issuer_id": "bureau", "subject": "destroy 1 card(s)"}
    done = control_step(
        TABLES, request, **kwargs, step="confirm", principal="operator:oscar", final=True
    )
    assert (done.outcome, done.reason, done.final, done.actor) == (
        "ok",
        None,
        True,
        "operator:oscar",
    )


def test_a_ceremony_step_names_the_custodian_the_opener_and_the_kcv() -> None:
    ceremony = uuid.uuid4()
    ok = control_event(
        ceremony, SPEC, CeremonyStep("component 1", "custodian:carol", "ok", "fine", "08D7B4")
    )
    assert (ok.act, ok.principal, ok.started_by, ok.kcv) == (
        "key-ceremony",
        "custodian:carol",
        "admin:root",
        "08D7B4",
    )
    assert ok.subject == "acme/IMK-AC/1: DES2 derive from 2 components"
    assert (ok.reason, ok.final, ok.issuer_id) == (None, False, "acme")
    why = "component 2 is custodian:cyril's step, not custodian:cleo's"
    other = control_event(
        ceremony, SPEC, CeremonyStep("component 2", "custodian:cleo", "refused", why)
    )
    assert (other.outcome, other.reason, other.final) == ("refused", why, False)
    combined = CeremonyStep("combine", None, "ok", "KCV 08D7B4", "08D7B4", "completed")
    done = control_event(ceremony, SPEC, combined)
    assert (done.principal, done.actor, done.final) == (None, "keymgmt", True)
    opened = control_event(ceremony, SPEC, CeremonyStep("open", None, "ok", "DES2 derive"))
    assert (opened.principal, opened.started_by) == ("admin:root", "admin:root")


def test_the_api_and_the_cli_send_ceremony_steps_to_keymgmts_topic() -> None:
    settings = KeymgmtSettings(environment="test", topic_prefix="tq")
    assert CeremonyPolicy.of(settings, None).control_topic == "tq.keymgmt"
    assert CeremonyPolicy().control_topic is None  # the demo driver without settings only


class _Log:
    def __init__(self) -> None:
        self.appended: list[Any] = []

    async def append_event(self, event: Any) -> int:
        self.appended.append(event)
        return len(self.appended)


class _Store:
    def __init__(self) -> None:
        self.log = _Log()


async def test_audit_logs_every_step_and_raises_the_refused_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = HANDLERS[ControlRecorded]
    assert chain[0] is append_to_log
    assert note_control_step in chain
    store = _Store()
    uow = cast(UnitOfWork[AuditStore], UnitOfWork(cast(AsyncConnection, None), "s", "t.audit"))
    uow._repo = cast(AuditStore, store)
    refused = step(outcome="refused", principal="operator:olga", reason="same-principal-twice")
    with caplog.at_level(logging.WARNING, logger="services.audit.handlers"):
        for event in (step(), refused):
            for handler in chain:
                await cast(Any, handler)(uow, event, None)
    assert [e.outcome for e in store.log.appended] == ["ok", "refused"]  # each step logged
    warned = [r for r in caplog.records if "dual control" in r.getMessage()]
    assert len(warned) == 1
    assert "card-destruction confirm refused" in warned[0].getMessage()


def test_an_auditor_reads_a_step_with_its_log_position() -> None:
    event = step(final=True)
    entry = {
        "seq": 7,
        "log_index": 6,
        "entry_hash": "ab" * 32,
        "recorded_at": "2026-12-07T10:00:00Z",
        "occurred_at": "2026-12-07T09:59:59Z",
        "issuer_id": "bureau",
        "event_id": event.event_id,
        "payload": event.model_dump(mode="json"),
    }
    view = auditor_view(entry)
    assert (view["log_index"], view["act"], view["step"], view["outcome"]) == (
        6,
        "card-destruction",
        "confirm",
        "ok",
    )
    assert (view["principal"], view["started_by"], view["final"]) == (
        "operator:oscar",
        "operator:olga",
        True,
    )
