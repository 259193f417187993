"""Key ceremonies with wrapped components on the real stack (Postgres, a SoftHSM token): through
the workflow and the HTTP API in dev/test, and the attacks production must refuse: a clear
component (refused with its ceremony, on record, nothing created) and a token that cannot
combine inside the HSM. The custodian's wrapping is written from RFC 8017 with `cryptography`."""

from __future__ import annotations

import base64
import builtins
import getpass
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.keymgmt.app import bootstrap, build_app
from services.keymgmt.hsm.mechanisms import LUNA_XOR_BASE_AND_KEY
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys import cli
from services.keymgmt.keys.ceremonies import (
    CLEAR_REFUSED,
    CeremonyPolicy,
    CeremonyRefused,
    CeremonySpec,
    KeyCeremony,
)
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.keys.ceremony_kek import ensure_kek
from services.keymgmt.keys.repository import KeysRepository
from services.keymgmt.settings import KeymgmtSettings
from tests.conftest import running
from tests.support.bus import wait_for
from tests.support.hsm import soft_des_kcv
from tests.support.keymgmt import auth

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # published KCV 08D7B4
PART1 = bytes.fromhex("1F1F1F1F0E0E0E0E0101010101010101")
PART2 = bytes(a ^ b for a, b in zip(KEY, PART1, strict=True))


def wrap(public_pem: bytes, component: bytes) -> bytes:
    """A custodian's tool: RSAES-OAEP with SHA-1 and MGF1-SHA-1, empty label (RFC 8017 7.1)."""
    public = serialization.load_pem_public_key(public_pem)
    assert isinstance(public, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return public.encrypt(component, oaep)


@pytest.fixture
async def kek_pem(settings: KeymgmtSettings, keymgmt_hsm: Hsm) -> bytes:
    der, _ = await keymgmt_hsm.call(ensure_kek, settings.ceremony_kek_label)
    public = serialization.load_der_public_key(der)
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def history(engine: AsyncEngine, label: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        assert await KeysRepository(conn).key(label) is None
        return await KeysRepository(conn).ceremonies(label)


async def test_production_refuses_a_clear_component_and_its_ceremony(
    settings: KeymgmtSettings, unique: str, keymgmt_engine: AsyncEngine, keymgmt_hsm: Hsm
) -> None:
    label = f"pa{unique}/IMK-AC/1"
    spec = CeremonySpec(label, f"pa{unique}", CeremonyKeyType.DES2, KeyUsage.DERIVE, 2, "t")
    policy = CeremonyPolicy(True, settings.ceremony_kek_label, LUNA_XOR_BASE_AND_KEY)
    ceremony = KeyCeremony(keymgmt_engine, keymgmt_hsm, spec, policy)
    await ceremony.open()
    with pytest.raises(CeremonyRefused, match="clear component is refused in production"):
        await ceremony.add_component("alice", PART1.hex(), soft_des_kcv(PART1))
    (record,) = await history(keymgmt_engine, label)
    assert (record["outcome"], record["reason"]) == ("refused", CLEAR_REFUSED)
    assert PART1.hex().upper() not in json.dumps(record, default=str).upper()
    assert await keymgmt_hsm.call(Hsm.find_key, label) is None


async def wrapped_ceremony(ceremony: KeyCeremony, kek_pem: bytes) -> None:
    for who, part in (("alice", PART1), ("bob", PART2)):
        await ceremony.add_wrapped_component(who, wrap(kek_pem, part), soft_des_kcv(part))
    await ceremony.complete()


async def test_production_combines_only_in_the_hsm(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt_engine: AsyncEngine,
    keymgmt_hsm: Hsm,
    kek_pem: bytes,
) -> None:
    """Wrapped components on SoftHSM in production: unwrapped and checked in the HSM, then the
    token refuses the vendor XOR; without that mechanism the first component is refused. In
    both cases no key, and no session object, is left."""
    before = await keymgmt_hsm.call(Hsm.count_objects)
    for n, xor in enumerate((LUNA_XOR_BASE_AND_KEY, None)):
        label = f"pb{unique}/IMK-AC/{n + 1}"
        spec = CeremonySpec(label, f"pb{unique}", CeremonyKeyType.DES2, KeyUsage.DERIVE, 2, "t")
        policy = CeremonyPolicy(True, settings.ceremony_kek_label, xor)
        ceremony = KeyCeremony(keymgmt_engine, keymgmt_hsm, spec, policy)
        await ceremony.open()
        with pytest.raises(CeremonyRefused) as refused:
            await wrapped_ceremony(ceremony, kek_pem)
        if xor is None:
            assert str(refused.value) == "production: the HSM cannot combine components"
        else:
            assert str(refused.value) == (
                "the HSM refused to combine the components (MechanismInvalid)"
            )
        (record,) = await history(keymgmt_engine, label)
        assert record["outcome"] == "refused"
        assert await keymgmt_hsm.call(Hsm.find_key, label) is None
    assert await keymgmt_hsm.call(Hsm.count_objects) == before


@pytest.fixture
async def http(settings: KeymgmtSettings, unique: str) -> AsyncIterator[httpx.AsyncClient]:
    more = f",custodian:dave=cd-{unique}"
    runtime = bootstrap(settings.model_copy(update={"principals": settings.principals + more}))
    async with running(runtime):

        async def hsm_open() -> bool:
            return runtime.deps.gate.hsm is not None

        await wait_for(hsm_open)
        transport = httpx.ASGITransport(app=build_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://keymgmt") as client:
            yield client


async def test_api_wrapped_components_and_the_recorded_fallback(
    unique: str, http: httpx.AsyncClient, keymgmt_hsm: Hsm
) -> None:
    carol, dave, root = auth(f"cu-{unique}"), auth(f"cd-{unique}"), auth(f"ad-{unique}")
    kek = await http.get("/v1/ceremony-kek", headers=carol)
    assert kek.status_code == 200, kek.text
    assert kek.json()["algorithm"].startswith("RSAES-OAEP")
    assert (await http.get("/v1/ceremony-kek", headers=root)).json() == kek.json()
    pem = kek.json()["public_key_pem"].encode()
    spec = {
        "issuer_id": f"pc{unique}",
        "usage_name": "IMK-AC",
        "key_type": "DES2",
        "usage": "derive",
        "components": 2,
        "expected_kcv": "08D7B4",
    }
    opened = await http.post("/v1/ceremonies", json=spec, headers=root)
    cid = opened.json()["ceremony_id"]
    bad = await http.post(
        f"/v1/ceremonies/{cid}/components", json={"wrapped": "!!", "kcv": "000000"}, headers=carol
    )
    assert bad.status_code == 422
    both = {"wrapped": "AAAA", "component": PART1.hex(), "kcv": soft_des_kcv(PART1)}
    assert (
        await http.post(f"/v1/ceremonies/{cid}/components", json=both, headers=carol)
    ).status_code == 422
    for who, part in ((carol, PART1), (dave, PART2)):
        body = {"wrapped": base64.b64encode(wrap(pem, part)).decode(), "kcv": soft_des_kcv(part)}
        sent = await http.post(f"/v1/ceremonies/{cid}/components", json=body, headers=who)
        assert sent.status_code == 200, sent.text
    assert sent.json()["state"] == "completed"
    assert sent.json()["kcvs"][0]["kcv"] == "08D7B4"
    key = await http.get(f"/v1/keys/pc{unique}/IMK-AC/1", headers=root)
    assert key.json()["custodians"] == ["custodian:carol", "custodian:dave"]
    (done,) = (await http.get(f"/v1/ceremonies?label=pc{unique}/IMK-AC/1", headers=root)).json()[
        "ceremonies"
    ]
    combine = done["steps"][-1]
    assert (combine["step"], combine["outcome"]) == ("combine", "ok")
    assert (
        combine["detail"]
        == "KCV 08D7B4 (DES-3DES-ECB-ZERO), combined in process memory (dev/test fallback)"
    )
    ready = (await http.get("/ready")).json()
    operations = ready["hsm"]["operations"]
    assert operations["ceremony-component-unwrap"] == "hsm"
    assert operations["ceremony-component-combine"].startswith("python fallback (missing: ")


async def test_api_in_production_refuses_a_clear_component_before_anything_else(
    settings: KeymgmtSettings, unique: str
) -> None:
    """Production settings (the token here cannot start production, so its HSM gate stays
    closed): a clear component is refused with 403 naming the rule, not 503 or 404."""
    prod = settings.model_copy(update={"environment": "prod", "hsm_retry_seconds": 60.0})
    runtime = bootstrap(prod)
    async with running(runtime):
        transport = httpx.ASGITransport(app=build_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://keymgmt") as client:
            body = {"component": PART1.hex(), "kcv": soft_des_kcv(PART1)}
            refused = await client.post(
                f"/v1/ceremonies/{uuid.uuid4()}/components",
                json=body,
                headers=auth(f"cu-{unique}"),
            )
    assert refused.status_code == 403, refused.text
    assert "clear component is refused in production" in refused.text
    assert PART1.hex() not in refused.text


@pytest.fixture
def cli_answers(settings: KeymgmtSettings, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The CLI reads its settings from the environment; prompts are answered from a list."""
    env = {
        "BUREAU_ENVIRONMENT": "test",
        "BUREAU_PKCS11_MODULE": settings.pkcs11_module,
        "BUREAU_HSM_TOKEN": settings.hsm_token,
        "BUREAU_HSM_PIN": settings.hsm_pin,
        "OPENSSL_CONF": str(settings.openssl_conf),
        "BUREAU_KEYMGMT_SCHEMA": settings.keymgmt_schema,
        "BUREAU_PRINCIPALS": settings.principals,  # the custodians' tokens are checked here
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    answers: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": answers.pop(0))
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": answers.pop(0))
    monkeypatch.setattr(cli, "configure_logging", lambda *a: None)
    return answers


def test_cli_prints_the_kek_and_imports_wrapped_components(
    cli_answers: list[str], unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["kek"]) == 0
    printed = capsys.readouterr().out
    pem = printed[printed.index("-----BEGIN PUBLIC KEY-----") :].encode()
    blobs = [base64.b64encode(wrap(pem, part)).decode() for part in (PART1, PART2)]
    kcvs = [soft_des_kcv(PART1), soft_des_kcv(PART2)]
    carol, cyril = f"cu-{unique}", f"cu2-{unique}"  # each custodian's own bearer token
    cli_answers[:] = [carol, blobs[0], kcvs[0], cyril, "not base64!", kcvs[1]]
    args = ["import", "--label", "IMK-AC", "--issuer", f"pd{unique}", "--type", "DES2"]
    args += ["--usage", "derive", "--components", "2", "--wrapped"]
    assert cli.main(args) == 2
    assert "does not unwrap under" in capsys.readouterr().err
    cli_answers[:] = [carol, blobs[0], kcvs[0], cyril, blobs[1], kcvs[1]]
    assert cli.main([*args, "--label", "IMK-SMI", "--expected-kcv", "08D7B4"]) == 0
    out = capsys.readouterr().out
    assert f"pd{unique}/IMK-SMI/1 loaded, KCV 08D7B4" in out
    assert blobs[0] not in out
