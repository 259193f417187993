"""bench/audit: the tamper-evident log's costs, in one run on the local stack's Postgres.

1. Appends: events/s through the real append path (hash chain, one transaction per consumer
   batch) plus Merkle tree maintenance, against a raw INSERT of the same rows into a table of
   the same shape (same indexes, no chain, no tree, no trigger), both batched (executemany)
   and one statement per row as the consumer's per-event handlers must; and the ratios.
2. Checkpoints (bench/audit_cosign.py): the same append path with a checkpoint after every
   consumer batch, signed by keymgmt (real endpoint and SoftHSM key, in process) alone, and
   signed by keymgmt and cosigned by the witness (its own process), against no checkpoint.
3. A log of --size entries (default 1,000,000) filled by COPY with a valid chain, the tree
   built over it by the service's builder (leaves/s), then at that size: inclusion and
   consistency proof generation (from Postgres) and verification, p50/p99 in ms; and the
   auditor query by card id (the API's SQL), p50/p99 in ms.

    .venv/bin/python -m bench.audit [--size 1000000] [--append 20000] [--samples 500]
        [--cosign 10000] [--only-cosign]

Prints JSON. Runs in a private schema, dropped afterwards (--keep to look at it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text

from bench.audit_cosign import measure_cosigning
from services.audit.chain import canonical_json, chain_hash, event_document, leaf_hash
from services.audit.log_repository import EventLog, EventQuery
from services.audit.merkle import (
    consistency_ranges,
    inclusion_ranges,
    verify_consistency,
    verify_inclusion,
)
from services.audit.tree_repository import MerkleStore, build_tree
from shared import events
from shared.db import make_engine, migrate
from shared.settings import BureauSettings
from tests.conftest import load_stack_env

MIGRATIONS = Path(__file__).resolve().parent.parent / "services" / "audit" / "migrations"
BATCH = 500  # events per transaction, like one fetched consumer batch
EVENTS_PER_CARD = 8
COLUMNS = (
    "log_index", "event_id", "type", "version", "issuer_id", "actor", "occurred_at", "card_id",
    "batch_id", "order_id", "payload", "leaf_hash", "prev_hash", "entry_hash",
)  # fmt: skip


def progress(message: str) -> None:
    print(f"[bench.audit] {message}", file=sys.stderr, flush=True)  # noqa: T201


def ms_percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


def contract_events(count: int) -> list[events.Event]:
    batch_id = uuid.uuid4()
    return [
        events.CardEncoded(
            issuer_id="bank-a",
            actor="station:bench",
            card_id=uuid.uuid4(),
            batch_id=batch_id,
            chip_serial=f"{i:012X}",
            station_id="station-bench",
            reader="reader-0",
            apdu_count=12,
        )
        for i in range(count)
    ]


def row_of(event: events.Event, index: int, prev: str) -> tuple[Any, ...]:
    document = event_document(event)
    leaf = leaf_hash(document)
    return (
        index, event.event_id, event.type, event.version, event.issuer_id, event.actor,
        event.occurred_at, getattr(event, "card_id", None), getattr(event, "batch_id", None),
        None, json.dumps(document), leaf, prev, chain_hash(prev, leaf),
    )  # fmt: skip


async def measure_appends(engine: Any, schema: str, count: int) -> dict[str, Any]:
    batch = contract_events(count)
    rows, prev = [], "0" * 64
    for i, event in enumerate(batch):
        rows.append(row_of(event, i, prev))
        prev = rows[-1][-1]
    placeholders = ", ".join(f":{c}" for c in COLUMNS).replace(
        ":payload", "CAST(:payload AS jsonb)"
    )
    insert = text(f"INSERT INTO raw_events ({', '.join(COLUMNS)}) VALUES ({placeholders})")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE raw_events (LIKE events INCLUDING ALL)"))
    start = time.perf_counter()
    for i in range(0, count, BATCH):
        async with engine.begin() as conn:
            await conn.execute(
                insert, [dict(zip(COLUMNS, r, strict=True)) for r in rows[i : i + BATCH]]
            )
    raw = time.perf_counter() - start
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE raw_events"))
    start = time.perf_counter()
    for i in range(0, count, BATCH):  # one statement per row, as a consumer handler does
        async with engine.begin() as conn:
            for r in rows[i : i + BATCH]:
                await conn.execute(insert, dict(zip(COLUMNS, r, strict=True)))
    raw_rows = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(0, count, BATCH):
        async with engine.begin() as conn:
            log = EventLog(conn, schema)
            for event in batch[i : i + BATCH]:
                await log.append_event(event)
    appended = time.perf_counter() - start
    start = time.perf_counter()
    assert await build_tree(engine, schema) == count
    tree = time.perf_counter() - start
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE raw_events"))
    return {
        "events": count,
        "raw_insert_events_per_s": round(count / raw),
        "raw_insert_row_by_row_events_per_s": round(count / raw_rows),
        "append_with_chain_and_tree_events_per_s": round(count / (appended + tree)),
        "ratio_append_to_raw": round((count / (appended + tree)) / (count / raw), 3),
        "ratio_append_to_raw_row_by_row": round(raw_rows / (appended + tree), 3),
        "tree_share_of_append_time": round(tree / (appended + tree), 3),
    }


async def fill(dsn: str, schema: str, start: int, size: int, prev: str) -> tuple[int, list[str]]:
    """COPY synthetic card events with a valid chain up to `size`. Returns cards named."""
    conn = await asyncpg.connect(dsn)
    cards = [str(uuid.uuid4()) for _ in range((size - start) // EVENTS_PER_CARD + 1)]
    batch_id = str(uuid.uuid4())
    at = datetime.now(UTC)
    chunk = 50_000
    try:
        for lo in range(start, size, chunk):
            records = []
            for index in range(lo, min(lo + chunk, size)):
                card = cards[(index - start) // EVENTS_PER_CARD]
                event_id = str(uuid.uuid4())
                document = {
                    "event_id": event_id, "type": "card.printed", "version": 1,
                    "occurred_at": at.isoformat(), "issuer_id": "bank-a", "actor": "bench",
                    "trace": None, "card_id": card, "batch_id": batch_id, "printer": "p1",
                }  # fmt: skip
                body = canonical_json(document)
                leaf = leaf_hash(document)
                entry = chain_hash(prev, leaf)
                records.append(
                    (index, uuid.UUID(event_id), "card.printed", 1, "bank-a", "bench", at,
                     uuid.UUID(card), uuid.UUID(batch_id), None, body.decode(), leaf, prev, entry)
                )  # fmt: skip
                prev = entry
            await conn.copy_records_to_table(
                "events", records=records, columns=COLUMNS, schema_name=schema
            )
            progress(f"filled {min(lo + chunk, size):,} entries")
        await conn.execute(f"VACUUM ANALYZE {schema}.events")  # as autovacuum would have
    finally:
        await conn.close()
    return size - start, cards


async def measure_at_size(engine: Any, schema: str, cards: list[str], samples: int) -> Any:
    rng = random.Random(9162)
    async with engine.connect() as conn:
        store = MerkleStore(conn, schema)
        size = await store.tree_size()
        root = await store.root(size)
        gen, ver, cgen, cver, queries = [], [], [], [], []
        for _ in range(samples):
            index = rng.randrange(size)
            t0 = time.perf_counter()
            path = await store.range_hashes(inclusion_ranges(index, size))
            leaf = (await store.node_hashes([(0, index)]))[(0, index)]
            t1 = time.perf_counter()
            assert verify_inclusion(index, size, leaf, path, root)
            t2 = time.perf_counter()
            gen.append(t1 - t0)
            ver.append(t2 - t1)
            first = rng.randrange(1, size)
            t0 = time.perf_counter()
            proof = await store.range_hashes(consistency_ranges(first, size))
            old = await store.root(first)  # the older checkpoint's root, as an auditor holds it
            t1 = time.perf_counter()
            assert verify_consistency(first, size, old, root, proof)
            t2 = time.perf_counter()
            cgen.append(t1 - t0)
            cver.append(t2 - t1)
        log = EventLog(conn, schema)
        for _ in range(samples):
            card = uuid.UUID(rng.choice(cards))
            t0 = time.perf_counter()
            found = await log.find_events(EventQuery(card_id=card, limit=100))
            queries.append(time.perf_counter() - t0)
            assert found
    return {
        "tree_size": size,
        "inclusion_proof_generation": ms_percentiles(gen),
        "inclusion_proof_verification": ms_percentiles(ver),
        "consistency_proof_generation": ms_percentiles(cgen),
        "consistency_proof_verification": ms_percentiles(cver),
        "query_by_card_id": ms_percentiles(queries),
        "samples": samples,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # The stack's environment (Kafka's SASL_SSL admin credentials too: the cosigning part starts
    # keymgmt's runtime, whose settings read them), unless the caller's environment has its own.
    for key, value in load_stack_env().items():
        os.environ.setdefault(key, value)
    settings = BureauSettings(database_url=os.environ["BUREAU_DATABASE_URL"])
    schema = f"bench_audit_{uuid.uuid4().hex[:8]}"
    engine = make_engine(settings.database_url, schema)
    await migrate(engine, schema, MIGRATIONS)
    result: dict[str, Any] = {"schema": schema}
    try:
        if not args.only_cosign:
            progress(f"appending {args.append:,} events, and the same rows raw")
            result["append"] = await measure_appends(engine, schema, args.append)
        progress(f"appending {args.cosign:,} events in each of 3 modes: checkpoints cosigned?")
        result["checkpoints"] = await measure_cosigning(
            engine, schema, contract_events, args.cosign
        )
        if args.only_cosign:
            return result
        async with engine.connect() as conn:
            head = (
                await conn.execute(
                    text(
                        "SELECT log_index + 1, entry_hash FROM events"
                        " ORDER BY log_index DESC LIMIT 1"
                    )
                )
            ).one()
        start = time.perf_counter()
        dsn = settings.database_url.replace("postgresql+asyncpg", "postgresql")
        added, cards = await fill(dsn, schema, head[0], args.size, head[1])
        result["fill"] = {"entries": added, "seconds": round(time.perf_counter() - start, 1)}
        progress("building the tree over the filled entries")
        start = time.perf_counter()
        await build_tree(engine, schema)
        took = time.perf_counter() - start
        result["tree_build"] = {"leaves": added, "leaves_per_s": round(added / took)}
        progress(f"proofs and queries at {args.size:,} entries")
        result["at_size"] = await measure_at_size(engine, schema, cards, args.samples)
    finally:
        if not args.keep:
            async with engine.begin() as conn:
                await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await engine.dispose()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000, help="log size for proofs/queries")
    parser.add_argument("--append", type=int, default=20_000, help="events for the append rate")
    parser.add_argument("--samples", type=int, default=500, help="proofs and queries timed")
    parser.add_argument("--keep", action="store_true", help="keep the bench schema")
    parser.add_argument("--cosign", type=int, default=10_000, help="events per checkpoint mode")
    parser.add_argument("--only-cosign", action="store_true", help="the checkpoint section only")
    options = parser.parse_args()
    if options.size < options.append:
        parser.error("--size must be at least --append")
    print(json.dumps(asyncio.run(main(options)), indent=2))  # noqa: T201
