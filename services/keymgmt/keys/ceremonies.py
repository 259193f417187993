"""Key ceremonies: the one ceremony workflow the custodians' CLI (cli.py), the API (api.py), the
demo driver and the tests share: dual control, split
knowledge, KCV checked, every step recorded. No event contract exists for ceremonies yet, so
each step is a `ceremony_steps` row (who, when, outcome; never a component) and a log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import NoReturn
from uuid import UUID

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from sqlalchemy.ext.asyncio import AsyncEngine

from services.keymgmt.hsm.kcv import KcvMethod, normalise_kcv
from services.keymgmt.hsm.process import process_hsm
from services.keymgmt.hsm.session import Hsm, HsmError, destroy_key, key_label
from services.keymgmt.keys.ceremony import (
    CeremonyKeyType,
    Component,
    ImportResult,
    KeyUsage,
    aimport_key_from_components,
    check_component,
)
from services.keymgmt.keys.repository import KeysRepository, key_row
from services.keymgmt.settings import MIGRATIONS, KeymgmtSettings
from shared.db import make_engine, migrate

log = logging.getLogger(__name__)


class CeremonyRefused(Exception):
    """The ceremony stopped; no key was created and the refusal is recorded."""


@dataclass(frozen=True)
class CeremonySpec:
    label: str
    issuer_id: str
    key_type: CeremonyKeyType
    usage: KeyUsage
    components: int
    conducted_by: str
    expected_kcv: str | None = None


class KeyCeremony:
    """One ceremony. Each step commits as it happens, so a refusal is on record even though
    no key exists; the key and the ceremony's completion commit together."""

    def __init__(self, engine: AsyncEngine, hsm: Hsm, spec: CeremonySpec) -> None:
        if not 2 <= spec.components <= 3:
            raise ValueError("a key is imported from 2 or 3 components")
        self.engine, self.hsm, self.spec = engine, hsm, spec
        self.ceremony_id = uuid.uuid4()
        self._components: list[Component] = []

    async def _step(self, step: str, custodian: str | None, outcome: str, detail: str) -> None:
        async with self.engine.begin() as conn:
            await KeysRepository(conn).add_step(self.ceremony_id, step, custodian, outcome, detail)
        extra = {"ceremony_id": str(self.ceremony_id), "label": self.spec.label, "step": step}
        log.info("ceremony step %s: %s", outcome, detail, extra={**extra, "custodian": custodian})

    async def _refuse(self, step: str, custodian: str | None, reason: str) -> NoReturn:
        for comp in self._components:
            comp.value[:] = bytes(len(comp.value))
        self._components.clear()
        await self._step(step, custodian, "refused", reason)
        async with self.engine.begin() as conn:
            await KeysRepository(conn).finish_ceremony(self.ceremony_id, "refused", reason)
        raise CeremonyRefused(reason)

    async def open(self) -> None:
        s = self.spec
        async with self.engine.begin() as conn:
            repo = KeysRepository(conn)
            await repo.start_ceremony({"ceremony_id": self.ceremony_id, **asdict(s)})
            known = await repo.key(s.label)
        await self._step("open", None, "ok", f"{s.key_type} {s.usage} from {s.components} parts")
        if known is not None:
            await self._refuse("open", None, f"{s.label} is already in the inventory")
        if await self.hsm.call(Hsm.find_key, s.label) is not None:
            await self._refuse("open", None, f"the HSM already holds a key labelled {s.label}")

    async def add_component(
        self, custodian: str, component_hex: str, kcv: str, kcv_method: KcvMethod | None = None
    ) -> None:
        """One custodian's component, checked at once (custodian, length, KCV in the HSM)."""
        n, name = len(self._components) + 1, custodian.strip()
        step = f"component {n}"
        if not name:
            await self._refuse(step, None, "a component needs a named custodian")
        if any(c.custodian == name for c in self._components):
            await self._refuse(step, name, f"{name} already entered a component: dual control")
        if n > self.spec.components:
            await self._refuse(step, name, f"only {self.spec.components} components expected")
        if not component_hex.strip():
            await self._refuse(step, name, "component missing")
        try:
            value = bytearray.fromhex(component_hex.replace(" ", ""))
            declared = normalise_kcv(kcv)
        except ValueError:
            await self._refuse(step, name, "component or KCV is not hex of the right length")
        comp = Component(value, declared, name, kcv_method)
        self._components.append(comp)
        try:
            await self.hsm.call(check_component, self.spec.key_type, comp)
        except HsmError as exc:
            await self._refuse(step, name, str(exc))
        await self._step(step, name, "ok", f"component KCV {declared} verified by the HSM")

    async def complete(self) -> ImportResult:
        s, have = self.spec, len(self._components)
        if have < s.components:
            await self._refuse("combine", None, f"component missing: {have} of {s.components}")
        try:
            result = await aimport_key_from_components(
                self.hsm, s.label, s.key_type, self._components, s.usage, s.expected_kcv
            )
        except (HsmError, ValueError) as exc:
            await self._refuse("combine", None, str(exc))
        kcv = result.kcvs[0]
        try:
            async with self.engine.begin() as conn:
                repo = KeysRepository(conn)
                kcvs = [(k.value, k.method.value) for k in result.kcvs]
                t, u, who = s.key_type.value, s.usage.value, result.custodians
                row = key_row(s.label, s.issuer_id, t, u, kcvs, "ceremony", who, self.ceremony_id)
                await repo.add_key(row)
                await repo.add_step(self.ceremony_id, "combine", None, "ok", f"KCV {kcv}")
                await repo.finish_ceremony(self.ceremony_id, "completed", None)
        except Exception as exc:
            await self.hsm.call(destroy_key, s.label)  # no key the inventory does not know
            await self._refuse("record", None, f"inventory not written ({exc.__class__.__name__})")
        log.info("key loaded by ceremony", extra={"label": s.label, "kcv": str(kcv)})
        return result


# -- demo keys: the well-known TEST keys, never outside dev/test ------------------------------
DEMO_CUSTODIANS = ("demo-custodian-1", "demo-custodian-2")
DEMO_IMKS = {  # EMV's classic test IMKs (the HSM-core tests' values), split in two
    "IMK-AC": ("0123456789ABCDEFFEDCBA9876543210", "1F1F1F1F0E0E0E0E0101010101010101"),
    "IMK-SMI": ("89ABCDEF01234567FEDCBA9876543210", "E0E0E0E0F1F1F1F10123456789ABCDEF"),
    "IMK-SMC": ("0123456789ABCDEF0123456789ABCDEF", "5454545454545454FEFEFEFEFEFEFEFE"),
}
DEMO_KMC = ("404142434445464748494A4B4C4D4E4F", "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF")  # GP test key


def software_kcv(key: bytes, key_type: CeremonyKeyType) -> str:
    """What a custodian's component form says: DES method, or AES-CMAC (X9.24-1:2017)."""
    if key_type in (CeremonyKeyType.DES1, CeremonyKeyType.DES2, CeremonyKeyType.DES3):
        k = (key * 3)[:24]  # 8, 16 or 24 bytes: K1 K2 K3 with K3 = K1 (and K2 = K1)
        return Cipher(TripleDES(k), modes.ECB()).encryptor().update(bytes(8))[:3].hex().upper()
    mac = CMAC(algorithms.AES(key))
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


async def run_demo_ceremony(
    engine: AsyncEngine, hsm: Hsm, spec: CeremonySpec, key: str, first: str
) -> None:
    value, part1 = bytes.fromhex(key), bytes.fromhex(first)
    part2 = bytes(a ^ b for a, b in zip(value, part1, strict=True))
    spec = replace(spec, expected_kcv=software_kcv(value, spec.key_type))
    ceremony = KeyCeremony(engine, hsm, spec)
    await ceremony.open()
    for custodian, part in zip(DEMO_CUSTODIANS, (part1, part2), strict=True):
        await ceremony.add_component(custodian, part.hex(), software_kcv(part, spec.key_type))
    await ceremony.complete()


async def load_demo_keys(
    settings: KeymgmtSettings, issuer_id: str, *, schema: str | None = None
) -> list[str]:
    """Import the TEST IMK-AC/SMI/SMC of the issuer and the bureau's test KMC through the
    ceremony primitive, with two named demo custodians. Existing labels are skipped; returns
    the labels imported now."""
    if settings.environment not in ("dev", "test"):
        raise CeremonyRefused("demo keys are public test keys: refused outside dev/test")
    des2, derive = CeremonyKeyType.DES2, KeyUsage.DERIVE
    wanted = [  # the labels of emv.keys.ImkLabels.for_issuer(issuer_id)
        (CeremonySpec(key_label(issuer_id, name), issuer_id, des2, derive, 2, "demo"), *parts)
        for name, parts in DEMO_IMKS.items()
    ]
    owner = settings.kmc_label.split("/")[0]
    kmc = CeremonySpec(settings.kmc_label, owner, CeremonyKeyType.AES128, derive, 2, "demo")
    wanted.append((kmc, *DEMO_KMC))
    schema = schema or settings.keymgmt_schema
    engine = make_engine(settings.database_url, schema)
    imported: list[str] = []
    try:
        await migrate(engine, schema, MIGRATIONS)
        async with process_hsm(settings) as hsm:
            for spec, key, first in wanted:
                async with engine.connect() as conn:
                    if await KeysRepository(conn).key(spec.label) is not None:
                        continue
                await run_demo_ceremony(engine, hsm, spec, key, first)
                imported.append(spec.label)
    finally:
        await engine.dispose()
    return imported


# -- ceremonies through the API ----------------------------------------------------------------
CEREMONY_TTL = 900.0  # seconds a ceremony may wait for its next custodian


class ApiCeremony(KeyCeremony):
    """The CLI's ceremony, plus what the API needs: components so far, abort and expiry."""

    @property
    def received(self) -> int:
        return len(self._components)

    async def stop(self, step: str, who: str | None, reason: str) -> None:
        """Refuse the ceremony now (zeroes the components, records the step and outcome)."""
        try:
            await self._refuse(step, who, reason)
        except CeremonyRefused:
            pass


@dataclass
class OpenCeremony:
    ceremony: ApiCeremony
    touched: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class OpenCeremonies(dict[UUID, OpenCeremony]):
    """The ceremonies open in this process (their checked components are bytearrays, zeroed on
    refusal, abort, expiry and combination: the SoftHSM shortcut of ceremony.py). Custodians of
    one ceremony therefore talk to one keymgmt replica."""
