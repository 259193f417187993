"""bench/pipeline: one batch (default 10,000 cards) through every stage of the bureau on the
local stack, as `make demo` runs it (every service its own process, the card feeder, pcscd +
vpcd readers, SoftHSM, Kafka, Postgres, IPP printers), against the rate the virtual devices
allow, measured in the same run before the order: the encoding readers' card swap (eject, the
next blank in and answering) and their raw APDU round trip, for the APDUs a card really took.

Prints, while it runs, cards/s per stage over the last interval; at the end JSON figures: per
stage the sustained rate and the latency from the previous stage (p50/p95, from the audit log's
event times), the end-to-end rate (ordered -> packed), each process's CPU share and peak RSS,
and the ratio of the end-to-end rate to the devices' rate; and the machine's CPU over the window
(busy cores, cores stolen by the hypervisor, the stack's daemons: PostgreSQL, Kafka, pcscd,
printers) with the machine's speed before, every interval during, and after it
(bench/machine_cpu.py): runs on this shared machine compare only at like speeds.

    .venv/bin/python -m bench.pipeline [--cards 10000] [--interval 30]

The local stack must be up (make stack-up); the bench restarts the services (services.sh) with
its own topic prefix and stops them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench import machine_cpu
from demo.client import Bureau, demo_cards
from shared.pcsc import PcscClient
from shared.pcsc.config import load_readers
from tests.conftest import REPO, load_stack_env

SERVICES = REPO / "deploy" / "local" / "services.sh"
ISSUER, PRODUCT = "bench-pipeline", "bench-debit"
FEEDER = "http://127.0.0.1:8110"
# Audit's per-card event types in stage order: each stage's latency is from the one before.
STAGES = (
    ("ordered", "card.ordered"),
    ("prepared", "card.prepared"),
    ("encoded", "card.encoded"),
    ("printed", "card.printed"),
    ("qa_passed", "card.qa_passed"),
    ("packed", "card.packed"),
)
GET_CPLC = bytes.fromhex("80CA9F7F00")
SELECT_ISD = bytes.fromhex("00A4040000")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run(*argv: str, env: dict[str, str], timeout: float) -> None:
    subprocess.run(argv, env=env, cwd=REPO, check=True, timeout=timeout)


async def chip_serial(pcsc: PcscClient, reader: str) -> bytes | None:
    try:
        conn = await pcsc.connect(reader)
    except Exception:  # noqa: BLE001 (no card yet: the swap is not done)
        return None
    try:
        data, sw = await conn.transmit(GET_CPLC)
        return data if sw == 0x9000 else None
    except Exception:  # noqa: BLE001 (the card left under us)
        return None
    finally:
        await conn.disconnect("leave")


async def device_baseline(swaps: int, apdus: int) -> dict[str, Any]:
    """Per hopper reader: seconds per card swap (eject until a different chip answers) and per
    raw APDU round trip. The station agent leaves readers alone while its queue is empty."""
    async with httpx.AsyncClient(base_url=FEEDER, timeout=10) as feeder:
        modes = (await feeder.get("/readers")).json()["readers"]
        hopper = [(r["name"], r["port"]) for r in modes if r["mode"] == "hopper"]
        pcsc = PcscClient()
        swap_s: list[float] = []
        rtt_s: list[float] = []
        swaps_seen: list[dict[str, Any]] = []
        for reader, port in hopper:
            conn = await pcsc.connect(reader)
            started = time.perf_counter()
            for _ in range(apdus):
                await conn.transmit(SELECT_ISD)
            rtt_s.append((time.perf_counter() - started) / apdus)
            await conn.disconnect("leave")
            for _ in range(swaps):
                before = await chip_serial(pcsc, reader)
                started = time.perf_counter()
                ejected = await feeder.post(f"/readers/{port}/eject", json={"refill": True})
                ejected.raise_for_status()
                swaps_seen.append(ejected.json())
                while await chip_serial(pcsc, reader) in (None, before):
                    await asyncio.sleep(0.01)
                swap_s.append(time.perf_counter() - started)
        qa_swap_s = await qa_swaps(feeder, pcsc, modes, ejected_serials(swaps_seen))
        await pcsc.aclose()
    return {
        "hopper_readers_measured": len(hopper),
        "swap_s": round(statistics.median(swap_s), 4),
        "apdu_rtt_s": round(statistics.median(rtt_s), 6),
        "qa_readers": sum(1 for r in modes if r["mode"] == "manual"),
        "qa_swap_s": round(statistics.median(qa_swap_s), 4) if qa_swap_s else None,
    }


async def fill_icc_pool(bureau: Bureau, cards: int, step: int = 100) -> dict[str, Any]:
    """Every card of the batch draws an ICC key pair from keymgmt's pool: generate what the
    pool lacks before the order (SoftHSM's RSA key generation, outside the timed run: a bureau
    generates its pools ahead of the batches), in steps that each answer well within a minute,
    and say how fast the HSM made them."""
    async with httpx.AsyncClient(
        base_url=bureau.urls.keymgmt,
        headers={"Authorization": f"Bearer {bureau.tokens.admin}"},
        timeout=300,
    ) as keymgmt:
        free = int((await keymgmt.get("/v1/icc-pool")).raise_for_status().json()["free"])
        made, started = 0, time.perf_counter()
        while free < cards:
            count = min(step, cards - free)
            answer = await keymgmt.post("/v1/icc-pool/refill", json={"count": count})
            free = int(answer.raise_for_status().json()["free"])
            made += count
            say(json.dumps({"icc_pool_free": free, "needed": cards}))
        seconds = time.perf_counter() - started
    return {
        "pairs_generated": made,
        "pairs_per_s": round(made / seconds, 2) if made else None,
        "free_before_order": free,
    }


def ejected_serials(swaps: list[dict[str, Any]]) -> list[str]:
    return [str(s["ejected"]) for s in swaps if s.get("ejected")]


async def qa_swaps(
    feeder: httpx.AsyncClient, pcsc: PcscClient, modes: list[dict[str, Any]], serials: list[str]
) -> list[float]:
    """Per QA (manual) reader: seconds from the feeder inserting a card by chip serial until it
    answers, plus from its eject until the reader is seen empty, with cards the hopper swaps
    ejected (a card QA checks moves the same way)."""
    seconds: list[float] = []
    qa = [(r["name"], r["port"]) for r in modes if r["mode"] == "manual"]
    for (reader, port), serial in zip(qa, serials, strict=False):
        started = time.perf_counter()
        answer = await feeder.post(f"/readers/{port}/insert", json={"chip_serial": serial})
        answer.raise_for_status()
        while await chip_serial(pcsc, reader) is None:
            await asyncio.sleep(0.01)
        (await feeder.post(f"/readers/{port}/eject", json={})).raise_for_status()
        while (await pcsc.status(reader)).present:
            await asyncio.sleep(0.01)
        seconds.append(time.perf_counter() - started)
    return seconds


def proc_times(run_dir: Path) -> dict[str, tuple[float, int]]:
    """Per process: CPU seconds so far and peak RSS (bytes), from /proc."""
    found: dict[str, tuple[float, int]] = {}
    for pid_file in sorted((run_dir / "pids").glob("*.pid")):
        if pid_file.name.endswith(".keeper.pid"):
            continue  # the bash loop restarting the service: no work of its own
        pid = pid_file.read_text().strip()
        cpu = machine_cpu.process_cpu(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if cpu is None:
            continue
        hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        found[pid_file.stem] = (cpu[1], hwm * 1024)
    return found


async def stage_times(database_url: str, batch_id: str) -> dict[str, dict[str, float]]:
    """card id -> stage -> event time (epoch seconds), from the audit log."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT card_id, type, extract(epoch FROM occurred_at) FROM audit.events"
                    " WHERE batch_id = :b AND card_id IS NOT NULL"
                ),
                {"b": batch_id},
            )
            names = {event_type: stage for stage, event_type in STAGES}
            cards: dict[str, dict[str, float]] = {}
            for card_id, event_type, at in rows:
                if event_type in names:
                    cards.setdefault(str(card_id), {})[names[event_type]] = float(at)
            return cards
    finally:
        await engine.dispose()


async def station_work(database_url: str, batch_id: str) -> tuple[float, int]:
    """APDUs per encoded card, and how many readers encoded the batch's cards."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT avg(apdu_count), count(DISTINCT reader)"
                        " FROM electrical.station_cards WHERE batch_id = :b AND state = 'encoded'"
                    ),
                    {"b": batch_id},
                )
            ).one()
            return float(row[0] or 0), int(row[1])
    finally:
        await engine.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def stage_figures(cards: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    for (before, _), (stage, _) in zip(STAGES, STAGES[1:], strict=False):
        times = [c[stage] for c in cards.values() if stage in c]
        waits = [c[stage] - c[before] for c in cards.values() if stage in c and before in c]
        span = (max(times) - min(times)) if len(times) > 1 else 0.0
        figures[stage] = {
            "cards": len(times),
            "cards_per_s": round(len(times) / span, 2) if span else 0.0,
            "latency_p50_s": round(percentile(waits, 0.50), 2),
            "latency_p95_s": round(percentile(waits, 0.95), 2),
        }
    return figures


async def follow(
    bureau: Bureau, batch: str, cards: int, interval: float
) -> tuple[dict[str, Any], list[float]]:
    """Print each stage's rate over the last interval, and the machine's speed then, until the
    batch closes (or is held). Returns the last view and the speeds taken."""
    last: dict[str, int] = {}
    speeds: list[float] = []
    last_t = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        view = await bureau.reconciliation(batch) or {"status": "unknown", "counts": {}}
        counts = {k: v for k, v in view.get("counts", {}).items() if isinstance(v, int)}
        now = time.monotonic()
        rates = {
            stage: round((counts.get(stage, 0) - last.get(stage, 0)) / (now - last_t), 2)
            for stage, _ in STAGES[1:]
        }
        speeds.append(machine_cpu.speed(0.15))
        say(
            json.dumps(
                {"status": view["status"], "counts": counts, "per_s": rates, "speed": speeds[-1]}
            )
        )
        last, last_t = counts, now
        if view["status"] in ("closed", "held"):
            return view, speeds


PCSCD = REPO / "deploy" / "local" / "pcscd.sh"
FLOOR_CHANNEL = 0x9C7B  # the private floor's first vpcd channel (the stack's are 0x8C7B...)


def private_floor(env: dict[str, str], readers: int, station_readers: int) -> dict[str, str]:
    """Start a private pcscd with `readers` vpcd readers (beside the stack's, which keeps its
    six), and point services.sh's floor and this process's PC/SC client at it. Returns the
    environment that stops it again (pcscd.sh down)."""
    channels = (readers + 1) // 2
    floor = {
        **env,
        "BUREAU_RUN_DIR": str(Path(env["BUREAU_RUN_DIR"]) / "bench-floor"),
        "BUREAU_VPCD_CHANNELS": " ".join(hex(FLOOR_CHANNEL + 2 * i) for i in range(channels)),
    }
    floor.pop("PCSCLITE_CSOCK_NAME", None)
    run("bash", str(PCSCD), "up", env=floor, timeout=60)
    readers_json = Path(floor["BUREAU_RUN_DIR"]) / "pcsc" / "readers.json"
    socket = json.loads(readers_json.read_text())[0]["pcsc_socket"]
    env["BUREAU_FLOOR_PCSC_READERS"] = env["BUREAU_PCSC_READERS"] = str(readers_json)
    env["BUREAU_FLOOR_STATION_READERS"] = str(station_readers)
    # libpcsclite reads the socket once, at this process's first context: before any.
    env["PCSCLITE_CSOCK_NAME"] = os.environ["PCSCLITE_CSOCK_NAME"] = socket
    return floor


async def bench(cards: int, interval: float, readers: int, station_readers: int) -> dict[str, Any]:
    env = {**os.environ, **load_stack_env()}
    env["BUREAU_TOPIC_PREFIX"] = f"bench{os.getpid()}"
    run_dir = Path(env["BUREAU_RUN_DIR"])
    run("bash", str(SERVICES), "down", env=env, timeout=120)
    floor = private_floor(env, readers, station_readers) if readers else None
    try:
        return await bench_on_floor(env, run_dir, cards, interval)
    finally:
        if floor is not None:
            run("bash", str(PCSCD), "down", env=floor, timeout=60)


async def bench_on_floor(
    env: dict[str, str], run_dir: Path, cards: int, interval: float
) -> dict[str, Any]:
    run(
        sys.executable,
        "-m",
        "services.keymgmt",
        "ceremony",
        "demo-keys",
        "--issuer",
        ISSUER,
        "--emv",
        env=env,
        timeout=300,
    )  # fmt: skip  (the demo product is an EMV profile's)
    run("bash", str(SERVICES), "down", env=env, timeout=120)
    run("bash", str(SERVICES), "up", env=env, timeout=300)
    try:
        load_readers(env["BUREAU_PCSC_READERS"])
        devices = await device_baseline(swaps=5, apdus=200)
        bureau = Bureau()
        token = await bureau.onboard_issuer(ISSUER, "Bench Bank", PRODUCT, cards=1)
        devices["icc_pool"] = await fill_icc_pool(bureau, cards)
        await bureau.receive_stock(ISSUER, PRODUCT, cards)
        speed_before = machine_cpu.speed()
        cpu_before, machine_before = proc_times(run_dir), machine_cpu.sample(run_dir)
        started = time.monotonic()
        order = await bureau.post_order(token, PRODUCT, demo_cards(cards, seed=cards))
        batch = str(order["batch_id"])
        view, speeds = await follow(bureau, batch, cards, interval)
        wall = time.monotonic() - started
        cpu_after, machine_after = proc_times(run_dir), machine_cpu.sample(run_dir)
        speed_after = machine_cpu.speed()
        per_card = await stage_times(env["BUREAU_DATABASE_URL"], batch)
        apdus, readers = await station_work(env["BUREAU_DATABASE_URL"], batch)
    finally:
        run("bash", str(SERVICES), "down", env=env, timeout=120)
    stages = stage_figures(per_card)
    firsts = [c["ordered"] for c in per_card.values() if "ordered" in c]
    lasts = [c["packed"] for c in per_card.values() if "packed" in c]
    end_to_end = len(lasts) / (max(lasts) - min(firsts)) if lasts and firsts else 0.0
    devices |= {"station_readers": readers, "apdus_per_card": round(apdus, 1)}
    device_rate = devices_rate(devices, readers, apdus)
    cpu = {
        name: round((cpu_after[name][0] - cpu_before.get(name, (0.0, 0))[0]) / wall, 3)
        for name in cpu_after
    }
    return {
        "cards": cards,
        "batch_status": view["status"],
        "wall_s": round(wall, 1),
        "stages": stages,
        "end_to_end_cards_per_s": round(end_to_end, 2),
        "devices": devices,
        "devices_cards_per_s": round(device_rate, 2),
        "ratio_end_to_end_to_devices": round(end_to_end / device_rate, 3) if device_rate else 0,
        "cpu_share_per_process": cpu,
        "busiest_process": max(cpu, key=lambda name: cpu[name]) if cpu else None,
        "machine": machine_cpu.shares(machine_before, machine_after, wall)
        | {
            "speed_ops_per_s": {
                "before": speed_before,
                "during_min": min(speeds, default=0.0),
                "during_median": statistics.median(speeds) if speeds else 0.0,
                "after": speed_after,
            }
        },
        "limiting_stage": limiting_stage(stages),
        "peak_rss_mib": {name: round(v[1] / 2**20, 1) for name, v in cpu_after.items()},
    }


def devices_rate(devices: dict[str, Any], station_readers: int, apdus: float) -> float:
    """Cards/s the virtual devices allow: the slower of the encoding readers (card swap plus
    the card's APDU round trips) and the QA readers (insert and eject; QA's APDUs left out, so
    an upper bound of the QA devices' rate)."""
    encoding = station_readers / (devices["swap_s"] + apdus * devices["apdu_rtt_s"])
    if not devices.get("qa_swap_s"):
        return float(encoding)
    return float(min(encoding, devices["qa_readers"] / devices["qa_swap_s"]))


def limiting_stage(stages: dict[str, dict[str, float]]) -> str | None:
    """The first stage (in floor order) whose rate is the batch's lowest: every stage after it
    can only go as fast as it does."""
    rated = [(figures["cards_per_s"], name) for name, figures in stages.items()]
    if not rated:
        return None
    slowest = min(rate for rate, _ in rated)
    return next(name for rate, name in rated if rate <= slowest * 1.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between rate lines")
    parser.add_argument(
        "--readers",
        type=int,
        default=0,
        help="run the floor on a private pcscd with this many vpcd readers (default: the"
        " stack's six: four encoding, two QA)",
    )
    parser.add_argument(
        "--station-readers", type=int, default=4, help="of those, the encoding station's"
    )
    args = parser.parse_args()
    if args.readers and not 0 < args.station_readers < args.readers:
        parser.error("--station-readers must leave at least one QA reader")
    figures = bench(args.cards, args.interval, args.readers, args.station_readers)
    say(json.dumps(asyncio.run(figures), indent=2))


if __name__ == "__main__":
    main()
