"""keymgmt's SIM API on the real stack: a SIM product (OP sealed, ranges, operator transport
key), a batch whose Ki are made in the HSM, and the operator's output file read back with the
test-known transport key: OPc = AES_Ki(OP) xor OP (TS 35.206), Luhn-valid ICCIDs, IMSIs from
the range, no clear Ki or OP in any table, issuers scoped."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import CeremonySpec, run_demo_ceremony
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.settings import KeymgmtSettings
from shared.service import ServiceRuntime
from tests.support.hsm import soft_aes_cmac_kcv
from tests.support.keymgmt import auth

pytestmark = pytest.mark.integration

OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")  # TS 35.208 test set 1
TRANSPORT = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")  # test operator transport key


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


async def _bytea_hits(runtime: ServiceRuntime, needles: list[bytes]) -> list[str]:
    hits = []
    async with runtime.engine.connect() as conn:
        cols = await conn.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = :s AND data_type = 'bytea'"
            ),
            {"s": runtime.schema},
        )
        for table, column in cols.all():
            for needle in needles:
                found = await conn.execute(
                    text(f'SELECT count(*) FROM {table} WHERE position(:n in "{column}") > 0'),
                    {"n": needle},
                )
                if found.scalar_one():
                    hits.append(f"{table}.{column}")
    return hits


async def test_sim_batch_and_operator_output_file(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
) -> None:
    runtime, http = keymgmt
    issuer, custodian = f"ia{unique}", auth(f"cu-{unique}")
    transport = f"{issuer}/TRANSPORT/1"
    spec = CeremonySpec(transport, issuer, CeremonyKeyType.AES128, KeyUsage.WRAP, 2, "test")
    await run_demo_ceremony(runtime.engine, keymgmt_hsm, spec, TRANSPORT.hex(), "11" * 16)
    product: dict[str, Any] = {
        "op": OP.hex(),
        "transport_key_label": transport,
        "iccid_prefix": "8944990",
        "imsi_prefix": "00101",
        "first_serial": 1000,
        "last_serial": 1004,
    }
    path = f"/v1/sim/products/{issuer}/usim-test"
    wrong_key = await http.put(
        path, json=product | {"transport_key_label": "x/Y/1"}, headers=custodian
    )
    not_custodian = await http.put(path, json=product, headers=auth(f"ia-{unique}"))
    put = await http.put(path, json=product, headers=custodian)
    assert (wrong_key.status_code, not_custodian.status_code) == (409, 403)
    unknown_file = product | {"profile": {"files": {"EF.XYZ": "00"}}}
    refused = await http.put(path, json=unknown_file, headers=custodian)
    assert refused.status_code == 422
    assert "unknown file 'EF.XYZ'" in refused.text
    wrong_mnc = await http.put(
        path, json=product | {"profile": {"mnc_length": 3}}, headers=custodian
    )
    assert wrong_mnc.status_code == 422
    assert "mnc_length 3 contradicts the IMSI prefix 00101" in wrong_mnc.text
    async with runtime.engine.connect() as conn:  # the refusals changed nothing
        rows = await conn.execute(
            text("SELECT profile FROM sim_products WHERE issuer_id = :i"), {"i": issuer}
        )
        stored = rows.scalar_one()
        assert (stored["files"], stored["mnc_length"]) == ({}, None)
    assert put.status_code == 200, put.text
    assert OP.hex() not in put.text
    # Another product may not hand out the same ICCIDs or IMSIs; the next serials it may.
    twin = await http.put(f"/v1/sim/products/{issuer}/usim-twin", json=product, headers=custodian)
    assert twin.status_code == 409
    assert twin.json()["detail"] == f"the ICCID range overlaps SIM product {issuer}/usim-test's"
    imsi_twin = product | {"iccid_prefix": "8944991"}
    twin = await http.put(f"/v1/sim/products/{issuer}/usim-twin", json=imsi_twin, headers=custodian)
    assert twin.json()["detail"] == f"the IMSI range overlaps SIM product {issuer}/usim-test's"
    moved = await http.put(path, json=product | {"imsi_prefix": "00102"}, headers=custodian)
    assert moved.json()["detail"] == "a SIM product's imsi_prefix cannot change"
    after = product | {"first_serial": 1005, "last_serial": 1009}
    next_range = await http.put(
        f"/v1/sim/products/{issuer}/usim-next", json=after, headers=custodian
    )
    assert next_range.status_code == 200, next_range.text

    body = {"issuer_id": issuer, "product_id": "usim-test", "count": 3}
    made = await http.post("/v1/sim/batches", json=body, headers=custodian)
    assert made.status_code == 200, made.text
    batch_id = made.json()["batch_id"]
    exhausted = await http.post("/v1/sim/batches", json=body, headers=custodian)
    assert exhausted.status_code == 409

    file_path = f"/v1/sim/batches/{batch_id}/output-file"
    foreign = await http.get(file_path, headers=auth(f"ib-{unique}"))
    assert foreign.status_code == 404
    output = await http.get(file_path, headers=auth(f"ia-{unique}"))
    assert output.status_code == 200
    lines = [line for line in output.text.splitlines() if not line.startswith(("*", "var_"))]
    assert f"* transport key: {transport}  KCV " in output.text
    assert "* encryption: AES-KEY-WRAP-RFC3394 under the transport key" in output.text
    assert "var_out: ICCID/IMSI/KI/OPC/PINS/OTA" in output.text
    kis, pin_blocks = [], []
    for line in lines:
        iccid, imsi, ki_hex, opc_hex, pins_hex, ota = line.split()
        pins = aes_key_unwrap(TRANSPORT, bytes.fromhex(pins_hex))
        values = [pins[i : i + 8].rstrip(b"\xff").decode() for i in range(0, 40, 8)]
        assert [len(v) for v in values] == [4, 8, 4, 8, 8]
        assert all(v.isdigit() for v in values)
        assert pins[40] == 1  # PIN1 enabled: the default profile
        assert ota == "-"  # no OTA keys unless the profile asks
        pin_blocks.append(pins)
        ki = aes_key_unwrap(TRANSPORT, bytes.fromhex(ki_hex))
        opc = aes_key_unwrap(TRANSPORT, bytes.fromhex(opc_hex))
        aes_ki = Cipher(algorithms.AES(ki), modes.ECB()).encryptor().update(OP)
        assert opc == bytes(a ^ b for a, b in zip(aes_ki, OP, strict=True))
        assert _luhn_ok(iccid)
        assert iccid.startswith("8944990")
        assert len(iccid) == 19
        assert imsi.startswith("00101")
        assert len(imsi) == 15
        kis.append(ki)
    assert [line.split()[1] for line in lines] == [f"00101000000{n}" for n in (1000, 1001, 1002)]
    assert len(set(kis)) == 3
    assert len(set(pin_blocks)) == 3
    assert await _bytea_hits(runtime, [*kis, OP, *pin_blocks]) == []
    async with runtime.engine.connect() as conn:
        inventory = await conn.execute(
            text("SELECT usage, origin FROM keys WHERE label = :l"),
            {"l": settings.sim_kek_label},
        )
        assert inventory.one() == ("wrap", "generated")


async def test_transport_key_exchanged_under_the_operators_rsa_key_opens_its_file(
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
) -> None:
    """The operator sends its RSA public key, keymgmt answers its new transport key under
    RSA-OAEP; the operator alone unwraps it, checks the KCV, and opens its output file
    (Ki, OPc, PINs and OTA keys) with it. A bureau key or a bad public key is refused."""
    _runtime, http = keymgmt
    operator, custodian = f"ia{unique}", auth(f"cu-{unique}")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    path = f"/v1/sim/transport-keys/{operator}"
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    weak_pem = weak.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    for bad, why in ((weak_pem, "at least 2048"), ("not a key", "not a PEM public key")):
        refused = await http.post(path, json={"public_key_pem": bad}, headers=custodian)
        assert refused.status_code == 422
        assert why in refused.text
    sent = await http.post(path, json={"public_key_pem": pem.decode()}, headers=custodian)
    assert sent.status_code == 200, sent.text
    answer = sent.json()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    transport = private.decrypt(bytes.fromhex(answer["wrapped_key"]), oaep)
    assert len(transport) == 16
    assert answer["kcv"] == soft_aes_cmac_kcv(transport)
    again = await http.post(path, json={"public_key_pem": pem.decode()}, headers=custodian)
    assert again.status_code == 409  # one exchange per label: never a second export

    bureau_key = {"owner": "bureau", "kind": "TRANSPORT", "version": int(unique[:4], 16) + 2}
    made = await http.post("/v1/bureau-keys", json=bureau_key, headers=custodian)
    assert made.status_code in (200, 201), made.text
    product: dict[str, Any] = {
        "op": OP.hex(),
        "transport_key_label": made.json()["label"],
        "iccid_prefix": f"8944{int(unique[:6], 16) % 10**6:06d}",
        "imsi_prefix": "00102",
        "first_serial": int(unique[:6], 16) % 10**6 * 10,
        "last_serial": int(unique[:6], 16) % 10**6 * 10 + 9,
        "profile": {"spn": "Bureau Mobile", "ota": True, "fplmn": ["00103"]},
    }
    product_path = f"/v1/sim/products/{operator}/usim-rsa"
    bureau = await http.put(product_path, json=product, headers=custodian)
    assert bureau.status_code == 409
    assert "belongs to the bureau, not to operator" in bureau.text
    own_generated = bureau_key | {"owner": operator}
    made = await http.post("/v1/bureau-keys", json=own_generated, headers=custodian)
    assert made.status_code in (200, 201), made.text
    product["transport_key_label"] = made.json()["label"]
    generated = await http.put(product_path, json=product, headers=custodian)
    assert generated.status_code == 409
    assert f"never given to operator {operator}" in generated.text
    product["transport_key_label"] = answer["label"]
    put = await http.put(product_path, json=product, headers=custodian)
    assert put.status_code == 200, put.text
    body = {"issuer_id": operator, "product_id": "usim-rsa", "count": 2}
    batch = await http.post("/v1/sim/batches", json=body, headers=custodian)
    assert batch.status_code == 200, batch.text
    file_path = f"/v1/sim/batches/{batch.json()['batch_id']}/output-file"
    output = await http.get(file_path, headers=auth(f"ia-{unique}"))
    assert f"KCV {answer['kcv']}" in output.text
    assert '"spn": "Bureau Mobile"' in output.text
    for line in output.text.splitlines():
        if line.startswith(("*", "var_")):
            continue
        _iccid, _imsi, ki_hex, opc_hex, pins_hex, ota_hex = line.split()
        ki = aes_key_unwrap(transport, bytes.fromhex(ki_hex))
        opc = aes_key_unwrap(transport, bytes.fromhex(opc_hex))
        aes_ki = Cipher(algorithms.AES(ki), modes.ECB()).encryptor().update(OP)
        assert opc == bytes(a ^ b for a, b in zip(aes_ki, OP, strict=True))
        assert len(aes_key_unwrap(transport, bytes.fromhex(pins_hex))) == 48
        ota = bytes.fromhex(ota_hex)
        keys = [aes_key_unwrap(transport, ota[i : i + 24]) for i in range(0, 72, 24)]
        assert [len(k) for k in keys] == [16, 16, 16]
        assert len(set(keys)) == 3
