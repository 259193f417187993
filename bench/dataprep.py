"""bench/dataprep: prepared EMV cards/s through keymgmt's real path (card.ordered on Kafka ->
inbox -> vault record opened -> MK-AC/SMI/SMC derived, PIN blocks + PVV, CVV/iCVV/CVV2 ->
Postgres + outbox -> card.prepared) with one and with two keymgmt processes, against the raw
HSM-bound limit measured in the same run: a plain python-pkcs11 loop doing the same HSM
operations per card, in one and in two processes, before and after the service run (the
higher is the limit). Prints JSON figures and the ratios.

    .venv/bin/python -m bench.dataprep [--cards 10000]     (the local stack must be up)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.constants import DEFAULT
from pkcs11.mechanisms import GCMParams
from sqlalchemy import text

from services.keymgmt.app import MIGRATIONS, bootstrap
from services.keymgmt.emv.repository import EmvRepository
from services.keymgmt.emv.schemas import ProductProfile
from services.keymgmt.hsm.p11 import encrypt_data_param, load_openssl_config
from services.keymgmt.hsm.process import process_hsm
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import CeremonySpec, load_demo_keys, run_demo_ceremony
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.keys.repository import KeysRepository
from services.keymgmt.keys.service import ensure_bureau_keys
from services.keymgmt.settings import KeymgmtSettings
from services.keymgmt.vault.repository import VaultRepository
from services.keymgmt.vault.schemas import VaultCardIn
from services.keymgmt.vault.service import new_pan_token, seal_cards
from shared import events
from shared.bus import ensure_topics, make_producer
from shared.db import make_engine, migrate
from tests.conftest import load_stack_env

PRODUCT = "bench-visa"
SECURITY_KEYS = (  # public test values: this is a benchmark on the dev token
    ("PIN-3DES", CeremonyKeyType.DES2, KeyUsage.ENCRYPT_ONLY, "0123456789ABCDEFFEDCBA9876543210"),
    ("PIN-AES", CeremonyKeyType.AES128, KeyUsage.ENCRYPT_ONLY, "00112233445566778899AABBCCDDEEFF"),
    ("PVK", CeremonyKeyType.DES2, KeyUsage.ENCRYPT_ONLY, "89ABCDEF01234567FEDCBA9876543210"),
    ("CVK-A", CeremonyKeyType.DES1, KeyUsage.ENCRYPT, "0123456789ABCDEF"),
    ("CVK-B", CeremonyKeyType.DES1, KeyUsage.ENCRYPT, "FEDCBA9876543210"),
)
PROFILE = ProductProfile.model_validate(
    {"pin_formats": ["ISO-9564-1-FORMAT-0", "ISO-9564-1-FORMAT-4"], "pin_verification": "visa-pvv"}
    | {"cvv": True}
)


def settings_for(tag: str) -> KeymgmtSettings:
    return KeymgmtSettings(
        topic_prefix=f"dp{tag}",
        keymgmt_schema=f"keymgmt_dp{tag}",
        vault_key_label=f"dp{tag}/VAULT/1",
        pan_hash_key_label=f"dp{tag}/PANHASH/1",
        kmc_label=f"dp{tag}/KMC/1",
    )


def pan_of(i: int) -> str:
    body = f"476173{i:09d}"
    total = sum(
        (d * 2 - 9 if d * 2 > 9 else d * 2) if k % 2 == 0 else d
        for k, d in enumerate(int(c) for c in reversed(body))
    )
    return body + str((10 - total % 10) % 10)


async def setup(tag: str, cards: int) -> None:
    """Keys by ceremony, the product profile, `cards` vaulted cards and their card.ordered."""
    settings, issuer = settings_for(tag), f"dp{tag}"
    engine = make_engine(settings.database_url, settings.keymgmt_schema)
    await migrate(engine, settings.keymgmt_schema, MIGRATIONS)
    await load_demo_keys(settings, issuer)
    ordered = []
    async with process_hsm(settings) as hsm:
        async with engine.begin() as conn:
            await ensure_bureau_keys(KeysRepository(conn), hsm, settings)
        for usage, kt, ku, value in SECURITY_KEYS:
            spec = CeremonySpec(f"{issuer}/{usage}/1", issuer, kt, ku, 2, "bench")
            await run_demo_ceremony(engine, hsm, spec, value, "5A" * (len(value) // 2))
        keys = (settings.vault_key_label, settings.pan_hash_key_label, issuer)
        for start in range(0, cards, 500):
            chunk = [
                VaultCardIn.model_validate(
                    {"card_id": uuid.uuid4(), "pan": pan_of(i), "psn": "01", "expiry": "2812"}
                    | {"cardholder_name": "BENCH/CARD", "address": _ADDRESS}
                )
                for i in range(start, min(start + 500, cards))
            ]
            sealed = await hsm.call(seal_cards, *keys, chunk)
            rows = [vars(s) | {"issuer_id": issuer, "pan_token": new_pan_token()} for s in sealed]
            async with engine.begin() as conn:
                await VaultRepository(conn).add_vault_cards(rows)
            ordered += rows
    async with engine.begin() as conn:
        await EmvRepository(conn).put_product(issuer, PRODUCT, PROFILE, "bench")
    await engine.dispose()
    await ensure_topics(settings.kafka_bootstrap, [settings.topic("intake")], partitions=4)
    producer = make_producer(settings.kafka_bootstrap, "bench-dataprep")
    await producer.start()
    batch = uuid.uuid4()
    for seq, row in enumerate(ordered):
        event = events.CardOrdered(
            issuer_id=issuer, actor="intake", card_id=row["card_id"], order_id=batch,
            batch_id=batch, product_id=PRODUCT, pan_token=row["pan_token"],
            masked_pan=row["masked_pan"], expiry="2812", sequence=seq,
        )  # fmt: skip
        await producer.send(
            settings.topic("intake"), events.encode_event(event), key=str(row["card_id"]).encode()
        )
    await producer.flush()
    await producer.stop()


_ADDRESS = {"lines": ["1 Bench Road"], "postcode": "B1", "city": "Bench", "country": "GB"}


async def serve(tag: str, cards: int) -> None:
    """One keymgmt process: run the real runtime until every card is prepared."""
    settings = settings_for(tag)
    runtime = bootstrap(settings, consumer_group=f"dp{tag}.keymgmt")
    await runtime.start()
    try:
        while await _prepared(runtime.engine) < cards:
            await asyncio.sleep(0.2)
    finally:
        await runtime.stop()


async def _prepared(engine: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM prepared_cards"))).scalar_one())


async def service_rate(tag: str, cards: int) -> float:
    """Cards/s from the prepared_at window (first to last commit) of the service run."""
    settings = settings_for(tag)
    engine = make_engine(settings.database_url, settings.keymgmt_schema)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*), extract(epoch FROM max(prepared_at) - min(prepared_at))"
                    " FROM prepared_cards"
                )
            )
        ).one()
    await engine.dispose()
    if int(row[0]) != cards:
        raise RuntimeError(f"only {row[0]} of {cards} cards prepared")
    return cards / float(row[1])


# -- the raw HSM-bound limit: the same HSM operations per card, plain python-pkcs11 ----------
def raw_loop(tag: str, cards: int, start_at: float) -> dict[str, float]:
    env = os.environ
    load_openssl_config(env["OPENSSL_CONF"])
    lib = pkcs11.lib(env["BUREAU_PKCS11_MODULE"])
    session = lib.get_token(token_label=env["BUREAU_HSM_TOKEN"]).open(
        rw=True, user_pin=env["BUREAU_HSM_PIN"]
    )
    issuer = f"dp{tag}"

    def key(usage: str) -> Any:
        return session.get_key(object_class=ObjectClass.SECRET_KEY, label=f"{issuer}/{usage}/1")

    vault, pek, pek_aes, pvk = key("VAULT"), key("PIN-3DES"), key("PIN-AES"), key("PVK")
    imks, cvk_a, cvk_b = (
        [key(u) for u in ("IMK-AC", "IMK-SMI", "IMK-SMC")],
        key("CVK-A"),
        key("CVK-B"),
    )
    blobs = []
    for i in range(cards):  # untimed: two sealed blobs per card, as the vault holds them
        nonce, aad = session.generate_random(96), b"bench-aad"
        params = GCMParams(nonce, aad, 128)
        pan_ct = vault.encrypt(
            pan_of(i).encode(), mechanism=Mechanism.AES_GCM, mechanism_param=params
        )
        rec_ct = vault.encrypt(b"x" * 160, mechanism=Mechanism.AES_GCM, mechanism_param=params)
        blobs.append((params, pan_ct, rec_ct))
    template: dict[Attribute, Any] = {Attribute.TOKEN: False, Attribute.SENSITIVE: True}
    template |= {Attribute.EXTRACTABLE: False, Attribute.VALUE_LEN: DEFAULT}
    time.sleep(max(0.0, start_at - time.time()))
    begin = time.time()
    for params, pan_ct, rec_ct in blobs:
        # the vault record opened once: PAN and cardholder record (security.prepare_card_data)
        vault.decrypt(pan_ct, mechanism=Mechanism.AES_GCM, mechanism_param=params)
        vault.decrypt(rec_ct, mechanism=Mechanism.AES_GCM, mechanism_param=params)
        for imk in imks:
            param, keep = encrypt_data_param(bytes(range(16)))
            mk = imk.derive_key(
                KeyType.DES2, 128, capabilities=MechanismFlag.ENCRYPT, template=template,
                mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA, mechanism_param=param,
            )  # fmt: skip
            mk.encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)
            mk.destroy()
        session.generate_random(64)
        pek.encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)
        session.generate_random(64)
        pek_aes.encrypt(bytes(32), mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
        pvk.encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)
        for _ in range(3):  # CVV, iCVV, CVV2
            chained = cvk_a.encrypt(
                bytes(16), mechanism=Mechanism._DES_CBC, mechanism_param=bytes(8)
            )
            step = cvk_b.decrypt(chained[8:], mechanism=Mechanism._DES_ECB)
            cvk_a.encrypt(step, mechanism=Mechanism._DES_ECB)
        seal = GCMParams(session.generate_random(96), b"cvv-aad", 128)
        vault.encrypt(
            b'{"cvv": "123", "icvv": "456"}',
            mechanism=Mechanism.AES_GCM,
            mechanism_param=seal,
        )
        del keep
    session.close()
    return {"cards": cards, "begin": begin, "end": time.time()}


def _drop_token_objects(hsm: Hsm, prefix: str) -> int:
    doomed = [o for o in hsm.session.get_objects() if str(o[Attribute.LABEL]).startswith(prefix)]
    for obj in doomed:
        obj.destroy()
    return len(doomed)


async def drop_keymgmt_run(settings: KeymgmtSettings, label_prefix: str) -> None:
    """Drop a bench keymgmt's schema and destroy its objects (labels under `label_prefix`) on
    the dev token."""
    engine = make_engine(settings.database_url, settings.keymgmt_schema)
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA IF EXISTS {settings.keymgmt_schema} CASCADE"))
    await engine.dispose()
    async with process_hsm(settings) as hsm:
        await hsm.call(_drop_token_objects, label_prefix)


async def cleanup(tag: str) -> None:
    """Drop the run's schema and destroy its keys on the dev token."""
    await drop_keymgmt_run(settings_for(tag), f"dp{tag}/")


def spawn(args: list[str], count: int) -> list[subprocess.Popen[str]]:
    cmd = [sys.executable, "-m", "bench.dataprep", *args]
    return [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(count)]


def raw_rate(tag: str, cards: int, processes: int) -> float:
    start_at = time.time() + 3.0 + cards / 4000
    share = cards // processes
    procs = spawn(["--raw", tag, "--cards", str(share), "--start-at", str(start_at)], processes)
    results = [json.loads(p.communicate()[0]) for p in procs]
    elapsed = max(r["end"] for r in results) - min(r["begin"] for r in results)
    return float(share * processes / elapsed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--raw")
    parser.add_argument("--serve")
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    os.environ.update({k: v for k, v in load_stack_env().items() if k not in os.environ})
    if args.raw:
        print(json.dumps(raw_loop(args.raw, args.cards, args.start_at)))  # noqa: T201
        return
    if args.serve:
        asyncio.run(serve(args.serve, args.cards))
        return
    run = uuid.uuid4().hex[:6]
    figures: dict[str, Any] = {"cards": args.cards}
    for processes in (1, 2):
        tag = f"{run}{processes}"
        asyncio.run(setup(tag, args.cards))
        time.sleep(5)  # let Kafka and Postgres settle after the setup's writes
        before = raw_rate(tag, args.cards, processes)
        for proc in spawn(["--serve", tag, "--cards", str(args.cards)], processes):
            proc.wait()
        rate = asyncio.run(service_rate(tag, args.cards))
        raw = max(before, raw_rate(tag, args.cards, processes))  # the better of two: fair
        figures[f"raw_hsm_cards_per_s_{processes}p"] = round(raw, 1)
        figures[f"prepared_cards_per_s_{processes}p"] = round(rate, 1)
        figures[f"ratio_{processes}p"] = round(rate / raw, 3)
        asyncio.run(cleanup(tag))
    print(json.dumps(figures, indent=2))  # noqa: T201 - a benchmark prints its figures


if __name__ == "__main__":
    main()
