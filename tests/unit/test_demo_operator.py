"""The demo operator's side (demo/operator.py): the transport key it receives under its RSA key
is checked by KCV, and it opens an output file in keymgmt's format (services/keymgmt/sim/
service.py) with that key, checking each OPc against OP; a file under another key is refused."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from demo.client import DEMO_OP
from demo.operator import Operator
from services.keymgmt.sim.service import output_file
from tests.support.hsm import soft_aes_cmac_kcv


def _keymgmt(transport_key: bytes, taken: set[int]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = json.loads(request.content)
        if body["version"] in taken:
            return httpx.Response(409, json={"detail": "exists"})
        public = load_pem_public_key(body["public_key_pem"].encode())
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        wrapped = public.encrypt(transport_key, oaep)  # type: ignore[union-attr]
        return httpx.Response(
            200,
            json={
                "label": f"demo-mno/TRANSPORT/{body['version']}",
                "kcv": soft_aes_cmac_kcv(transport_key),
                "wrapped_key": wrapped.hex(),
            },
        )

    return httpx.MockTransport(answer)


async def test_the_operator_receives_its_key_and_opens_its_file() -> None:
    key = os.urandom(16)
    operator = Operator("demo-mno")
    transport = _keymgmt(key, taken={1, 2})
    async with httpx.AsyncClient(transport=transport, base_url="http://keymgmt") as keymgmt:
        await operator.receive_transport_key(keymgmt)
    assert (operator.transport_label, operator.transport_key) == ("demo-mno/TRANSPORT/3", key)
    ki = os.urandom(16)
    aes_ki = Cipher(algorithms.AES(ki), modes.ECB()).encryptor().update(DEMO_OP)
    opc = bytes(a ^ b for a, b in zip(aes_ki, DEMO_OP, strict=True))
    pins = b"".join(v.ljust(8, b"\xff") for v in (b"1234", b"12345678", b"5678", b"87654321"))
    pins += b"31415926" + bytes(8)
    batch = {
        "issuer_id": "demo-mno",
        "product_id": "demo-usim",
        "count": 1,
        "profile": {},
        "transport_key_label": operator.transport_label,
        "transport_kcv": f"{operator.kcv} (AES-CMAC-X9.24-1-2017)",
    }
    card = {
        "iccid": "8932990000000000017",
        "imsi": "001010000000001",
        "ki_transport": aes_key_wrap(key, ki),
        "opc_transport": aes_key_wrap(key, opc),
        "pins_transport": aes_key_wrap(key, pins),
        "ota_transport": None,
    }
    text = output_file(uuid.uuid4(), batch, [card])
    (sim,) = operator.open_output_file(text, DEMO_OP)
    assert (sim["ki"], sim["opc"], sim["pin1"], sim["adm1"]) == (ki, opc, "1234", "31415926")
    with pytest.raises(ValueError, match="OPc is not"):
        operator.open_output_file(text, os.urandom(16))
    stranger = Operator("demo-mno", transport_key=os.urandom(16), kcv="000000")
    with pytest.raises(ValueError, match="not under this operator's transport key"):
        stranger.open_output_file(text, DEMO_OP)
