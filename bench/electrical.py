"""bench/electrical: EMV cards/s personalised through the station's real path (the station
agent's Postgres queue and outbox, pcscd + vpcd readers holding virtual cards from the real
feeder, SCP03 with keymgmt's HSM core behind HTTP on a fresh SoftHSM token, card.encoded on
Kafka) on 1 reader and on 4 readers, against the raw APDU round-trip rate through the same
pcscd in the same run, expressed for the same number of APDUs per card. Prints JSON figures
and the ratios.

    .venv/bin/python -m bench.electrical [--cards 40] [--product emv|sim]   (stack up)

`--product sim`: a SIM batch instead. Each SIM's sim_cards row is made on the bench token by
keymgmt's batch functions (Ki/OPc from a sealed OP, PINs/PUKs/ADM1 and OTA keys, all wrapped
under a SIM storage key) and the station gets keymgmt's USIM script (services/keymgmt/sim/
perso.py: INSTALL [for personalization] + STORE DATA per DGI, under SCP03). The APDUs per SIM
are counted from the scripts served, plus the station's GET DATA, SELECT and INITIALIZE UPDATE.

keymgmt is the electrical tests' HTTP double (tests/support/electrical_keymgmt.py):
the same HSM work per card as keymgmt's POST /v1/perso/secure-scripts (static and session key
derivations, card cryptogram, MK derivations and wraps, C-MACs, C-DECRYPTION), without the
service's vault read and Postgres binding rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.keymgmt.emv.keys import ImkLabels
from services.keymgmt.hsm.session import BureauKeyKind, Hsm, generate_bureau_key, key_label
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage, import_key_from_components
from services.keymgmt.sim.credentials import make_batch_credentials
from services.keymgmt.sim.profile import SimProfile
from services.keymgmt.sim.service import batch_cards, make_batch, op_context
from services.keymgmt.vault.crypto import seal_bytes
from shared import events
from shared.pcsc import PcscClient
from tests.conftest import load_stack_env, running
from tests.support.electrical import (
    FeederProcess,
    feeder_process,
    prepared,
    publish,
    read_events,
    station,
)
from tests.support.electrical_keymgmt import QA_TOKEN, STATION_TOKEN, KeymgmtTestDouble
from tests.support.hsm import (
    IMK_AC,
    IMK_SMC,
    IMK_SMI,
    OPENSSL_CNF,
    SO_PIN,
    SOFTHSM_MODULE,
    TEST_KMC,
    USER_PIN,
    IssuerKeys,
    soft_aes_cmac_kcv,
    soft_des_kcv,
    split,
)

APDUS_PER_CARD = 9  # GET DATA CPLC, SELECT ISD, INITIALIZE UPDATE, EXTERNAL AUTH, INSTALL, 4 STORE
STATION_APDUS = 3  # the station's own before the script: GET DATA CPLC, SELECT ISD, INIT UPDATE
GET_CPLC = bytes.fromhex("80CA9F7F00")
OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")  # TS 35.208 test set 1 (public)
SIM_PROFILE = SimProfile.model_validate({"spn": "Bench Mobile", "fplmn": ["00103"], "ota": True})


def fresh_token(root: Path) -> Hsm:
    """A throw-away SoftHSM token with the test IMKs and KMC (public test values)."""
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    ossl = root / "openssl.cnf"
    ossl.write_text(OPENSSL_CNF)
    module = root / "libsofthsm2-bench.so"
    shutil.copyfile(SOFTHSM_MODULE, module)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "cb-bench"]
        + ["--pin", USER_PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
        env=env,
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    hsm = Hsm(str(module), "cb-bench", USER_PIN, str(ossl))
    hsm.open()
    return hsm


def load_keys(hsm: Hsm) -> IssuerKeys:
    imks = ImkLabels.for_issuer("benchbank")
    for label, value in ((imks.ac, IMK_AC), (imks.smi, IMK_SMI), (imks.smc, IMK_SMC)):
        components = split(value, bytes(range(16)), "des")
        hsm.run(
            import_key_from_components,
            label,
            CeremonyKeyType.DES2,
            components,
            KeyUsage.DERIVE,
            soft_des_kcv(value),
        )
    kmc = key_label("bureau", "KMC")
    hsm.run(
        import_key_from_components,
        kmc,
        CeremonyKeyType.AES128,
        split(TEST_KMC, bytes(range(0xA0, 0xB0)), "aes"),
        KeyUsage.DERIVE,
        soft_aes_cmac_kcv(TEST_KMC),
    )
    return IssuerKeys("benchbank", imks, kmc, "", "")


def sim_rows(hsm: Hsm, count: int) -> list[dict[str, Any]]:
    """`count` sim_cards rows made on the bench token as keymgmt's batch path makes them
    (HSM worker): OP sealed under a vault key, Ki/OPc and the credentials (with OTA keys)
    wrapped under a SIM storage key and a transport key generated for the run."""
    storage, transport, vault = (key_label("benchsim", k) for k in ("SIMKEK", "TRANSPORT", "VAULT"))
    generate_bureau_key(hsm, storage, BureauKeyKind.SIM_KEK_AES256)
    generate_bureau_key(hsm, transport, BureauKeyKind.TRANSPORT_AES256)
    generate_bureau_key(hsm, vault, BureauKeyKind.VAULT_AES256)
    context = op_context("benchsim", "bench-usim")
    sealed = seal_bytes(hsm, vault, OP, context)
    secrets = make_batch(hsm, sealed, context, storage, transport, count)
    creds = make_batch_credentials(hsm, storage, transport, count, True, True)
    product = {"iccid_prefix": "8949990", "iccid_length": 19, "imsi_prefix": "00109"}
    common = {"batch_id": uuid.uuid4(), "issuer_id": "benchsim", "product_id": "bench-usim"}
    return batch_cards(
        common, product | {"transport_key_label": transport}, 1, storage, secrets, creds
    )


async def raw_rate(pcsc: PcscClient, readers: list[str], apdus: int) -> float:
    """APDU round trips/s (GET DATA CPLC, one awaited transmit at a time per reader), all the
    readers at once, through the same pcscd and the same feeder's cards."""

    async def one(reader: str) -> None:
        async with await pcsc.connect(reader) as conn:
            for _ in range(apdus):
                await conn.transmit(GET_CPLC)

    start = time.perf_counter()
    await asyncio.gather(*(one(r) for r in readers))
    return len(readers) * apdus / (time.perf_counter() - start)


def encoded(n: int) -> Callable[[list[events.Event]], bool]:
    return lambda seen: sum(isinstance(e, events.CardEncoded) for e in seen) >= n


async def station_rate(
    keymgmt: KeymgmtTestDouble,
    feeder: FeederProcess,
    pcsc: PcscClient,
    readers: int,
    cards: int | list[dict[str, Any]],
) -> dict[str, Any]:
    """EMV cards (a count) or SIMs (their sim_cards rows) through the station."""
    unique = uuid.uuid4().hex[:10]
    if isinstance(cards, int):
        ids = [keymgmt.add_card() for _ in range(cards)]
    else:
        ids = [keymgmt.add_sim(row, SIM_PROFILE) for row in cards]
        cards = len(ids)
    batch = uuid.uuid4()
    electrical = station(unique, keymgmt, feeder, pcsc, readers=readers)
    async with running(electrical):
        start = time.perf_counter()
        await publish(electrical.settings, "keymgmt", *(prepared(c, batch) for c in ids))
        out, _raw = await read_events(electrical.settings, "electrical", encoded(cards), 600)
        elapsed = time.perf_counter() - start
        activity = list(electrical.deps.agent.activity.values())
    spoiled = sum(isinstance(e, events.CardSpoiled) for e in out)
    busy = sum(a.busy_s for a in activity) / max(sum(a.encoded for a in activity), 1)
    return {
        "readers": readers,
        "cards": cards,
        "seconds": round(elapsed, 2),
        "spoiled": spoiled,
        "cards_per_s": round(cards / elapsed, 2),
        "apdus_per_card": STATION_APDUS + sum(keymgmt.script_apdus[c] for c in ids) / cards,
        # claim to commit: secure channel, keymgmt call, script, outbox (no card swap)
        "claim_to_commit_ms_per_card": round(1000 * busy, 1),
    }


async def main(cards: int, product: str = "emv") -> dict[str, Any]:
    for name, value in load_stack_env().items():
        os.environ.setdefault(name, value)
    tmp = Path(tempfile.mkdtemp(prefix="bench-electrical-"))
    hsm = fresh_token(tmp / "hsm")
    keys = load_keys(hsm)
    one_batch: int | list[dict[str, Any]] = cards // 4 or 1
    four_batch: int | list[dict[str, Any]] = cards
    if product == "sim":  # the rows are made before the clock starts, as keymgmt's dataprep
        first = cards // 4 or 1
        rows = hsm.run(sim_rows, first + cards)
        one_batch, four_batch = rows[:first], rows[first:]
    pcsc = PcscClient()
    try:
        async with (
            KeymgmtTestDouble(hsm, keys, STATION_TOKEN, QA_TOKEN) as keymgmt,
            feeder_process(tmp, pcsc, stations=4, with_qa=False) as feeder,
        ):
            readers = feeder.station_readers
            await raw_rate(pcsc, readers, 200)  # warm-up
            raw_1 = await raw_rate(pcsc, readers[:1], 2000)
            raw_4 = await raw_rate(pcsc, readers, 2000)
            one = await station_rate(keymgmt, feeder, pcsc, 1, one_batch)
            four = await station_rate(keymgmt, feeder, pcsc, 4, four_batch)
    finally:
        await pcsc.aclose()
        hsm.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return figures(product, raw_1, raw_4, one, four)


def figures(
    product: str, raw_1: float, raw_4: float, one: dict[str, Any], four: dict[str, Any]
) -> dict[str, Any]:
    """The raw APDU rate expressed in cards of the same number of APDUs, and the ratios."""
    apdus = four["apdus_per_card"]
    raw_cards_1, raw_cards_4 = raw_1 / apdus, raw_4 / apdus
    return {
        "product": product,
        "apdus_per_card": apdus,
        "raw_apdus_per_s": {"1_reader": round(raw_1), "4_readers": round(raw_4)},
        "raw_cards_per_s_equivalent": {
            "1_reader": round(raw_cards_1, 1),
            "4_readers": round(raw_cards_4, 1),
        },
        "station_1_reader": one,
        "station_4_readers": four | {"per_reader": round(four["cards_per_s"] / 4, 2)},
        "ratio_station_to_raw": {
            "1_reader": round(one["cards_per_s"] / raw_cards_1, 4),
            "4_readers": round(four["cards_per_s"] / raw_cards_4, 4),
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=40, help="cards on 4 readers (1/4 on one)")
    parser.add_argument("--product", choices=["emv", "sim"], default="emv")
    args = parser.parse_args()
    sys.stdout.write(json.dumps(asyncio.run(main(args.cards, args.product)), indent=2) + "\n")
