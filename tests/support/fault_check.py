"""One batch through the running bureau under one fault (tests/support/faults.py), and what it
left: every card accounted for, nothing done twice, audit's verifier passing, the recovery time.

- started: the fault is injected once the batch's first card is encoded (mid-batch);
- recovery: from the heal until every service's /ready is 200 again and the batch moves (a new
  audit entry of the batch, or nothing of it left in flight);
- settled: every card packed or awaiting destruction (a card a fault spoiled is destroyed under
  two operators, as the floor would), then the batch closed by audit;
- lost: cards of the order neither dispatched nor destroyed (fulfillment's table), or that audit
  reports missing; doubled: cards with a second card.encoded, card.printed or card.packed in the
  audit log, a second print job in graphical's print job table, or in a second shipment (the
  printer's spool proves nothing afterwards: QA deletes a card's printout once it is decided);
- log lines: during an outage, the lines each service wrote to its log (a handful, not one per
  retry).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from demo.client import Bureau, demo_cards
from tests.support.faults import FEEDER, SERVICE_PORTS, Fault, Floor

ISSUER = "e2e-bank"  # its keys come from the e2e bureau fixture's ceremony (or the bench's)
WITNESS_URL = "http://127.0.0.1:8108"
KEYMGMT = "http://127.0.0.1:8102"
FULFILLMENT = "http://127.0.0.1:8106"
AUDIT = "http://127.0.0.1:8107"
TWICE = ("card.encoded", "card.packed")  # card.printed: printed_twice


@dataclass
class FaultResult:
    fault: str
    cards: int
    lost: int = 0
    doubled: int = 0
    recovery_s: float | None = None
    closed_s: float | None = None  # from the heal to the batch closed (destructions included)
    destroyed: int = 0
    log_lines: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0 and self.doubled == 0


async def not_ready() -> dict[str, str]:
    """The services whose /ready is not 200, with what they say."""
    found: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=5.0) as http:
        for service, port in SERVICE_PORTS.items():
            try:
                answer = await http.get(f"http://127.0.0.1:{port}/ready")
            except httpx.HTTPError as exc:
                found[service] = repr(exc)
                continue
            if answer.status_code != 200:
                found[service] = answer.text[:300]
    return found


def log_offsets(floor: Floor) -> dict[str, int]:
    logs = floor.run_dir / "logs"
    return {
        name: (logs / f"{name}.log").stat().st_size if (logs / f"{name}.log").exists() else 0
        for name in [*SERVICE_PORTS, "feeder"]
    }


def lines_since(floor: Floor, offsets: dict[str, int]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for name, offset in offsets.items():
        with (floor.run_dir / "logs" / f"{name}.log").open("rb") as log:
            log.seek(offset)
            counted[name] = log.read().count(b"\n")
    return counted


class Batch:
    """One order of `cards` cards, followed in audit's tables and views."""

    def __init__(
        self, floor: Floor, bureau: Bureau, engine: AsyncEngine, cards: int, issuer: str
    ) -> None:
        self.floor, self.bureau, self.engine, self.cards = floor, bureau, engine, cards
        self.issuer = issuer
        self.batch_id = ""
        self.card_ids: set[str] = set()

    async def order(self, product: str) -> None:
        name = f"Fault suite {self.issuer}"
        token = await self.bureau.onboard_issuer(self.issuer, name, product, cards=self.cards)
        await self.bureau.receive_stock(self.issuer, product, self.cards)
        seed = int.from_bytes(os.urandom(4), "big")
        order = await self.bureau.post_order(token, product, demo_cards(self.cards, seed=seed))
        self.batch_id = str(order["batch_id"])
        self.card_ids = {str(c["card_id"]) for c in order["cards"]}

    async def events(self) -> list[tuple[str, str | None, dict[str, Any]]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT type, card_id, payload FROM audit.events WHERE batch_id = :b"),
                {"b": self.batch_id},
            )
            return [(t, None if c is None else str(c), p) for t, c, p in rows]

    async def count(self, event_type: str | None = None) -> int:
        return len([e for e in await self.events() if event_type in (None, e[0])])

    async def fulfillment(self) -> dict[str, list[str]]:
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.get(
                f"{FULFILLMENT}/v1/batches/{self.batch_id}",
                headers={"Authorization": f"Bearer {self.bureau.tokens.operator}"},
            )
        if answer.status_code != 200:
            return {}
        view: dict[str, list[str]] = answer.json()
        return view

    async def wait_started(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while await self.count("card.encoded") == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {self.batch_id}: no card encoded in {timeout} s")
            await asyncio.sleep(0.3)

    async def in_flight(self) -> bool:
        view = await self.fulfillment()
        done = len(view.get("packed", [])) + len(view.get("awaiting_destruction", []))
        return done + len(view.get("dispatched", [])) + len(view.get("destroyed", [])) < self.cards


async def recovery(batch: Batch, healed: float, timeout: float) -> float | None:
    """Seconds from the heal until every /ready is 200 and the batch moves again."""
    before = await _count_or(batch, -1)
    ready_at = moved_at = None
    while time.monotonic() - healed < timeout:
        now = time.monotonic()
        if ready_at is None and not await not_ready():
            ready_at = now
        if moved_at is None:
            count = await _count_or(batch, before)
            if before < 0 <= count:
                before = count  # the database was down when the heal came: count from now on
            elif count > before or not await _in_flight_or(batch):
                moved_at = now
        if ready_at is not None and moved_at is not None:
            return round(max(ready_at, moved_at) - healed, 1)
        await asyncio.sleep(0.2)
    return None


async def _count_or(batch: Batch, default: int) -> int:
    try:
        return await batch.count()
    except Exception:  # noqa: BLE001 (the database itself may be what is coming back)
        return default


async def _in_flight_or(batch: Batch) -> bool:
    try:
        return await batch.in_flight()
    except httpx.HTTPError:
        return True


async def settle(batch: Batch, timeout: float) -> dict[str, Any]:
    """Destroy what faults spoiled (asked by one operator, confirmed by another), then wait
    for audit to close the batch."""
    deadline = time.monotonic() + timeout
    while await batch.in_flight():
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch.batch_id}: cards still in flight after {timeout} s")
        await asyncio.sleep(1.0)
    rejects = (await batch.fulfillment()).get("awaiting_destruction", [])
    if rejects:  # dual control: one operator asks, a second confirms with their own token
        tokens = batch.bureau.tokens
        async with httpx.AsyncClient(timeout=60) as http:
            asked = await http.post(
                f"{FULFILLMENT}/v1/destructions",
                json={"card_ids": rejects},
                headers={"Authorization": f"Bearer {tokens.operator}"},
            )
            asked.raise_for_status()
            done = await http.post(
                f"{FULFILLMENT}/v1/destructions/{asked.json()['destruction_id']}/confirm",
                headers={"Authorization": f"Bearer {tokens.second_operator}"},
            )
        done.raise_for_status()
    left = max(deadline - time.monotonic(), 60.0)
    return await batch.bureau.wait_for_batch(batch.batch_id, {"closed", "held"}, timeout=left)


async def print_jobs(engine: AsyncEngine, batch_id: str) -> list[str]:
    """The cards of graphical's print jobs of the batch, one entry a job (read as the schema
    owner, through the test database URL)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT card_id FROM graphical.print_jobs WHERE batch_id = :b"), {"b": batch_id}
        )
        return [str(card_id) for (card_id,) in rows]


def printed_twice(jobs: Iterable[str], events: Iterable[tuple[str, str | None, Any]]) -> set[str]:
    """The cards printed more than once: a second print job of graphical's for one card (its
    table's unique card_id forbids it; this does not lean on that), or a second card.printed."""
    per_job = Counter(jobs)
    per_event = Counter(c for t, c, _p in events if t == "card.printed" and c is not None)
    return {c for c, n in (per_job | per_event).items() if n > 1}


async def accounting(batch: Batch, view: dict[str, Any], result: FaultResult) -> None:
    ends = await batch.fulfillment()
    ended = set(ends.get("dispatched", [])) | set(ends.get("destroyed", []))
    missing = {i for ids in view.get("missing", {}).values() for i in ids}
    result.lost = len((batch.card_ids - ended) | (missing & batch.card_ids))
    result.destroyed = len(ends.get("destroyed", []))
    if view["status"] != "closed" or view.get("problems"):
        result.problems.append(f"batch {view['status']}: {view.get('problems')}")
    events = await batch.events()
    twice = Counter((t, c) for t, c, _p in events if t in TWICE)
    doubled = {c for (t, c), n in twice.items() if n > 1}
    shipped: Counter[str] = Counter()
    for t, _c, payload in events:
        if t == "shipment.dispatched" and payload.get("kind") == "cards":
            shipped.update(str(i) for i in payload.get("card_ids", []))
    doubled |= {c for c, n in shipped.items() if n > 1}
    doubled |= printed_twice(await print_jobs(batch.engine, batch.batch_id), events)
    result.doubled = len(doubled)


async def verify_audit_log(floor: Floor, bureau: Bureau, timeout: float = 120) -> list[str]:
    """The auditors' verifier (`services.audit.verify audit`, its own process) over a checkpoint
    that covers the whole log as it is now: every entry rehashed, every batch replayed, every
    older checkpoint proved a prefix. Returns its problems."""
    headers = {"Authorization": f"Bearer {bureau.tokens.auditor}"}
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        key = (await http.get(f"{KEYMGMT}/v1/signing/audit-checkpoints/public-key")).json()
        vkey = (await http.get(f"{WITNESS_URL}/vkey")).text.strip()
        size = await _size_to_cover(http)
        deadline = time.monotonic() + timeout
        while True:
            latest = await http.get(f"{AUDIT}/v1/log/checkpoints/latest")
            if latest.status_code == 200 and int(latest.json()["tree_size"]) >= size:
                break
            if time.monotonic() > deadline:
                return [f"no checkpoint covers the log's {size} entries after {timeout} s"]
            await asyncio.sleep(1.0)
    with tempfile.TemporaryDirectory() as work:
        pem = Path(work) / "checkpoint-key.pem"
        pem.write_text(key["public_key_pem"])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.audit.verify", "--url", AUDIT,
            "--public-key", str(pem), "--witness-vkey", vkey,
            "--state", str(Path(work) / "seen.json"), "audit",
            env={**floor.env, "BUREAU_AUDITOR_TOKEN": bureau.tokens.auditor},
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    if process.returncode == 0:
        return []
    report = json.loads(out) if out.strip() else {"problems": [out[-500:].decode()]}
    problems = [p for p in report["problems"] if not await _foreign_witness(p, vkey, headers)]
    return [f"verifier exit {process.returncode}: {problems}"] if problems else []


async def _size_to_cover(http: httpx.AsyncClient) -> int:
    """The log's size less its trailing log.checkpoint entries: a checkpoint's own entry is
    logged after it was signed, and audit signs no checkpoint for checkpoint entries alone (one
    would log another, forever), so the newest checkpoint covers the log up to them."""
    size = int((await http.get(f"{AUDIT}/v1/log/tree")).json()["log_size"])
    start = max(0, size - 100)
    answer = await http.get(f"{AUDIT}/v1/log/entries", params={"start": start, "end": size})
    answer.raise_for_status()
    for entry in reversed(answer.json()["entries"]):
        if entry["type"] != "log.checkpoint":
            return int(entry["log_index"]) + 1
    return start


FOREIGN = re.compile(r"checkpoint (\d+): no valid cosignature of witness (\S+)")


async def _foreign_witness(problem: str, vkey: str, headers: dict[str, str]) -> bool:
    """A checkpoint of the shared dev stack's log cosigned by another witness key (another
    engineer's run with its own witness) does not verify with this witness's vkey; it is no
    fault of this run. Every other problem counts."""
    found = FOREIGN.fullmatch(problem)
    if found is None:
        return False
    name, key_id = vkey.split("+")[:2]
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        answer = await http.get(f"{AUDIT}/v1/log/checkpoints/{found.group(1)}")
    if answer.status_code != 200:
        return False
    lines = [line.split() for line in str(answer.json().get("note", "")).splitlines()]
    ids = [base64.b64decode(w[2])[:4].hex() for w in lines if len(w) == 3 and w[1] == name]
    return bool(ids) and key_id not in ids


async def run_fault(
    floor: Floor,
    bureau: Bureau,
    fault: Fault,
    cards: int,
    *,
    issuer: str = ISSUER,
    verify: bool = True,
) -> FaultResult:
    """Order `cards` cards, break the floor with `fault` mid-batch, heal it, and check."""
    result = FaultResult(fault.name, cards)
    engine = create_async_engine(floor.env["BUREAU_DATABASE_URL"])
    batch = Batch(floor, bureau, engine, cards, issuer)
    floor.notes = result.notes
    try:
        await batch.order(f"{issuer}-faultsuite")
        await batch.wait_started()
        offsets = log_offsets(floor)
        try:
            await fault.inject(floor)
            await asyncio.sleep(fault.hold_s)
        finally:
            await fault.heal(floor)
        healed = time.monotonic()
        if fault.outage:
            result.log_lines = lines_since(floor, offsets)
        result.recovery_s = await recovery(batch, healed, timeout=180)
        if result.recovery_s is None:
            result.problems.append(f"not recovered 180 s after the heal: {await not_ready()}")
        try:
            view = await settle(batch, timeout=240 + 2 * cards)
        except TimeoutError as exc:
            seen = await batch.bureau.reconciliation(batch.batch_id)
            result.problems.append(f"{exc}; not ready: {await not_ready()}; audit: {seen}")
            result.lost = len(batch.card_ids)  # not proven otherwise
            return result
        result.closed_s = round(time.monotonic() - healed, 1)
        await accounting(batch, view, result)
        if verify:
            result.problems += await verify_audit_log(floor, bureau)
    finally:
        await engine.dispose()
    return result


def table(results: list[FaultResult]) -> str:
    """The fault table as Markdown: fault, cards, lost, doubled, recovery s, and the most log
    lines one service wrote during an outage."""
    lines = [
        "| fault | cards | lost | doubled | destroyed | recovery s | closed s |"
        " most log lines (outage) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        loudest = max(r.log_lines.items(), key=lambda kv: kv[1]) if r.log_lines else None
        noisy = f"{loudest[1]} ({loudest[0]})" if loudest else "-"
        recovery_s = "-" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        closed_s = "-" if r.closed_s is None else f"{r.closed_s:.1f}"
        lines.append(
            f"| {r.fault} | {r.cards} | {r.lost} | {r.doubled} | {r.destroyed} | {recovery_s}"
            f" | {closed_s} | {noisy} |"
        )
    return "\n".join(lines)


__all__ = ["FEEDER", "Batch", "FaultResult", "not_ready", "run_fault", "table", "verify_audit_log"]
