"""bench/audit's checkpoint section: the append rate while every consumer batch ends with a
signed checkpoint, keymgmt signing alone and keymgmt signing with the witness cosigning, against
appends with no checkpoint, all in the same run on the same log.

keymgmt runs in this process with its real endpoint, its SoftHSM key on the local stack's dev
token (a bench-only label) and its own record (a private schema); the witness runs as its own
process (`python -m services.audit.witness`, a temporary store). Both are removed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pkcs11 import Attribute
from sqlalchemy import text

from services.audit.checkpoint import log_vkey
from services.audit.checkpointer import sign_tree
from services.audit.log_repository import EventLog
from services.audit.signer import KeymgmtSigner
from services.audit.tree_repository import MerkleStore, build_tree
from services.audit.witness_client import WitnessClient
from services.keymgmt.app import bootstrap, build_app
from services.keymgmt.hsm.process import process_hsm
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.db import make_engine
from shared.keymgmt.client import KeymgmtClient, RetryPolicy

BATCH = 500
ROUNDS = 8


def _keymgmt_settings(tag: str) -> KeymgmtSettings:
    return KeymgmtSettings(
        topic_prefix=f"ba{tag}",
        keymgmt_schema=f"keymgmt_ba{tag}",
        vault_key_label=f"ba{tag}/VAULT/1",
        pan_hash_key_label=f"ba{tag}/PANHASH/1",
        kmc_label=f"ba{tag}/KMC/1",
    )


async def _append(
    engine: Any,
    schema: str,
    batch: list[events.Event],
    signer: KeymgmtSigner | None,
    witness: WitnessClient | None,
    origin: str,
) -> tuple[float, list[float]]:
    """Append in consumer batches; after each, (optionally) sign a checkpoint of the tree."""
    rounds: list[float] = []
    start = time.perf_counter()
    for i in range(0, len(batch), BATCH):
        async with engine.begin() as conn:
            log = EventLog(conn, schema)
            for event in batch[i : i + BATCH]:
                await log.append_event(event)
        await build_tree(engine, schema)
        if signer is None:
            continue
        began = time.perf_counter()
        async with engine.begin() as conn:
            store = MerkleStore(conn, schema)
            size = await store.tree_size(lock=True)
            latest = await store.checkpoints(limit=1)
            stored = await sign_tree(store, origin, size, latest, signer, witness)
            await store.add_checkpoint(stored, uuid.uuid4())
        rounds.append(time.perf_counter() - began)
    return time.perf_counter() - start, rounds


async def _witness_process(directory: Path, vkey: str) -> tuple[asyncio.subprocess.Process, str]:
    port = 18000 + os.getpid() % 1000
    env = os.environ | {
        "BUREAU_WITNESS_PORT": str(port),
        "BUREAU_WITNESS_DIR": str(directory),
        "BUREAU_WITNESS_LOG_VKEYS": vkey,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.audit.witness", env=env
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(200):
            try:
                if (await http.get("/ready")).status_code == 200:
                    return process, url
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    process.terminate()
    raise RuntimeError("the witness did not start")


def _drop_keys(hsm: Hsm, prefix: str) -> int:
    doomed = [o for o in hsm.session.get_objects() if str(o[Attribute.LABEL]).startswith(prefix)]
    for obj in doomed:
        obj.destroy()
    return len(doomed)


def _rate(count: int, seconds: float) -> int:
    return round(count / seconds)


async def measure_cosigning(
    engine: Any, schema: str, make_events: Any, count: int
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    origin = f"bench.cardbureau/{tag}"
    # keymgmt reads these once (signing_settings is cached): a bench-only key and origin.
    os.environ["BUREAU_AUDIT_SIGNING_KEY_LABEL"] = f"ba{tag}/AUDITSIGN/1"
    os.environ["BUREAU_LOG_ORIGIN"] = origin
    settings = _keymgmt_settings(tag)
    keymgmt = bootstrap(settings, consumer_group=f"ba{tag}.keymgmt")
    keymgmt.subscribe = []
    await keymgmt.start()
    client = KeymgmtClient(
        "http://keymgmt",
        settings.token_for("audit"),
        transport=httpx.ASGITransport(app=build_app(keymgmt)),
        policy=RetryPolicy.once(),
    )
    try:
        while keymgmt.deps.gate.hsm is None:
            await asyncio.sleep(0.1)
        signer = KeymgmtSigner(client)
        vkey = log_vkey(origin, (await signer.public_key()).public_key_pem).render()
        with tempfile.TemporaryDirectory(prefix="bench-witness-") as directory:
            process, url = await _witness_process(Path(directory), vkey)
            witness = WitnessClient(url)
            try:
                times, rounds = await _interleaved(
                    engine, schema, make_events, count, origin, signer, witness
                )
            finally:
                await witness.aclose()
                process.terminate()
                await process.wait()
    finally:
        await client.aclose()
        await keymgmt.stop()
        await _cleanup(settings, tag)
    plain, signed, cosigned = times
    return {
        "events_per_mode": count,
        "checkpoint_every_events": BATCH,
        "modes_interleaved_in_rounds": ROUNDS,
        "append_no_checkpoint_events_per_s": _rate(count, plain),
        "append_keymgmt_signed_events_per_s": _rate(count, signed),
        "append_keymgmt_signed_witness_cosigned_events_per_s": _rate(count, cosigned),
        "ratio_cosigned_to_signed": round(signed / cosigned, 3),
        "ratio_cosigned_to_no_checkpoint": round(plain / cosigned, 3),
        "checkpoint_signed_ms": _percentiles(rounds[1]),
        "checkpoint_signed_and_cosigned_ms": _percentiles(rounds[2]),
    }


async def _interleaved(
    engine: Any,
    schema: str,
    make_events: Any,
    count: int,
    origin: str,
    signer: KeymgmtSigner,
    witness: WitnessClient,
) -> tuple[list[float], list[list[float]]]:
    """The three modes in turn, ROUNDS times each, so that load and log growth during the run
    weigh on all three alike. Returns the seconds and checkpoint times of each mode."""
    modes: list[tuple[KeymgmtSigner | None, WitnessClient | None]] = [
        (None, None),
        (signer, None),
        (signer, witness),
    ]
    times, rounds = [0.0, 0.0, 0.0], [list[float](), list[float](), list[float]()]
    for _ in range(ROUNDS):
        for i, (mode_signer, mode_witness) in enumerate(modes):
            batch = make_events(count // ROUNDS)
            took, checkpoints = await _append(
                engine, schema, batch, mode_signer, mode_witness, origin
            )
            times[i] += took
            rounds[i] += checkpoints
    return times, rounds


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


async def _cleanup(settings: KeymgmtSettings, tag: str) -> None:
    engine = make_engine(settings.database_url, settings.keymgmt_schema)
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA IF EXISTS {settings.keymgmt_schema} CASCADE"))
    await engine.dispose()
    async with process_hsm(settings) as hsm:
        await hsm.call(_drop_keys, f"ba{tag}/")
