"""bench/keymgmt_memory: keymgmt's memory per card under load (issue 17, "memory and state stay
bounded"). One keymgmt runs in this process (its ServiceRuntime: consumer, outbox relay, HSM
keeper, ICC pool refiller; its ASGI app) on the shared stack's Postgres, Kafka and SoftHSM, and
the bench plays every other service for N cards of a full-profile EMV product
(demo/emv_product.py), in batches:

  intake       POST /v1/vault/cards, then card.ordered on Kafka; keymgmt prepares each card
               (PIN blocks, CVVs, an ICC pair from the pool) and emits card.prepared
  station      SELECT + INITIALIZE UPDATE on a virtual chip (vcard), POST
               /v1/perso/secure-scripts, the SCP03 script run on the chip
  graphical    GET /v1/vault/cards/{id}/print-data (CVV2 computed in the HSM)
  QA           the chip's AFL records -> POST /v1/qa/readback; GENERATE AC -> POST /v1/arqc/verify
  fulfillment  GET /v1/vault/cards/{id}/mailing, and (--pin-mailers) POST /v1/pin-mailers on a
               private IPPS printer (ippeveprinter) of the bench's own

The process' RSS (VmRSS) is sampled after every batch and, with --trace, the Python heap
(tracemalloc, --frames deep) is snapshotted after the warm-up batches and at the end. Printed
(JSON): RSS growth per 1,000 cards over the measured window against the first half of that
window (a leak grows both halves alike; a warm-up settles in the first), the Python heap's own
growth per 1,000 cards (what tracemalloc sees; RSS growing beyond it is C memory: SoftHSM,
OpenSSL, the allocator), and the allocation sites that grew most, by traceback.

    source /work/main/.run/env.sh
    .venv/bin/python -m bench.keymgmt_memory [--cards 600] [--batch 50] [--trace] [--pin-mailers]

Compare MALLOC_ARENA_MAX=2 (glibc arenas per thread) by running it again with that variable set.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from sqlalchemy import text

from bench.dataprep import drop_keymgmt_run
from demo.emv_product import set_up_emv_product
from services.keymgmt.app import bootstrap, build_app
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.pan import luhn_check_digit
from shared.service import ServiceRuntime
from tests.conftest import load_stack_env, running
from tests.support.bus import publish_events
from tests.support.memory import malloc_held, malloc_in_use
from tests.support.perso_chip import new_chip, personalize, read_records
from tests.support.printer import TestPrinter
from tests.support.tls import TestCa
from vcard.card import VirtualCard
from vcard.store import CardStore

CDOL1 = bytes.fromhex("00000000100000000000000008260000008000097825112400") + bytes.fromhex(
    "3804823E"
)  # amount, country, TVR, currency, date, type, UN (EMV Book 3 CDOL1 of the profile)
ADDRESS = {"lines": ["1 Bench Road"], "postcode": "B1 1BB", "city": "Bench", "country": "GB"}
BIN = "476173"
REPO = Path(__file__).resolve().parent.parent


def settings_for(tag: str) -> KeymgmtSettings:
    """A keymgmt of the bench's own: topic prefix, schema and key labels named by `tag`; the
    callers' tokens are the bench's (nothing here is a production secret)."""
    return KeymgmtSettings(
        environment="test",
        topic_prefix=f"km{tag}",
        keymgmt_schema=f"keymgmt_km{tag}",
        vault_key_label=f"km{tag}/VAULT/1",
        pan_hash_key_label=f"km{tag}/PANHASH/1",
        kmc_label=f"km{tag}/KMC/1",
        service_tokens=f"intake=in-{tag},graphical=gr-{tag},fulfillment=fu-{tag},qa=qa-{tag}",
        principals=f"custodian:carol=cu-{tag},station:station-a=st-{tag}",
        perso_stations="station-a",
        icc_pool_low=20,
        icc_pool_target=60,
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def pan_of(i: int) -> str:
    body = f"{BIN}{i:09d}"
    return body + luhn_check_digit(body)


def malloc_kib() -> tuple[int, int]:
    """glibc malloc's bytes in use and bytes held from the system (KiB): what C code (SoftHSM,
    OpenSSL, CPython's larger objects) holds, and the heap it holds it in. In use flat while
    held grows is fragmentation; both growing, C memory kept."""
    return malloc_in_use() // 1024, malloc_held() // 1024


def type_counts() -> Counter[str]:
    """Live objects the garbage collector tracks, by type (module.qualname)."""
    gc.collect()
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


_CONTAINERS = (dict, list, set, deque)


def container_sizes() -> dict[int, int]:
    """len() of every container the collector tracks, by id (to find one that grows)."""
    return {id(o): len(o) for o in gc.get_objects() if isinstance(o, _CONTAINERS)}


def grown_containers(before: dict[int, int], top: int = 6) -> list[str]:
    """The containers alive at both snapshots whose len() grew most, each named by where it
    hangs: the attribute or key holding it and the type that holds it."""
    alive = {id(o): o for o in gc.get_objects() if isinstance(o, _CONTAINERS)}
    growth = sorted(
        ((len(o) - before[i], i) for i, o in alive.items() if i in before), reverse=True
    )[:top]
    return [f"+{n} {_held_by(alive[i])}" for n, i in growth if n > 0]


def _held_by(obj: object) -> str:
    kind = type(obj).__qualname__
    for ref in gc.get_referrers(obj):
        if isinstance(ref, dict):
            keys = [k for k, v in ref.items() if v is obj]
            owners = [type(o).__qualname__ for o in gc.get_referrers(ref) if not _is_frame(o)]
            return f"{kind} at key {keys[:1]} of a dict held by {owners[:3]}"
        if not _is_frame(ref):
            return f"{kind} held by {type(ref).__qualname__}"
    return kind


def _is_frame(obj: object) -> bool:
    return type(obj).__name__ in ("frame", "list", "generator", "coroutine")


def rss_kib() -> int:
    """The process' resident set (VmRSS, KiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class Bench:
    """The other services' side of N cards through one in-process keymgmt."""

    def __init__(
        self, tag: str, http: httpx.AsyncClient, runtime: ServiceRuntime, chips: Path
    ) -> None:
        self.tag, self.http, self.engine = tag, http, runtime.engine
        self.hsm: Hsm = runtime.deps.gate.get()
        self.settings = settings_for(tag)
        self.issuer = f"km{tag}"
        self.store = CardStore(chips)
        self.done = 0
        self.pin_mailers = False

    async def batch(self, count: int) -> None:
        cards = await self._vault(count)
        batch_id = uuid.uuid4()
        ordered = [self._ordered(card, batch_id, seq) for seq, card in enumerate(cards)]
        await publish_events(self.settings, *(("intake", e) for e in ordered))
        await self._wait_prepared(self.done + count)
        for card in cards:
            await self._card(card, batch_id)
        self.done += count

    async def _vault(self, count: int) -> list[dict[str, Any]]:
        cards = [
            {"card_id": str(uuid.uuid4()), "pan": pan_of(self.done + i), "psn": "01"}
            | {"expiry": "2812", "cardholder_name": "BENCH/CARD", "address": ADDRESS}
            for i in range(count)
        ]
        answer = await self.http.post(
            "/v1/vault/cards",
            json={"issuer_id": self.issuer, "cards": cards},
            headers=auth(f"in-{self.tag}"),
        )
        _ok("vault", answer)
        return [c | v for c, v in zip(cards, answer.json()["cards"], strict=True)]

    def _ordered(self, card: dict[str, Any], batch_id: uuid.UUID, seq: int) -> events.Event:
        return events.CardOrdered(
            issuer_id=self.issuer, actor="intake", card_id=uuid.UUID(card["card_id"]),
            order_id=batch_id, batch_id=batch_id, product_id="visa-classic",
            pan_token=card["pan_token"], masked_pan=card["masked_pan"], expiry="2812",
            sequence=seq,
        )  # fmt: skip

    async def _wait_prepared(self, total: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with self.engine.connect() as conn:
                query = text("SELECT count(*) FROM prepared_cards")
                if int((await conn.execute(query)).scalar_one()) >= total:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"keymgmt did not prepare {total} cards within 120 s")

    async def _card(self, card: dict[str, Any], batch_id: uuid.UUID) -> None:
        card_id, tag = card["card_id"], self.tag
        chip = new_chip(self.store)
        await personalize(self.http, f"st-{tag}", card_id, chip)
        face = await self.http.get(
            f"/v1/vault/cards/{card_id}/print-data", headers=auth(f"gr-{tag}")
        )
        _ok("print-data", face)
        records = read_records(chip)
        body = {"card_id": card_id, "chip_serial": chip.chip_serial, "qa_station": "qa-1"}
        readback = await self.http.post(
            "/v1/qa/readback", json=body | {"records": records}, headers=auth(f"qa-{tag}")
        )
        if _ok("readback", readback) != {"ok": True, "problems": []}:
            raise RuntimeError(f"readback of card {card_id}: {readback.text}")
        await self._arqc(card_id, chip)
        fu = auth(f"fu-{tag}")
        _ok("mailing", await self.http.get(f"/v1/vault/cards/{card_id}/mailing", headers=fu))
        if self.pin_mailers:
            body = {"card_id": card_id, "batch_id": str(batch_id)}
            _ok("pin mailer", await self.http.post("/v1/pin-mailers", json=body, headers=fu))

    async def _arqc(self, card_id: str, chip: VirtualCard) -> None:
        response = chip.process(bytes.fromhex("80AE80001D") + CDOL1 + b"\x00")
        atc, arqc = response[3:5].hex(), response[5:13].hex()
        body = {"card_id": card_id, "cdol1": CDOL1.hex(), "atc": atc, "arqc": arqc}
        verified = await self.http.post(
            "/v1/arqc/verify", json=body, headers=auth(f"qa-{self.tag}")
        )
        if _ok("arqc", verified) != {"ok": True}:
            raise RuntimeError(f"ARQC of card {card_id} did not verify: {verified.text}")


def _ok(step: str, answer: httpx.Response) -> Any:
    if answer.status_code != 200:
        raise RuntimeError(f"{step}: keymgmt answered {answer.status_code}: {answer.text}")
    return answer.json()


@asynccontextmanager
async def pin_printer(home: Path, wanted: bool) -> AsyncIterator[None]:
    """A private IPPS PIN printer (the stack's own is shared: its spool is not the bench's)."""
    if not wanted:
        yield
        return
    ca = TestCa.create(home / "pin-ca")
    ca.issue(home / "pin-keys")
    device = TestPrinter(home / "pin-printer", name="bench-pin", tls_keys=home / "pin-keys")
    device.start()
    os.environ["BUREAU_PIN_PRINTER_URI"] = device.uri
    os.environ["BUREAU_PIN_PRINTER_CA"] = str(ca.cert_file)
    try:
        await device.wait_up()
        yield
    finally:
        device.stop()


def _where(frame: tracemalloc.Frame) -> str:
    """A frame as package/module.py:line (site-packages and the repository's prefix dropped)."""
    path = frame.filename.split("site-packages/")[-1].removeprefix(str(REPO) + "/")
    return f"{path}:{frame.lineno}"


def top_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> list[str]:
    """The allocation sites that grew most between the snapshots, by traceback (innermost
    frame first)."""
    lines = []
    ours = tracemalloc.Filter(False, __file__)  # the bench's own samples
    before, after = before.filter_traces([ours]), after.filter_traces([ours])
    for stat in after.compare_to(before, "traceback")[:15]:
        frames = " < ".join(_where(f) for f in reversed(stat.traceback))
        lines.append(f"{stat.size_diff / 1024:+.0f} KiB {stat.count_diff:+d} blocks: {frames}")
    return lines


async def drive(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    try:
        return await _drive(tag, args, home)
    finally:
        await cleanup(tag)


async def _drive(tag: str, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    async with pin_printer(home, args.pin_mailers):
        settings = settings_for(tag)
        await load_demo_keys(settings, f"km{tag}", emv=True)
        runtime = bootstrap(settings)
        async with running(runtime):
            transport = httpx.ASGITransport(app=build_app(runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://keymgmt") as http:
                while runtime.deps.gate.hsm is None:
                    await asyncio.sleep(0.1)
                await set_up_emv_product(
                    http, f"km{tag}", "visa-classic", bin_=BIN, pairs=args.batch,
                    headers=auth(f"cu-{tag}"),
                )  # fmt: skip
                bench = Bench(tag, http, runtime, home / "chips")
                bench.pin_mailers = args.pin_mailers
                return await measure(bench, args)


async def measure(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    for _ in range(args.warmup):
        await bench.batch(args.batch)
    types_before, sizes_before = type_counts(), container_sizes()
    if args.trace:  # after the bench's own bookkeeping, which it must not count
        tracemalloc.start(args.frames)
    first = tracemalloc.take_snapshot() if args.trace else None
    samples = [await sample(bench)]
    started = time.monotonic()
    while bench.done < args.warmup * args.batch + args.cards:
        await bench.batch(args.batch)
        samples.append(await sample(bench))
    elapsed = time.monotonic() - started
    figures = summarise(samples, args.cards / elapsed)
    grown = (type_counts() - types_before).most_common(12)
    figures["live_objects_grown_by_type"] = [f"+{n} {name}" for name, n in grown]
    figures["containers_grown"] = grown_containers(sizes_before)
    figures["hsm_library_recycles"] = bench.hsm.recycles
    if first is not None:
        figures["python_heap_top_growth"] = top_growth(first, tracemalloc.take_snapshot())
    return figures


def _objects(hsm: Hsm) -> int:
    return hsm.count_objects()


async def sample(bench: Bench) -> Sample:
    """Cards done, RSS (KiB), traced Python heap (bytes), PKCS#11 objects the session sees."""
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    used, held = malloc_kib()
    objects = await bench.hsm.call(_objects)
    return Sample(bench.done, rss_kib(), traced, objects, used, held, sys.getallocatedblocks())


class Sample(NamedTuple):
    cards: int
    rss_kib: int
    traced_bytes: int
    hsm_objects: int
    malloc_used_kib: int
    malloc_held_kib: int
    python_blocks: int


def per_1000(a: Sample, b: Sample, at: int) -> float:
    return round((b[at] - a[at]) / 1024 / (b.cards - a.cards) * 1000, 2)


def summarise(samples: list[Sample], rate: float) -> dict[str, Any]:
    start, middle, end = samples[0], samples[len(samples) // 2], samples[-1]
    figures: dict[str, Any] = {
        "cards": end[0] - start[0],
        "cards_per_s": round(rate, 2),
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX", "unset"),
        "rss_mib_at_start": round(start[1] / 1024, 1),
        "rss_mib_at_end": round(end[1] / 1024, 1),
        "rss_mib_per_1000_cards": per_1000(start, end, 1),
        "rss_mib_per_1000_cards_first_half": per_1000(start, middle, 1),
        "rss_mib_per_1000_cards_second_half": per_1000(middle, end, 1),
        "rss_mib_samples": [(s.cards, round(s.rss_kib / 1024, 1)) for s in samples],
        "malloc_used_mib_per_1000_cards": per_1000(start, end, 4),
        "malloc_held_mib_per_1000_cards": per_1000(start, end, 5),
        "python_blocks_per_card": round(
            (end.python_blocks - start.python_blocks) / (end.cards - start.cards), 1
        ),
        "hsm_objects_at_start": start.hsm_objects,
        "hsm_objects_at_end": end.hsm_objects,
    }
    if end.traced_bytes:
        figures["python_heap_mib_per_1000_cards"] = round(per_1000(start, end, 2) / 1024, 2)
    return figures


async def cleanup(tag: str) -> None:
    """Drop the bench keymgmt's schema and destroy its keys on the dev token."""
    await drop_keymgmt_run(settings_for(tag), f"km{tag}/")


def compare(argv: list[str]) -> None:
    """The baseline and the setting as configured, one process each; the ratio of their RSS
    growth per 1,000 cards."""
    own = [a for a in argv if a != "--compare"]
    runs = {}
    for name, extra in (("baseline_never_reinitialized", {"BUREAU_HSM_RECYCLE_CALLS": "0"}),
                        ("as_configured", {})):  # fmt: skip
        child = subprocess.run(
            [sys.executable, "-m", "bench.keymgmt_memory", *own],
            env=os.environ | extra, capture_output=True, text=True, check=True,
        )  # fmt: skip
        runs[name] = json.loads(child.stdout)
    keys = ("rss_mib_per_1000_cards", "malloc_used_mib_per_1000_cards")
    summary: dict[str, Any] = {k: {n: r[k] for n, r in runs.items()} for k in keys}
    base, now = (runs[n]["rss_mib_per_1000_cards"] for n in runs)
    summary["rss_growth_ratio_to_baseline"] = round(now / base, 2) if base else None
    summary["runs"] = runs
    print(json.dumps(summary, indent=2))  # noqa: T201 - a benchmark prints its figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cards", type=int, default=600, help="cards measured after warm-up")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=2, help="batches before measuring")
    parser.add_argument("--trace", action="store_true", help="tracemalloc snapshots (slower)")
    parser.add_argument("--frames", type=int, default=6, help="traceback depth with --trace")
    parser.add_argument("--pin-mailers", action="store_true")
    parser.add_argument(
        "--compare", action="store_true",
        help="run twice, each in its own process: keymgmt never re-initializing the PKCS#11 "
        "library (BUREAU_HSM_RECYCLE_CALLS=0, the old behaviour: the baseline), then as set",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.update({k: v for k, v in load_stack_env().items() if k not in os.environ})
    if args.compare:
        compare(sys.argv[1:])
        return
    with tempfile.TemporaryDirectory(prefix="bench-kmem-") as home:
        figures = asyncio.run(drive(args, Path(home)))
    print(json.dumps(figures, indent=2))  # noqa: T201 - a benchmark prints its figures


if __name__ == "__main__":
    main()
