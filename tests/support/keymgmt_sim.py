"""SIM products and orders for keymgmt's USIM tests (TS 35.208 test set 1 operator keys)."""

from __future__ import annotations

import uuid
from typing import Any

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import CeremonySpec, run_demo_ceremony
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from shared.service import ServiceRuntime
from tests.support.keymgmt import auth, ordered

OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")


TRANSPORT = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")  # test operator transport key


async def sim_product(
    runtime: ServiceRuntime,
    http: Any,
    hsm: Hsm,
    issuer: str,
    unique: str,
    last: int = 1004,
    profile: dict[str, Any] | None = None,
) -> str:
    transport = f"{issuer}/TRANSPORT/1"
    spec = CeremonySpec(transport, issuer, CeremonyKeyType.AES128, KeyUsage.WRAP, 2, "test")
    await run_demo_ceremony(runtime.engine, hsm, spec, TRANSPORT.hex(), "11" * 16)
    product: dict[str, Any] = {
        "op": OP.hex(),
        "transport_key_label": transport,
        "iccid_prefix": "8944990",
        "imsi_prefix": "00101",
        "first_serial": 1000,
        "last_serial": last,
        "profile": profile or {},
    }
    path = f"/v1/sim/products/{issuer}/usim-card"
    put = await http.put(path, json=product, headers=auth(f"cu-{unique}"))
    assert put.status_code == 200, put.text
    return "usim-card"


def sim_ordered(card: dict[str, Any], issuer: str, product: str, batch: uuid.UUID) -> Any:
    return ordered(card, issuer).model_copy(update={"product_id": product, "batch_id": batch})
