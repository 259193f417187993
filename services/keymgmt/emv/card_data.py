"""A card's EMV profile data between preparation and personalization (HSM-worker functions).

At preparation (``prepare_emv_data``): the offline PIN block wrapped under the PIN storage key
(the same digits as the card's PIN blocks), the effective date, and for ODA the card's pool
pair, SDA and ICC certificate signed with the issuer key, with the hash of the static data they
cover. At personalization (``card_profile_data``): everything the script needs, the static data
rebuilt from the vault record and the product profile and refused if its hash moved (the
signatures would no longer verify).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from services.keymgmt.emv.card_oda import SignedCard, sign_card_oda
from services.keymgmt.emv.offline_pin import store_offline_pin
from services.keymgmt.emv.perso import CardProfileData
from services.keymgmt.emv.profile import EmvProfile
from services.keymgmt.emv.records import (
    CardOda,
    CardRecord,
    IssuerOda,
    aip,
    static_data,
    static_record,
)
from services.keymgmt.hsm.rsa import RsaPublic, rsa_public
from services.keymgmt.hsm.session import Hsm, HsmError
from services.keymgmt.hsm.storage import PIN_STORAGE_KEY
from services.keymgmt.vault.crypto import open_sealed


def values_context(card_id: UUID, issuer_id: str) -> bytes:
    return f"cvv|{card_id}|{issuer_id}".encode()


def open_card_values(hsm: Hsm, row: Mapping[str, Any]) -> dict[str, str]:
    """The sealed CVV/iCVV/CVV2 of a card (HSM worker; for the personalisation path only)."""
    context = values_context(row["card_id"], row["issuer_id"])
    values: dict[str, str] = json.loads(open_sealed(hsm, bytes(row["sealed"]), context))
    return values


@dataclass(frozen=True)
class IssuerOdaInputs:
    """The issuer's certificate row (keymgmt's issuer_certificates) as preparation uses it."""

    key_label: str
    ca_index: int
    certificate: bytes
    remainder: bytes

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> IssuerOdaInputs:
        return cls(
            row["key_label"],
            int(row["ca_index"], 16),
            bytes(row["certificate"]),
            bytes(row["remainder"]),
        )


def issuer_oda(hsm: Hsm, inputs: IssuerOdaInputs) -> IssuerOda:
    public = rsa_public(hsm, inputs.key_label)
    if public is None:
        raise HsmError(f"issuer RSA key {inputs.key_label} is not in the HSM")
    return IssuerOda(inputs.ca_index, inputs.certificate, inputs.remainder, public)


@dataclass(frozen=True)
class EmvPrep:
    offline_pin: bytes
    effective: str
    static_hash: bytes  # SHA-256 of the static data to be authenticated
    signed: SignedCard | None


def prepare_emv_data(
    hsm: Hsm,
    record: CardRecord,
    profile: EmvProfile,
    pin: bytearray,
    issuer: IssuerOdaInputs | None,
    icc: RsaPublic | None,
    today: date,
) -> EmvPrep:
    """The card's offline PIN wrap and ODA signatures (HSM worker)."""
    offline = store_offline_pin(hsm, PIN_STORAGE_KEY, pin)
    effective = today.strftime("%y%m%d")
    static = static_data(static_record(record, profile, effective), aip(profile))
    signed = None
    if profile.oda_methods:
        if issuer is None:
            raise HsmError("the product uses ODA but the issuer has no issuer certificate")
        serial = hsm.random(3)
        signed = sign_card_oda(
            hsm, issuer.key_label, issuer_oda(hsm, issuer), record, profile, effective, icc, serial
        )
    return EmvPrep(offline, effective, hashlib.sha256(static).digest(), signed)


@dataclass(frozen=True)
class EmvCardRows:
    """What keymgmt's tables hold for a card's script (read by the perso endpoint)."""

    profile: EmvProfile
    oda: Mapping[str, Any] | None  # card_oda
    pool: Mapping[str, Any] | None  # icc_key_pool
    issuer: Mapping[str, Any] | None  # issuer_certificates
    offline_pin: Mapping[str, Any] | None  # card_offline_pins
    values: Mapping[str, Any] | None  # card_verification_values (sealed CVV, iCVV, CVV2)


def card_profile_data(hsm: Hsm, rows: EmvCardRows, record: CardRecord) -> CardProfileData:
    """The script's inputs for a prepared card (HSM worker); HsmError names what is missing
    or changed since preparation."""
    if rows.offline_pin is None or rows.oda is None:
        raise HsmError("the card was not prepared with an EMV profile")
    profile, oda = rows.profile, rows.oda
    static = static_data(static_record(record, profile, oda["effective"]), aip(profile))
    if hashlib.sha256(static).digest() != bytes(oda["static_hash"]):
        raise HsmError("the product's EMV profile changed since the card was prepared")
    issuer, card = None, None
    if profile.oda_methods:
        if rows.issuer is None:
            raise HsmError("the issuer has no issuer certificate")
        issuer = issuer_oda(hsm, IssuerOdaInputs.of_row(rows.issuer))
        remainder, exponent = b"", b""
        if rows.pool is not None:
            modulus = bytes(rows.pool["modulus"])
            remainder = modulus[issuer.public.size - 42 :]
            exponent = bytes(rows.pool["exponent"])
        card = CardOda(
            None if oda["sda"] is None else bytes(oda["sda"]),
            None if oda["icc_certificate"] is None else bytes(oda["icc_certificate"]),
            remainder,
            exponent,
        )
    return CardProfileData(
        profile=profile,
        icvv=None if rows.values is None else open_card_values(hsm, rows.values)["icvv"],
        effective=oda["effective"],
        issuer=issuer,
        card=card,
        icc_wrapped=None if rows.pool is None else bytes(rows.pool["wrapped"]),
        pool_key_label=None if rows.pool is None else rows.pool["pool_key_label"],
        offline_pin_wrapped=bytes(rows.offline_pin["wrapped"]),
        pin_storage_label=rows.offline_pin["storage_key_label"],
    )
