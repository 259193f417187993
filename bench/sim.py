"""bench/sim: data preparation of a SIM batch (cards/s) against the raw HSM limit for the same
operations in the same run, and the personalization of one SIM (APDUs per SIM, perso scripts/s
on the HSM with a virtual card answering in-process).

- prepared: keymgmt's SIM batch path (the functions POST /v1/sim/batches runs): OP opened from
  its vault seal, per SIM a Ki generated, OPc computed, both wrapped under the storage and the
  transport key, the PIN block made from HSM random digits and wrapped twice, the rows written
  to Postgres in one transaction.
- raw: a plain python-pkcs11 loop doing the same HSM operations per SIM (generate, one AES-ECB,
  create the OPc and PIN objects, six RFC 3394 wraps, the random bytes), no database.
- perso: INITIALIZE UPDATE on a virtual card, the USIM script built and protected in the HSM
  (services/keymgmt/sim/perso.py + SCP03), every APDU sent to the card; APDUs per SIM.

    .venv/bin/python -m bench.sim [--sims 500]      (the local stack must be up)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from sqlalchemy import text

from services.keymgmt.app import MIGRATIONS
from services.keymgmt.gp.channel import InitializeUpdateAnswer, ScriptCommand
from services.keymgmt.gp.secure_channel import secure_script
from services.keymgmt.hsm.p11 import as_key, encrypt
from services.keymgmt.hsm.process import process_hsm
from services.keymgmt.hsm.session import BureauKeyKind, Hsm, generate_bureau_key
from services.keymgmt.keys.ceremonies import CeremonySpec, load_demo_keys, run_demo_ceremony
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.settings import KeymgmtSettings
from services.keymgmt.sim.credentials import make_batch_credentials
from services.keymgmt.sim.perso import build_sim_script
from services.keymgmt.sim.profile import SimProfile, profile_json
from services.keymgmt.sim.repository import SimRepository
from services.keymgmt.sim.service import batch_cards, make_batch, op_context
from services.keymgmt.vault.crypto import seal_bytes
from shared.db import make_engine, migrate
from tests.conftest import load_stack_env
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore

OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")  # TS 35.208 test set 1 (public)
TRANSPORT = "2B7E151628AED2A6ABF7158809CF4F3C"  # a public test value: bench on the dev token


def settings_for(tag: str) -> KeymgmtSettings:
    return KeymgmtSettings(
        keymgmt_schema=f"keymgmt_sb{tag}",
        sim_kek_label=f"sb{tag}/SIMKEK/1",
        vault_key_label=f"sb{tag}/VAULT/1",
        kmc_label=f"sb{tag}k/KMC/1",
    )


def raw_loop(hsm: Hsm, storage: str, transport: str, sims: int) -> float:
    """SIMs/s of the same HSM operations in plain python-pkcs11 (HSM worker)."""
    store, send, session = hsm.key(storage), hsm.key(transport), hsm.session
    secret = {Attribute.TOKEN: False, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True}
    begin = time.perf_counter()
    for _ in range(sims):
        ki = as_key(
            session.generate_key(
                KeyType.AES, 128, capabilities=MechanismFlag.ENCRYPT, template=secret
            )
        )
        aes = encrypt(ki, OP, Mechanism.AES_ECB)
        opc = bytes(a ^ b for a, b in zip(aes, OP, strict=True))
        digits = bytes(0x30 + b % 10 for b in session.generate_random(8 * 40) if b < 250)[:32]
        objects = [ki]
        for value, key_type in ((opc, KeyType.AES), (digits + bytes(16), KeyType.GENERIC_SECRET)):
            objects.append(
                as_key(
                    session.create_object(
                        {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: key_type}
                        | {Attribute.VALUE: value}
                        | secret
                    )
                )
            )
        for obj in objects:
            store.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP)
            send.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP)
            obj.destroy()
    return sims / (time.perf_counter() - begin)


async def prepared_rate(settings: KeymgmtSettings, hsm: Hsm, issuer: str, sims: int) -> float:
    """SIMs/s through keymgmt's batch path, Postgres included."""
    engine = make_engine(settings.database_url, settings.keymgmt_schema)
    storage, transport = settings.sim_kek_label, f"{issuer}/TRANSPORT/1"
    context = op_context(issuer, "bench-usim")
    sealed = await hsm.call(seal_bytes, settings.vault_key_label, OP, context)
    product = {"iccid_prefix": "8949990", "iccid_length": 19, "imsi_prefix": "00109"}
    product |= {"transport_key_label": transport}
    profile = SimProfile()
    begin = time.perf_counter()
    secrets = await hsm.call(make_batch, sealed, context, storage, transport, sims)
    creds = await hsm.call(make_batch_credentials, storage, transport, sims, True, False)
    batch_id = uuid.uuid4()
    common = {"batch_id": batch_id, "issuer_id": issuer, "product_id": "bench-usim"}
    cards = batch_cards(common, product, 1, storage, secrets, creds)
    batch = common | {"count": sims, "first_iccid": cards[0]["iccid"]}
    batch |= {"last_iccid": cards[-1]["iccid"], "transport_key_label": transport}
    batch |= {"transport_kcv": "-", "created_by": "bench", "profile": profile_json(profile)}
    async with engine.begin() as conn:
        await SimRepository(conn).add_batch(batch, cards)
    rate = sims / (time.perf_counter() - begin)
    await engine.dispose()
    return rate


def perso(hsm: Hsm, settings: KeymgmtSettings, sim: dict[str, Any], count: int) -> dict[str, Any]:
    """Perso scripts/s built and protected in the HSM, run on virtual cards; APDUs per SIM."""
    apdus = 0
    with tempfile.TemporaryDirectory() as root:
        store = CardStore(root)
        begin = time.perf_counter()
        for _ in range(count):
            card = VirtualCard(store.manufacture(TEST_KMC), store.save)
            card.power_on()
            card.process(bytes.fromhex("80CA9F7F00"))  # GET DATA CPLC, as a station does
            card.process(bytes.fromhex("00A4040008A00000015100000000"))
            challenge = os.urandom(8)
            iu = card.process(bytes.fromhex("8050000008") + challenge + b"\x00")[:-2]

            def build(h: Hsm, answer: InitializeUpdateAnswer) -> tuple[ScriptCommand, ...]:
                div = answer.diversification_data
                return build_sim_script(h, sim, div, settings.kmc_label, 2).commands

            secured = secure_script(hsm, settings.kmc_label, challenge, iu, build)
            for apdu in secured.apdus:
                if card.process(apdu)[-2:] != b"\x90\x00":
                    raise RuntimeError(f"the card refused {apdu[:4].hex()}")
            apdus += 3 + len(secured.apdus)  # SELECT ISD, INITIALIZE UPDATE, GET DATA + script
        elapsed = time.perf_counter() - begin
    return {"perso_sims_per_s": round(count / elapsed, 1), "perso_apdus_per_sim": apdus / count}


async def run(sims: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    settings, issuer = settings_for(tag), f"sb{tag}"
    engine = make_engine(settings.database_url, settings.keymgmt_schema)
    await migrate(engine, settings.keymgmt_schema, MIGRATIONS)
    await load_demo_keys(settings, f"{issuer}k")
    figures: dict[str, Any] = {"sims": sims}
    async with process_hsm(settings) as hsm:
        try:
            await hsm.call(
                generate_bureau_key, settings.sim_kek_label, BureauKeyKind.SIM_KEK_AES256
            )
            await hsm.call(
                generate_bureau_key, settings.vault_key_label, BureauKeyKind.VAULT_AES256
            )
            spec = CeremonySpec(
                f"{issuer}/TRANSPORT/1", issuer, CeremonyKeyType.AES128, KeyUsage.WRAP, 2, "bench"
            )
            await run_demo_ceremony(engine, hsm, spec, TRANSPORT, "5A" * 16)
            storage, transport = settings.sim_kek_label, f"{issuer}/TRANSPORT/1"
            before = await hsm.call(raw_loop, storage, transport, sims)
            rate = await prepared_rate(settings, hsm, issuer, sims)
            raw = max(before, await hsm.call(raw_loop, storage, transport, sims))
            figures |= {"raw_hsm_sims_per_s": round(raw, 1), "prepared_sims_per_s": round(rate, 1)}
            figures["ratio"] = round(rate / raw, 3)
            async with engine.connect() as conn:
                row = await conn.execute(text("SELECT * FROM sim_cards LIMIT 1"))
                sim = dict(row.mappings().one())
            figures |= await hsm.call(perso, settings, sim, max(1, min(sims, 50)))
        finally:
            await hsm.call(_drop, f"sb{tag}")
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA IF EXISTS {settings.keymgmt_schema} CASCADE"))
    await engine.dispose()
    return figures


def _drop(hsm: Hsm, prefix: str) -> None:
    for obj in list(hsm.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})):
        if str(obj[Attribute.LABEL]).startswith(prefix):
            obj.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sims", type=int, default=500)
    args = parser.parse_args()
    os.environ.update({k: v for k, v in load_stack_env().items() if k not in os.environ})
    print(json.dumps(asyncio.run(run(args.sims)), indent=2))  # noqa: T201 - a benchmark prints


if __name__ == "__main__":
    main()
