"""One PKCS#11 session per process, serialised through one worker thread.

SoftHSM 2 is not thread-safe once python-pkcs11 has called C_Initialize(NULL) (it turns its
locking off; /work/shared/INFRA.md), so every PKCS#11 call of this process, including loading
the module and opening the session, runs on the single thread of ``Hsm._executor``. Code that
touches PKCS#11 objects is written as plain functions taking the ``Hsm`` and is run with
``await hsm.call(fn, ...)`` (asyncio services) or ``hsm.run(fn, ...)`` (sync callers);
``Hsm.session`` refuses to be used from any other thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Concatenate, ParamSpec, TypeVar

import pkcs11
import pkcs11.exceptions
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import MultipleObjectsReturned, NoSuchKey

from services.keymgmt.hsm.kcv import Kcv, KcvMethod, kcv_of
from services.keymgmt.hsm.p11 import SymKey, as_key, load_openssl_config
from shared.metrics import time_hsm_operation

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_LABEL_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# SoftHSM 2.6.1 frees no session object before C_Finalize: C_DestroyObject only invalidates it
# (SessionObjectStore::deleteObject drops it from the live set, never from the set it frees at
# C_Finalize), and C_CloseSession does the same. Every per-card key derived, unwrapped or
# generated (~25 a card) so stays, ~190 bytes each: keymgmt's C heap grew ~5 MiB per 1,000
# cards (bench/keymgmt_memory.py). On SoftHSM the Hsm therefore finalizes and re-initializes
# the library after this many dispatched calls (each makes a bounded number of session
# objects; ~6 ms). A vendor HSM frees what is destroyed and is never re-initialized.
RECYCLE_CALLS = 1000
_SESSIONS_OF_MODULE: Counter[str] = Counter()  # open Hsm sessions per module path, this process


class HsmError(Exception):
    """A key-management rule was broken (not a PKCS#11 library error)."""


class KeyNotFoundError(HsmError):
    pass


class KeyExistsError(HsmError):
    pass


def key_label(issuer: str, usage: str, version: int = 1) -> str:
    """Token object label scoped by issuer: ``<issuer>/<usage>/<version>``."""
    for part in (issuer, usage):
        if not _LABEL_PART.match(part):
            raise ValueError(f"invalid label part {part!r}")
    if version < 1:
        raise ValueError("key version starts at 1")
    return f"{issuer}/{usage}/{version}"


class BureauKeyKind(StrEnum):
    """Keys the bureau generates itself inside the HSM."""

    KMC_AES128 = "KMC"  # card-manager master key, CPG202-AES diversification (derive only)
    VAULT_AES256 = "VAULT"  # PAN vault encryption key (AES-GCM)
    PAN_HMAC = "PANHASH"  # HMAC-SHA256 key for keyed PAN lookup hashes
    SIM_KEK_AES256 = "SIMKEK"  # wraps each SIM's Ki and OPc for keymgmt's own table
    TRANSPORT_AES256 = "TRANSPORT"  # a transport key the bureau issues to a partner


_KIND_SPEC: dict[BureauKeyKind, tuple[KeyType, int, MechanismFlag]] = {
    BureauKeyKind.KMC_AES128: (KeyType.AES, 128, MechanismFlag.DERIVE),
    BureauKeyKind.VAULT_AES256: (
        KeyType.AES,
        256,
        MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
    ),
    BureauKeyKind.PAN_HMAC: (KeyType.GENERIC_SECRET, 256, MechanismFlag.SIGN),
    BureauKeyKind.SIM_KEK_AES256: (KeyType.AES, 256, MechanismFlag.WRAP | MechanismFlag.UNWRAP),
    BureauKeyKind.TRANSPORT_AES256: (KeyType.AES, 256, MechanismFlag.WRAP | MechanismFlag.UNWRAP),
}


# DES keys carry no CKA_VALUE_LEN; their length is fixed by the key type (parity bits included).
_FIXED_BITS = {KeyType._DES: 64, KeyType.DES2: 128, KeyType.DES3: 192}


@dataclass(frozen=True)
class KeyInfo:
    """What the key inventory may know about a key: never its value."""

    label: str
    key_type: str
    bits: int
    kcvs: tuple[Kcv, ...]
    sensitive: bool
    extractable: bool
    token: bool


def key_info(key: SymKey, label: str, extra: tuple[Kcv, ...] = ()) -> KeyInfo:
    """Inventory record of a key object (run on the HSM worker)."""
    attrs = key.get_attributes(
        [Attribute.KEY_TYPE, Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.TOKEN]
    )
    kt = KeyType(attrs[Attribute.KEY_TYPE])
    kcvs: tuple[Kcv, ...] = ()
    if kt in _FIXED_BITS:
        kcvs = (kcv_of(key, KcvMethod.DES),)
    elif kt == KeyType.AES:
        kcvs = (kcv_of(key, KcvMethod.AES_ZERO_BLOCK),)
    return KeyInfo(
        label=label,
        key_type=kt.name,
        bits=_FIXED_BITS.get(kt) or key.key_length,
        kcvs=kcvs + extra,
        sensitive=bool(attrs[Attribute.SENSITIVE]),
        extractable=bool(attrs[Attribute.EXTRACTABLE]),
        token=bool(attrs[Attribute.TOKEN]),
    )


class Hsm:
    """The process' single PKCS#11 session with its own worker thread and key-handle cache."""

    def __init__(
        self,
        module_path: str,
        token_label: str,
        user_pin: str,
        openssl_conf: str | None = None,
        recycle_calls: int = RECYCLE_CALLS,
    ) -> None:
        """``openssl_conf``: a config activating OpenSSL's default and legacy providers, applied
        before the module is loaded (single DES for the retail MAC; see load_openssl_config).
        ``recycle_calls``: re-initialize the library after this many calls (0: never)."""
        self._module_path = module_path
        self._openssl_conf = openssl_conf
        self._token_label = token_label
        self._pin = user_pin
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hsm")
        self._worker_ident: int | None = None
        self._session: pkcs11.Session | None = None
        self._keys: dict[str, SymKey] = {}
        self.recycle_calls = recycle_calls
        self._softhsm_conf: tuple[str | None] | None = None  # SOFTHSM2_CONF at the first open
        self._keeps_destroyed = False
        self._calls = 0
        self.recycles = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Hsm:
        """From the local stack's variables (docs/local-stack.md): BUREAU_PKCS11_MODULE,
        BUREAU_HSM_TOKEN, BUREAU_HSM_PIN and OPENSSL_CONF."""
        e = os.environ if env is None else env
        return cls(
            e["BUREAU_PKCS11_MODULE"],
            e["BUREAU_HSM_TOKEN"],
            e["BUREAU_HSM_PIN"],
            e.get("OPENSSL_CONF"),
        )

    # -- lifecycle -------------------------------------------------------------------------
    def _open(self) -> None:
        self._worker_ident = threading.get_ident()
        if self._session is not None:
            return
        if self._openssl_conf:
            load_openssl_config(self._openssl_conf)
        lib = pkcs11.lib(self._module_path)
        self._keeps_destroyed = lib.manufacturer_id == "SoftHSM"  # the C_GetInfo of 2.x
        if self._softhsm_conf is None:
            self._softhsm_conf = (os.environ.get("SOFTHSM2_CONF"),)
        token = lib.get_token(token_label=self._token_label)
        # An empty PIN: a token that needs no login (never a production setting).
        self._session = token.open(rw=True, user_pin=self._pin or None)
        _SESSIONS_OF_MODULE[self._module_path] += 1
        log.info("hsm session open", extra={"token": self._token_label})

    def __repr__(self) -> str:  # never show the PIN
        return f"Hsm(module={self._module_path!r}, token={self._token_label!r})"

    def _close(self) -> None:
        self._keys.clear()
        if self._session is not None:
            _SESSIONS_OF_MODULE[self._module_path] -= 1
            self._session.close()
            self._session = None

    def _recycle(self) -> None:
        """C_Finalize + C_Initialize and a new session, on SoftHSM (RECYCLE_CALLS says why);
        on the worker between two calls, so no old handle is in use (the key cache is emptied).
        Never while another Hsm of the process has a session on the library (C_Finalize would
        end it) or SOFTHSM2_CONF differs from what C_Initialize read (a test's own token)."""
        self._calls = 0
        alone = _SESSIONS_OF_MODULE[self._module_path] == 1
        same_conf = (os.environ.get("SOFTHSM2_CONF"),) == self._softhsm_conf
        if not (self._keeps_destroyed and self._session is not None and alone and same_conf):
            return
        self._close()
        pkcs11.lib(self._module_path).reinitialize()
        self._open()
        self.recycles += 1
        log.info("hsm library re-initialized", extra={"recycles": self.recycles})

    def _dispatched(self, fn: Callable[Concatenate[Hsm, P], T], *args: Any, **kw: Any) -> T:
        """A call or run as the worker takes it: the library recycled first when due."""
        self._calls += 1
        if self.recycle_calls and self._calls > self.recycle_calls:
            self._recycle()
        return fn(self, *args, **kw)

    def open(self) -> None:
        self._executor.submit(self._open).result()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def close(self) -> None:
        if self._worker_ident is not None:
            self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    # -- running work on the worker --------------------------------------------------------
    def _on_worker(self) -> bool:
        return threading.get_ident() == self._worker_ident

    def run(self, fn: Callable[Concatenate[Hsm, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """Run ``fn(self, ...)`` on the HSM worker and wait (sync callers, tests)."""
        if self._on_worker():
            return fn(self, *args, **kw)
        if self._session is None:
            self.open()
        with time_hsm_operation(fn):
            return self._executor.submit(
                functools.partial(self._dispatched, fn, *args, **kw)
            ).result()

    async def call(self, fn: Callable[Concatenate[Hsm, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """Run ``fn(self, ...)`` on the HSM worker without blocking the event loop."""
        if self._session is None:
            await self.start()
        bound = functools.partial(self._dispatched, fn, *args, **kw)
        with time_hsm_operation(fn):
            return await asyncio.get_running_loop().run_in_executor(self._executor, bound)

    # -- worker-only helpers ---------------------------------------------------------------
    @property
    def session(self) -> pkcs11.Session:
        if not self._on_worker():
            raise RuntimeError("PKCS#11 used outside the HSM worker thread")
        if self._session is None:
            raise RuntimeError("HSM session not open")
        return self._session

    def find_key(self, label: str) -> SymKey | None:
        cached = self._keys.get(label)
        if cached is not None:
            return cached
        try:
            key = self.session.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
        except NoSuchKey:
            return None
        except MultipleObjectsReturned as exc:
            raise HsmError(f"more than one key labelled {label}") from exc
        self._keys[label] = as_key(key)
        return self._keys[label]

    def key(self, label: str) -> SymKey:
        key = self.find_key(label)
        if key is None:
            raise KeyNotFoundError(label)
        return key

    def forget(self, label: str) -> None:
        self._keys.pop(label, None)

    def ensure_absent(self, label: str) -> None:
        if self.find_key(label) is not None:
            raise KeyExistsError(label)

    def random(self, nbytes: int) -> bytes:
        return self.session.generate_random(nbytes * 8)

    def count_objects(self, attrs: dict[Attribute, Any] | None = None) -> int:
        return sum(1 for _ in self.session.get_objects(attrs or {}))


def generate_bureau_key(hsm: Hsm, label: str, kind: BureauKeyKind) -> KeyInfo:
    """Generate a sensitive, non-extractable token key inside the HSM (worker function)."""
    hsm.ensure_absent(label)
    key_type, bits, caps = _KIND_SPEC[kind]
    extra: tuple[Kcv, ...] = ()
    template: dict[Attribute, Any] = {
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
    }
    if key_type == KeyType.AES:
        # SIGN is on only long enough to compute the X9.24-1:2017 CMAC KCV, then cleared.
        template[Attribute.SIGN] = True
    key = as_key(
        hsm.session.generate_key(
            key_type, bits, label=label, store=True, capabilities=caps, template=template
        )
    )
    if key_type == KeyType.AES:
        extra = (kcv_of(key, KcvMethod.AES_CMAC),)
        if not caps & MechanismFlag.SIGN:
            key[Attribute.SIGN] = False
    hsm.forget(label)
    log.info("generated bureau key", extra={"label": label, "kind": kind.value})
    return key_info(key, label, extra)


async def agenerate_bureau_key(hsm: Hsm, label: str, kind: BureauKeyKind) -> KeyInfo:
    return await hsm.call(generate_bureau_key, label, kind)


def describe_key(hsm: Hsm, label: str) -> KeyInfo:
    return key_info(hsm.key(label), label)


def destroy_key(hsm: Hsm, label: str) -> None:
    """Destroy a token key (key inventory state "destroyed"); the caller logs who and why."""
    key = hsm.key(label)
    hsm.forget(label)
    key.destroy()
    log.info("destroyed key", extra={"label": label})


# -- DES3 key wrap: the production route for DES-keyed cards ---------------------------------
def des3_wrap_missing(hsm: Hsm) -> str | None:
    """None when the token wraps keys with CKM_DES3_ECB, else why not (HSM worker).

    The token's mechanism list must give CKM_DES3_ECB the CKF_WRAP flag, and since SoftHSM
    2.6.1 advertises that flag yet refuses C_WrapKey with CKR_MECHANISM_INVALID, one wrap of a
    throw-away session key under another is tried as well."""
    slot = hsm.session.token.slot
    if Mechanism.DES3_ECB not in set(slot.get_mechanisms()):
        return "the token's mechanism list has no CKM_DES3_ECB"
    if not slot.get_mechanism_info(Mechanism.DES3_ECB).flags & MechanismFlag.WRAP:
        return "the token's mechanism list does not give CKM_DES3_ECB the CKF_WRAP flag"
    template: dict[Attribute, Any] = {Attribute.TOKEN: False, Attribute.EXTRACTABLE: True}
    made: list[SymKey] = []
    try:
        kek = as_key(
            hsm.session.generate_key(
                KeyType.DES2, capabilities=MechanismFlag.WRAP, template=template
            )
        )
        made.append(kek)
        probe = as_key(hsm.session.generate_key(KeyType.DES2, template=template))
        made.append(probe)
        kek.wrap_key(probe, mechanism=Mechanism.DES3_ECB)
    except pkcs11.exceptions.MechanismInvalid:
        return (
            "the token lists CKM_DES3_ECB with CKF_WRAP but C_WrapKey refuses it"
            " (CKR_MECHANISM_INVALID; SoftHSM 2.6.1 does)"
        )
    finally:
        for obj in made:
            obj.destroy()
    return None


def des3_wrap(kek: SymKey, key: SymKey) -> bytes:
    """C_WrapKey(CKM_DES3_ECB): a DES key enciphered under a DES2/DES3 key-encryption key.

    The production mechanism for cards personalised with DES keys (GlobalPlatform SCP02 K_DEK,
    EMV CPS DGI 8000 = 3DES-ECB(K_DEK, MK-AC) || ... ): each per-card master key, a sensitive
    session object that may only be wrapped, leaves the HSM enciphered under the card's K_DEK.
    Tokens without it (SoftHSM 2.6.1) use the AES route of perso.py (SCP03 K_DEK, CKM_AES_CBC
    over one block)."""
    return kek.wrap_key(key, mechanism=Mechanism.DES3_ECB)
