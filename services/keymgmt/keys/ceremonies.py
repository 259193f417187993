"""Key ceremonies: the one ceremony workflow the custodians' CLI (cli.py), the API (api.py), the
demo driver and the tests share: dual control, split knowledge, KCV checked, every step
recorded: a `ceremony_steps` row (who, when, outcome; never a component), a log line, and a
`control.recorded` event for audit's log in the row's transaction (ceremony_record.py).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, replace
from typing import NoReturn

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from sqlalchemy.ext.asyncio import AsyncEngine

from services.keymgmt.hsm.kcv import Kcv, KcvMethod, normalise_kcv
from services.keymgmt.hsm.p11 import SymKey
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
from services.keymgmt.keys.ceremony_kek import (
    destroy_components,
    import_unwrapped,
    read_component,
    unwrap_component,
)
from services.keymgmt.keys.ceremony_record import CeremonyPolicy as CeremonyPolicy  # re-exported
from services.keymgmt.keys.ceremony_record import CeremonyStep, record_step
from services.keymgmt.keys.repository import KeysRepository, key_row
from services.keymgmt.settings import MIGRATIONS, KeymgmtSettings
from shared.db import make_engine, migrate

log = logging.getLogger(__name__)


class CeremonyRefused(Exception):
    """The ceremony stopped; no key was created and the refusal is recorded."""


class SameCustodianTwice(CeremonyRefused):
    """One custodian principal entering a second component: the ceremony is refused."""


class NotThisCustodiansStep(Exception):
    """A custodian the ceremony did not name for the next component: that submission is
    refused and recorded, the ceremony stays open for the named custodian."""


@dataclass(frozen=True)
class CeremonySpec:
    label: str
    issuer_id: str
    key_type: CeremonyKeyType
    usage: KeyUsage
    components: int
    conducted_by: str
    expected_kcv: str | None = None
    # The custodians named when the ceremony is opened (`role:name` of their principals), in
    # component order: component n is custodians[n-1]'s step and nobody else's. Empty: any
    # authenticated custodian, each once.
    custodians: tuple[str, ...] = ()


CLEAR_REFUSED = (
    "a clear component is refused in production: wrap it under the ceremony key-exchange key"
)


class KeyCeremony:
    """One ceremony. Each step commits as it happens, so a refusal is on record even though
    no key exists; the key and the ceremony's completion commit together."""

    def __init__(
        self,
        engine: AsyncEngine,
        hsm: Hsm,
        spec: CeremonySpec,
        policy: CeremonyPolicy | None = None,
    ) -> None:
        if not 2 <= spec.components <= 3:
            raise ValueError("a key is imported from 2 or 3 components")
        named = [c.strip().casefold() for c in spec.custodians]
        if named and (len(named) != spec.components or len(set(named)) != len(named)):
            raise ValueError("name one different custodian for each component, or none")
        self.engine, self.hsm, self.spec = engine, hsm, spec
        self.policy = policy or CeremonyPolicy()
        self.ceremony_id = uuid.uuid4()
        self._components: list[Component] = []  # clear values (the dev/test route)
        self._unwrapped: list[SymKey] = []  # sensitive session objects (the HSM route)
        self._custodians: list[str] = []
        self._kcvs: list[Kcv] = []
        self._in_hsm = False  # how the components were combined (recorded in the combine step)

    async def _step(
        self, step: str, custodian: str | None, outcome: str, detail: str, **more: str | None
    ) -> None:
        """Record the step (and the ceremony's end, `finish=`) with its event for audit."""
        recorded = CeremonyStep(step, custodian, outcome, detail, **more)
        async with self.engine.begin() as conn:
            await record_step(conn, self.ceremony_id, self.spec, self.policy, recorded)
        extra = {"ceremony_id": str(self.ceremony_id), "label": self.spec.label, "step": step}
        log.info("ceremony step %s: %s", outcome, detail, extra={**extra, "custodian": custodian})

    async def _refuse(
        self,
        step: str,
        custodian: str | None,
        reason: str,
        error: type[CeremonyRefused] = CeremonyRefused,
    ) -> NoReturn:
        for comp in self._components:
            comp.value[:] = bytes(len(comp.value))
        self._components.clear()
        if self._unwrapped:
            await self.hsm.call(destroy_components, list(self._unwrapped))
            self._unwrapped.clear()
        await self._step(step, custodian, "refused", reason, finish="refused")
        raise error(reason)

    async def open(self) -> None:
        s = self.spec
        async with self.engine.begin() as conn:
            repo = KeysRepository(conn)
            await repo.start_ceremony({"ceremony_id": self.ceremony_id, **asdict(s)})
            known = await repo.key(s.label)
        named = f"; custodians {', '.join(s.custodians)}" if s.custodians else ""
        parts = f"{s.key_type} {s.usage} from {s.components} parts{named}"
        await self._step("open", None, "ok", parts)
        if known is not None:
            await self._refuse("open", None, f"{s.label} is already in the inventory")
        if await self.hsm.call(Hsm.find_key, s.label) is not None:
            await self._refuse("open", None, f"the HSM already holds a key labelled {s.label}")

    @property
    def received(self) -> int:
        return len(self._custodians)

    async def _admit(self, custodian: str) -> tuple[str, str]:
        """(step, custodian name) of the next component, or the ceremony refused."""
        n, name = len(self._custodians) + 1, custodian.strip()
        step = f"component {n}"
        if not name:
            await self._refuse(step, None, "a component needs a named custodian")
        if name.casefold() in (c.casefold() for c in self._custodians):
            why = f"{name} already entered a component: dual control needs another custodian"
            await self._refuse(step, name, why, SameCustodianTwice)
        if n > self.spec.components:
            await self._refuse(step, name, f"only {self.spec.components} components expected")
        named = self.spec.custodians
        if named and name.casefold() != named[n - 1].strip().casefold():
            why = f"{step} is {named[n - 1]}'s step, not {name}'s"
            await self._step(step, name, "refused", why)  # the ceremony stays open
            raise NotThisCustodiansStep(why)
        return step, name

    def named_for_next(self) -> str | None:
        """The custodian the ceremony named for the next component, if it named any."""
        named, n = self.spec.custodians, self.received
        return named[n] if named and n < len(named) else None

    async def refuse_attempt(self, who: str | None, reason: str) -> None:
        """A refused attempt at the next component (unknown token, not the named custodian):
        recorded; the ceremony stays open."""
        await self._step(f"component {self.received + 1}", who, "refused", reason)

    async def stop(self, step: str, who: str | None, reason: str) -> None:
        """Refuse the ceremony now (zeroes the components, records the step and outcome)."""
        try:
            await self._refuse(step, who, reason)
        except CeremonyRefused:
            pass

    async def add_wrapped_component(
        self, custodian: str, wrapped: bytes, kcv: str, kcv_method: KcvMethod | None = None
    ) -> None:
        """One custodian's component, RSA-OAEP-wrapped under the key-exchange key: unwrapped
        and its KCV checked inside the HSM (ceremony_kek.py)."""
        step, name = await self._admit(custodian)
        try:
            declared = normalise_kcv(kcv)
        except ValueError:
            await self._refuse(step, name, "the KCV is not 3 bytes of hex")
        hsm_route = self.policy.xor_mechanism is not None
        if self.policy.hsm_only and not hsm_route:
            await self._refuse(step, name, "production: the HSM cannot combine components")
        if hsm_route and self._components:
            await self._refuse(step, name, "clear and wrapped components cannot be combined")
        try:
            key, checked = await self.hsm.call(
                unwrap_component,
                self.policy.kek_label,
                self.spec.key_type,
                wrapped,
                declared,
                kcv_method,
                readable=not hsm_route,
            )
        except HsmError as exc:
            await self._refuse(step, name, f"component of {name}: {exc}")
        if hsm_route:
            self._unwrapped.append(key)
        else:  # DEV/TEST FALLBACK: XORed in process memory by ceremony.py
            comp = await self.hsm.call(_read, key, name, declared, kcv_method)
            self._components.append(comp)
        self._custodians.append(name)
        self._kcvs.append(checked)
        detail = f"wrapped component KCV {declared} verified by the HSM"
        await self._step(step, name, "ok", detail, kcv=declared)

    async def add_component(
        self, custodian: str, component_hex: str, kcv: str, kcv_method: KcvMethod | None = None
    ) -> None:
        """One custodian's clear component (dev/test only), checked at once (custodian,
        length, KCV in the HSM)."""
        step, name = await self._admit(custodian)
        if self.policy.hsm_only:
            log.warning("clear component refused", extra={"ceremony_id": str(self.ceremony_id)})
            await self._refuse(step, name, CLEAR_REFUSED)
        if self._unwrapped:
            await self._refuse(step, name, "clear and wrapped components cannot be combined")
        if not component_hex.strip():
            await self._refuse(step, name, "component missing")
        try:
            value = bytearray.fromhex(component_hex.replace(" ", ""))
            declared = normalise_kcv(kcv)
        except ValueError:
            await self._refuse(step, name, "component or KCV is not hex of the right length")
        comp = Component(value, declared, name, kcv_method)
        self._components.append(comp)
        self._custodians.append(name)
        try:
            self._kcvs.append(await self.hsm.call(check_component, self.spec.key_type, comp))
        except HsmError as exc:
            await self._refuse(step, name, str(exc))
        await self._step(
            step, name, "ok", f"component KCV {declared} verified by the HSM", kcv=declared
        )

    async def _combine(self) -> ImportResult:
        s = self.spec
        if self._unwrapped:
            self._in_hsm = True
            parts, self._unwrapped = self._unwrapped, []
            xor = self.policy.xor_mechanism
            if xor is None:  # never: _unwrapped is filled on the HSM route only
                raise HsmError("no XOR mechanism for components unwrapped in the HSM")
            return await self.hsm.call(
                import_unwrapped,
                s.label,
                s.key_type,
                parts,
                tuple(self._custodians),
                tuple(self._kcvs),
                s.usage,
                xor,
                s.expected_kcv,
            )
        return await aimport_key_from_components(
            self.hsm, s.label, s.key_type, self._components, s.usage, s.expected_kcv
        )

    async def complete(self) -> ImportResult:
        s, have = self.spec, self.received
        if have < s.components:
            await self._refuse("combine", None, f"component missing: {have} of {s.components}")
        try:
            result = await self._combine()
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
                where = "in the HSM" if self._in_hsm else "in process memory (dev/test fallback)"
                detail = f"KCV {kcv}, combined {where}"
                done = CeremonyStep("combine", None, "ok", detail, kcv.value, "completed")
                await record_step(conn, self.ceremony_id, s, self.policy, done)
        except Exception as exc:
            await self.hsm.call(destroy_key, s.label)  # no key the inventory does not know
            await self._refuse("record", None, f"inventory not written ({exc.__class__.__name__})")
        log.info("key loaded by ceremony", extra={"label": s.label, "kcv": str(kcv)})
        return result


def _read(hsm: Hsm, key: SymKey, name: str, declared: str, method: KcvMethod | None) -> Component:
    del hsm
    return read_component(key, name, declared, method)


# -- demo keys: the well-known TEST keys, never outside dev/test ------------------------------
DEMO_CUSTODIANS = ("demo-custodian-1", "demo-custodian-2")
DEMO_IMKS = {  # EMV's classic test IMKs (the HSM-core tests' values), split in two
    "IMK-AC": ("0123456789ABCDEFFEDCBA9876543210", "1F1F1F1F0E0E0E0E0101010101010101"),
    "IMK-SMI": ("89ABCDEF01234567FEDCBA9876543210", "E0E0E0E0F1F1F1F10123456789ABCDEF"),
    "IMK-SMC": ("0123456789ABCDEF0123456789ABCDEF", "5454545454545454FEFEFEFEFEFEFEFE"),
}
DEMO_KMC = ("404142434445464748494A4B4C4D4E4F", "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF")  # GP test key
# What an EMV-profile product needs beyond the IMKs (docs/emv-profile.md): the PIN key (format 0
# blocks, offline PIN) and the CVK pair. Public test values, split in two like the others. The
# demo's PIN key has usage `encrypt`, not `encrypt-only`: its cards get PIN mailers, which on
# SoftHSM are printed from a block the HSM decrypts (pin_mailer/service.py, SOFTHSM SHORTCUT).
DEMO_EMV_KEYS = {
    "PIN-3DES": (
        CeremonyKeyType.DES2,
        KeyUsage.ENCRYPT,
        "0123456789ABCDEFFEDCBA9876543210",
        "3132333435363738393A3B3C3D3E3F40",
    ),
    "CVK-A": (CeremonyKeyType.DES1, KeyUsage.ENCRYPT, "0123456789ABCDEF", "3132333435363738"),
    "CVK-B": (CeremonyKeyType.DES1, KeyUsage.ENCRYPT, "FEDCBA9876543210", "3132333435363738"),
}


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
    ceremony = KeyCeremony(engine, hsm, spec)  # public TEST keys: steps stay in ceremony_steps
    await ceremony.open()
    for custodian, part in zip(DEMO_CUSTODIANS, (part1, part2), strict=True):
        await ceremony.add_component(custodian, part.hex(), software_kcv(part, spec.key_type))
    await ceremony.complete()


async def load_demo_keys(
    settings: KeymgmtSettings, issuer_id: str, *, schema: str | None = None, emv: bool = False
) -> list[str]:
    """Import the TEST IMK-AC/SMI/SMC of the issuer and the bureau's test KMC through the
    ceremony primitive, with two named demo custodians; with `emv`, also the issuer's test PIN
    key and CVK pair (DEMO_EMV_KEYS). Existing labels are skipped; returns the labels imported
    now."""
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
    for name, (key_type, usage, key, first) in DEMO_EMV_KEYS.items() if emv else ():
        spec = CeremonySpec(key_label(issuer_id, name), issuer_id, key_type, usage, 2, "demo")
        wanted.append((spec, key, first))
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
