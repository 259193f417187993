"""keymgmt's PIN mailer store (services/keymgmt/pin_mailer/printing.py) under the shared
print-job machine, against the fake printer of tests/unit/test_print_jobs.py and in-memory
tables: each state written (and committed) as it is reached, the PIN zeroed after rendering,
a printer down or refusing answered 503 with the problem recorded, a PIN that cannot be
revealed answered 409 with nothing sent. The real tables, HSM and printer are met in
tests/integration/test_keymgmt_pin_mailer.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from services.keymgmt.pin_mailer import printing
from services.keymgmt.pin_mailer.schemas import (
    NoPinMailer,
    PinMailerRequest,
    PinNotRevealable,
    PinPrinterUnavailable,
)
from services.keymgmt.pin_mailer.service import PinMailerError, reveal_pin
from shared.ipp import JobState
from shared.print_jobs import PrintJobMachine, PrintPolicy
from tests.support.print_jobs import FakePrinter

CARD, BATCH = uuid.uuid4(), uuid.uuid4()
PIN = b"4821"


@dataclass
class Tables:
    """pin_mailers, the vault and card_pins as the store and _print use them."""

    rows: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    vaulted: bool = True
    has_pin: bool = True
    accesses: list[str] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)
    commits: int = 0

    # repo.pin_mailers
    async def mailer(self, card_id: uuid.UUID) -> dict[str, Any] | None:
        row = self.rows.get(card_id)
        return dict(row) if row is not None else None

    async def add_mailer(self, m: dict[str, Any]) -> None:
        self.rows[m["c"]] = {"mailer_id": m["m"], "card_id": m["c"], "batch_id": m["b"]} | {
            "job_name": m["j"],
            "status": "queued",
            "ipp_job_id": None,
            "attempts": 0,
            "last_problem": None,
        }

    async def update(self, card_id: uuid.UUID, **changes: Any) -> None:
        self.rows[card_id].update(changes)
        self.writes.append(changes)

    # repo.vault and repo.emv
    async def vault_card(self, card_id: uuid.UUID) -> dict[str, Any] | None:
        return {"card_id": card_id} if self.vaulted else None

    async def card_pin(self, card_id: uuid.UUID) -> dict[str, Any] | None:
        return {"issuer_id": "bank"} if self.has_pin else None

    async def record_access(self, accesses: list[tuple[uuid.UUID, str, str]]) -> None:
        self.accesses += [why for _, _, why in accesses]

    # the connection
    async def commit(self) -> None:
        self.commits += 1

    async def rollback(self) -> None:
        pass

    @property
    def pin_mailers(self) -> Tables:
        return self

    @property
    def vault(self) -> Tables:
        return self

    @property
    def emv(self) -> Tables:
        return self


@dataclass
class FakeHsm:
    refuses: bool = False
    pins: list[bytearray] = field(default_factory=list)

    async def call(self, fn: Any, *args: Any) -> Any:
        assert fn is reveal_pin
        if self.refuses:
            raise PinMailerError("the PIN key is encrypt-only")
        self.pins.append(bytearray(PIN))
        return self.pins[-1], "the opened card"


@dataclass
class FakeGate:
    hsm: FakeHsm = field(default_factory=FakeHsm)

    def get(self) -> FakeHsm:
        return self.hsm


@dataclass
class Settings:
    pin_mailer_wait_s: float = 0.3


@dataclass
class FakePinPrinter:
    device: FakePrinter

    def get(self) -> tuple[PrintJobMachine, Settings]:
        policy = PrintPolicy(max_rejections=None)
        return PrintJobMachine(self.device, document_format="image/png", policy=policy), Settings()


@pytest.fixture(autouse=True)
def rendered(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    rendered: list[bytes] = []

    def render(mailer: str, pin: bytearray) -> bytes:
        rendered.append(bytes(pin))
        return b"%PNG mailer"

    monkeypatch.setattr(printing, "mailer_text", lambda issuer, card: f"{issuer}: {card}")
    monkeypatch.setattr(printing, "render_pin_mailer", render)
    return rendered


async def _print(tables: Tables, device: FakePrinter, gate: FakeGate) -> dict[str, Any]:
    return await printing._print(
        cast(Any, tables),
        cast(Any, tables),
        PinMailerRequest(card_id=CARD, batch_id=BATCH),
        "fulfillment",
        cast(Any, gate),
        cast(Any, FakePinPrinter(device)),
    )


async def test_a_mailer_is_printed_once_each_state_committed_and_the_pin_zeroed(
    rendered: list[bytes],
) -> None:
    tables, device, gate = Tables(), FakePrinter(polls_until_done=1), FakeGate()
    row = await _print(tables, device, gate)
    assert (row["status"], row["ipp_job_id"], row["attempts"], row["last_problem"]) == (
        "printed",
        1,
        1,
        None,
    )
    assert tables.writes[:2] == [
        {"status": "submitting", "attempts": 1},
        {"status": "submitted", "ipp_job_id": 1, "last_problem": None},
    ]
    assert tables.writes[-1] == {"status": "printed", "last_problem": None}
    assert tables.commits >= len(tables.writes) + 1  # the new row, then every state
    assert tables.accesses == ["pin-mailer"]
    assert rendered == [PIN]
    assert gate.hsm.pins == [bytearray(len(PIN))]
    again = await _print(tables, device, gate)  # asked again: nothing is sent
    assert again == row
    assert device.sent == [f"pin-{row['mailer_id']}"]


async def test_printer_down_keeps_the_status_records_the_problem_and_answers_503() -> None:
    tables, device, gate = Tables(), FakePrinter(loses_answer=True), FakeGate()
    with pytest.raises(PinPrinterUnavailable, match="PIN printer unavailable: .*502"):
        await _print(tables, device, gate)
    row = tables.rows[CARD]
    assert (row["status"], row["last_problem"]) == ("submitting", "printer answered HTTP 502")
    device.loses_answer, device.down = False, True
    with pytest.raises(PinPrinterUnavailable, match="unreachable"):
        await _print(tables, device, gate)  # the lookup by name fails: recorded before the 503
    assert tables.rows[CARD]["last_problem"] == "printer unreachable: ConnectError"
    device.down = False
    row = await _print(tables, device, gate)  # found by its name, never sent twice
    assert (row["status"], row["attempts"], len(device.sent)) == ("printed", 1, 1)


async def test_a_rejected_mailer_goes_back_to_the_queue_without_limit() -> None:
    tables, device, gate = Tables(), FakePrinter(rejects=True), FakeGate()
    for attempt in range(1, 6):
        with pytest.raises(PinPrinterUnavailable, match="rejected the mailer: .*not-supported"):
            await _print(tables, device, gate)
        row = tables.rows[CARD]
        assert (row["status"], row["attempts"]) == ("queued", attempt)
        assert "document-format-not-supported" in row["last_problem"]
    device.rejects = False
    assert (await _print(tables, device, gate))["status"] == "printed"


async def test_an_aborted_or_forgotten_job_is_spoiled_with_the_machines_reason() -> None:
    tables, device = Tables(), FakePrinter(finish_as=JobState.ABORTED)
    row = await _print(tables, device, FakeGate())
    assert (row["status"], row["last_problem"]) == ("spoiled", "printer aborted job 1: media-jam")
    forgotten, printer = Tables(), FakePrinter(polls_until_done=1_000_000)
    await _print(forgotten, printer, FakeGate())
    printer.jobs.clear()  # the printer restarted and lost its history
    row = await _print(forgotten, printer, FakeGate())
    assert row["status"] == "spoiled"
    assert "has no record of job 1" in row["last_problem"]
    assert printer.sent == [f"pin-{row['mailer_id']}"]  # never sent again


async def test_no_pin_or_no_vault_record_is_404_and_an_unrevealable_pin_409() -> None:
    device = FakePrinter()
    with pytest.raises(NoPinMailer, match="no PIN"):
        await _print(Tables(has_pin=False), device, FakeGate())
    novault = Tables(vaulted=False)
    with pytest.raises(NoPinMailer, match="not in the vault"):
        await _print(novault, device, FakeGate())
    assert novault.rows[CARD]["status"] == "queued"
    refused = Tables()
    with pytest.raises(PinNotRevealable, match="encrypt-only"):
        await _print(refused, device, FakeGate(FakeHsm(refuses=True)))
    row = refused.rows[CARD]
    assert (row["status"], row["attempts"]) == ("queued", 1)
    assert row["last_problem"] == "the PIN key is encrypt-only"
    assert device.sent == []  # nothing reached the printer
