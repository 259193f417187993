"""Key checks before a product's cards are prepared: every key the product needs (IMKs, KMC, PIN
keys, PVK, CVKs; the issuer RSA key and its certificate for ODA) is in the inventory and active,
of the right type and usage, in the HSM with the inventory's KCV, and the issuer certificate
is unexpired, from a trusted CA and certifies the issuer key in the HSM. The problems name the
key; preparation holds the batch on them (preparation.ProductIncomplete)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from services.keymgmt.emv.cvv import CvkLabels
from services.keymgmt.emv.keys import ImkLabels
from services.keymgmt.emv.oda import OdaError, check_issuer_certificate, issuer_key_label
from services.keymgmt.emv.pin import PinBlockFormat, PinKeys, PinVerification
from services.keymgmt.emv.schemas import ProductProfile
from services.keymgmt.hsm.kcv import KcvMethod, kcv_of
from services.keymgmt.hsm.rsa import RsaPublic, rsa_public
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.repository import KeymgmtRepository

DES = frozenset({"DES2", "DES3"})
ENCRYPTING = frozenset({"encrypt", "encrypt-only"})


@dataclass(frozen=True)
class NeededKey:
    name: str
    label: str
    types: frozenset[str] | None = None  # None: any type (bureau keys)
    usages: frozenset[str] | None = None


def needed_keys(issuer_id: str, profile: ProductProfile, kmc_label: str) -> list[NeededKey]:
    imks = ImkLabels.for_issuer(issuer_id)
    keys = [NeededKey("KMC", kmc_label)]
    keys += [
        NeededKey(name, label, DES, frozenset({"derive"}))
        for name, label in (("IMK-AC", imks.ac), ("IMK-SMI", imks.smi), ("IMK-SMC", imks.smc))
    ]
    pin = PinKeys.for_issuer(issuer_id)
    if PinBlockFormat.ISO0 in profile.pin_formats and pin.iso0:
        keys.append(NeededKey("PIN key (format 0)", pin.iso0, DES, ENCRYPTING))
    if PinBlockFormat.ISO4 in profile.pin_formats and pin.iso4:
        aes = frozenset({"AES128", "AES192", "AES256"})
        keys.append(NeededKey("PIN key (format 4)", pin.iso4, aes, ENCRYPTING))
    if profile.pin_verification is not PinVerification.NONE and pin.pvk:
        keys.append(NeededKey("PVK", pin.pvk, DES, ENCRYPTING))
    if profile.cvv:
        cvk = CvkLabels.for_issuer(issuer_id)
        des = frozenset({"DES1", "DES2"})
        keys += [NeededKey("CVK-A", cvk.a, des, ENCRYPTING), NeededKey("CVK-B", cvk.b, des)]
    return keys


def inventory_problems(
    needed: Sequence[NeededKey], rows: Mapping[str, Mapping[str, Any] | None]
) -> list[str]:
    """Missing, inactive, wrong type or usage, by the inventory alone."""
    problems = []
    for key in needed:
        row = rows.get(key.label)
        if row is None or row["state"] != "active":
            state = "missing" if row is None else row["state"]
            problems.append(f"{key.name} {key.label} is {state}: load it by key ceremony")
        elif key.types is not None and row["key_type"] not in key.types:
            problems.append(
                f"{key.name} {key.label} is {row['key_type']}, not {'/'.join(sorted(key.types))}"
            )
        elif key.usages is not None and row["usage"] not in key.usages:
            problems.append(f"{key.name} {key.label} has usage {row['usage']}")
    return problems


_CHECK_VALUE = {KcvMethod.DES.value, KcvMethod.AES_ZERO_BLOCK.value}


def hsm_kcv_problems(hsm: Hsm, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each key in the HSM with the inventory's KCV (CKA_CHECK_VALUE methods; HSM worker)."""
    problems = []
    for row in rows:
        key = hsm.find_key(row["label"])
        if key is None:
            problems.append(f"key {row['label']} is in the inventory but not in the HSM")
            continue
        others = row.get("other_kcvs") or []
        if isinstance(others, str):  # jsonb as asyncpg hands it over
            others = json.loads(others)
        kcvs = [(row["kcv"], row["kcv_method"])] + [(k["kcv"], k["method"]) for k in others]
        for value, method in kcvs:
            if method in _CHECK_VALUE and not kcv_of(key, KcvMethod(method)).matches(value):
                problems.append(f"key {row['label']}: its KCV in the HSM is not {value}")
    return problems


def certificate_problem(
    hsm: Hsm, issuer_id: str, cert: Mapping[str, Any], ca: RsaPublic, today: date
) -> str | None:
    """Whether the stored certificate still certifies the issuer key in the HSM (HSM worker)."""
    label = issuer_key_label(issuer_id)
    issuer = rsa_public(hsm, label)
    if issuer is None:
        return f"issuer RSA key {label} is not in the HSM"
    try:
        check_issuer_certificate(
            bytes(cert["certificate"]),
            bytes(cert["remainder"]),
            bytes(cert["exponent"]),
            ca,
            issuer,
            today,
        )
    except OdaError as exc:
        return f"issuer certificate of {label}: {exc}"
    return None


async def product_key_problems(
    repo: KeymgmtRepository,
    hsm: Hsm,
    issuer_id: str,
    profile: ProductProfile,
    kmc_label: str,
    today: date,
) -> list[str]:
    """Everything wrong with the keys of an issuer's product, each naming the key."""
    needed = needed_keys(issuer_id, profile, kmc_label)
    rows = {k.label: await repo.keys.key(k.label) for k in needed}
    problems = inventory_problems(needed, rows)
    present = [row for row in rows.values() if row is not None and row["state"] == "active"]
    problems += await hsm.call(hsm_kcv_problems, present)
    emv = profile.emv
    if emv is None or not emv.oda_methods:
        return problems
    label = issuer_key_label(issuer_id)
    cert = await repo.oda.issuer_certificate(issuer_id, label)
    if cert is None:
        return [*problems, f"issuer certificate for {label} is missing: import it"]
    ca = await repo.oda.ca_key(cert["rid"], cert["ca_index"])
    if ca is None:
        return [
            *problems,
            f"issuer certificate of {label}: CA {cert['rid']}/{cert['ca_index']} is not trusted",
        ]
    public = RsaPublic(bytes(ca["modulus"]), bytes(ca["exponent"]))
    problem = await hsm.call(certificate_problem, issuer_id, cert, public, today)
    return problems if problem is None else [*problems, problem]
