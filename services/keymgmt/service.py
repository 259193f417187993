"""keymgmt's domain: the vault record, data preparation, chip read-back checks.

Functions taking an ``Hsm`` first are HSM-worker functions: run them with ``await
hsm.call(fn, ...)``; they touch no database. Everything else here is pure.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pkcs11 import MechanismFlag
from pydantic import BaseModel, ConfigDict, Field

from services.keymgmt.emv import ImkLabels, MkDerivation, derive_icc_mk, verify_arqc
from services.keymgmt.hsm import Hsm
from services.keymgmt.kcv import KcvMethod, kcv_computed
from services.keymgmt.perso import CardRecord, PersoScript, build_perso_script, record_dgis
from services.keymgmt.vault import (
    decrypt_pan,
    encrypt_pan,
    mask_pan,
    open_sealed,
    pan_hash,
    seal_bytes,
)
from shared.iso7816 import Tlv, decode_tlv

PREPARED_DGIS = ("0101", "0102", "9102", "8000")
KEY_SCHEMES = {MkDerivation.OPTION_A: "EMV-OPTION-A", MkDerivation.OPTION_B: "EMV-OPTION-B"}


# -- the vault record ---------------------------------------------------------------------------
class Address(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lines: list[str] = Field(min_length=1, max_length=4)
    postcode: str = Field(max_length=16)
    city: str = Field(max_length=64)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class VaultCardIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    card_id: UUID
    pan: str = Field(pattern=r"^\d{12,19}$", repr=False)
    psn: str = Field(default="00", pattern=r"^\d{2}$")
    expiry: str = Field(pattern=r"^\d{2}(0[1-9]|1[0-2])$", description="YYMM")
    cardholder_name: str = Field(min_length=2, max_length=26)
    address: Address


class VaultStore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    issuer_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    cards: list[VaultCardIn] = Field(min_length=1)


class ReadbackRequest(BaseModel):
    card_id: UUID
    records: dict[str, str] = Field(description='{"1": hex, "2": hex}: SFI 1 records')


class ArqcRequest(BaseModel):
    card_id: UUID
    cdol1: str = Field(pattern=r"^[0-9A-Fa-f]{58}$")
    atc: str = Field(pattern=r"^[0-9A-Fa-f]{4}$")
    arqc: str = Field(pattern=r"^[0-9A-Fa-f]{16}$")


@dataclass(frozen=True)
class SealedCard:
    card_id: UUID
    pan_hash: bytes
    pan_blob: bytes
    record_blob: bytes
    masked_pan: str


@dataclass(frozen=True)
class OpenedCard:
    """A vault record opened inside keymgmt. Never logged, never returned whole."""

    pan: str
    psn: str
    expiry: str
    cardholder_name: str
    address: dict[str, Any]

    def __repr__(self) -> str:
        return f"OpenedCard(pan={mask_pan(self.pan)})"

    def emv_record(self, service_code: str) -> CardRecord:
        return CardRecord(self.pan, self.psn, self.expiry, self.cardholder_name, service_code)


def pan_context(card_id: UUID, issuer_id: str) -> bytes:
    return f"pan|{card_id}|{issuer_id}".encode()


def record_context(card_id: UUID, issuer_id: str) -> bytes:
    return f"record|{card_id}|{issuer_id}".encode()


def new_pan_token() -> str:
    """An opaque reference: random, so it says nothing about the PAN."""
    return f"pt_{uuid.uuid4().hex}"


def seal_cards(
    hsm: Hsm, vault_label: str, hmac_label: str, issuer_id: str, cards: Sequence[VaultCardIn]
) -> list[SealedCard]:
    """Seal each card's PAN and the rest of its record, and hash the PAN (HSM worker)."""
    out = []
    for card in cards:
        rest = card.model_dump(mode="json", exclude={"card_id", "pan"})
        out.append(
            SealedCard(
                card_id=card.card_id,
                pan_hash=pan_hash(hsm, hmac_label, card.pan),
                pan_blob=encrypt_pan(
                    hsm, vault_label, card.pan, pan_context(card.card_id, issuer_id)
                ),
                record_blob=seal_bytes(
                    hsm,
                    vault_label,
                    json.dumps(rest, sort_keys=True).encode(),
                    record_context(card.card_id, issuer_id),
                ),
                masked_pan=mask_pan(card.pan),
            )
        )
    return out


def pan_hashes(hsm: Hsm, hmac_label: str, pans: Sequence[str]) -> list[bytes]:
    return [pan_hash(hsm, hmac_label, pan) for pan in pans]


def open_card(hsm: Hsm, vaulted: Mapping[str, Any]) -> OpenedCard:
    """Open a vault row (HSM worker); a blob moved to another card or issuer fails."""
    card_id, issuer_id = vaulted["card_id"], vaulted["issuer_id"]
    pan = decrypt_pan(hsm, bytes(vaulted["pan_blob"]), pan_context(card_id, issuer_id))
    rest = json.loads(
        open_sealed(hsm, bytes(vaulted["record_blob"]), record_context(card_id, issuer_id))
    )
    return OpenedCard(
        pan=pan,
        psn=rest["psn"],
        expiry=rest["expiry"],
        cardholder_name=rest["cardholder_name"],
        address=rest["address"],
    )


# -- data preparation -----------------------------------------------------------------------------
def mk_option(pan: str) -> MkDerivation:
    """EMV Book 2 A1.4: Option A, Option B for PANs over 16 digits."""
    return MkDerivation.OPTION_B if len(pan) > 16 else MkDerivation.OPTION_A


@dataclass(frozen=True)
class Preparation:
    key_scheme: str
    mk_kcvs: tuple[str, str, str]  # MK-AC, MK-SMI, MK-SMC (DES KCV method)


def mk_kcv(hsm: Hsm, imk_label: str, pan: str, psn: str, option: MkDerivation) -> str:
    """KCV of a per-card master key, derived in the HSM for the check only and destroyed."""
    check = derive_icc_mk(hsm, imk_label, pan, psn, option, MechanismFlag.ENCRYPT)
    try:
        return kcv_computed(check, KcvMethod.DES).value
    finally:
        check.destroy()


def expected_records(
    hsm: Hsm, vaulted: Mapping[str, Any], service_code: str, app_label: str
) -> dict[str, bytes]:
    """The `70` templates of SFI 1 records 1 and 2 that preparation writes (HSM worker)."""
    record = open_card(hsm, vaulted).emv_record(service_code)
    dgis = record_dgis(record, app_label)
    return {"1": dgis[0][3:], "2": dgis[1][3:]}


def build_card_script(
    hsm: Hsm,
    vaulted: Mapping[str, Any],
    div: bytes,
    imks: ImkLabels,
    kmc_label: str,
    app_label: str,
    service_code: str,
) -> PersoScript:
    """The perso script of a vaulted card for one chip (HSM worker, docs/perso-protocol.md)."""
    card = open_card(hsm, vaulted)
    record = card.emv_record(service_code)
    return build_perso_script(hsm, record, div, imks, kmc_label, app_label, mk_option(card.pan))


def verify_card_arqc(
    hsm: Hsm, vaulted: Mapping[str, Any], imk_ac: str, cdol1: bytes, atc: bytes, arqc: bytes
) -> bool:
    card = open_card(hsm, vaulted)
    return verify_arqc(
        hsm, imk_ac, card.pan, card.psn, atc, cdol1, arqc, option=mk_option(card.pan)
    )


# -- QA read-back ---------------------------------------------------------------------------------
TAG_NAMES = {
    0x57: "track 2 equivalent data",
    0x5F20: "cardholder name",
    0x5A: "PAN",
    0x5F24: "expiry date",
    0x5F34: "PAN sequence number",
    0x9F07: "application usage control",
}


def _template(raw: bytes) -> list[Tlv] | None:
    try:
        items = decode_tlv(raw)
    except ValueError:
        return None
    if len(items) != 1 or items[0].tag != 0x70:
        return None
    return items[0].children


def readback_problems(expected: Mapping[str, bytes], read: Mapping[str, str]) -> list[str]:
    """Compare the records read from the chip with the prepared ones, field by field.

    Problems name the record and the field, never a value (the PAN is among them).
    """
    problems: list[str] = []
    for number, want in sorted(expected.items()):
        raw_hex = read.get(number)
        if raw_hex is None:
            problems.append(f"record {number}: not read back")
            continue
        try:
            raw = bytes.fromhex(raw_hex)
        except ValueError:
            problems.append(f"record {number}: not hex")
            continue
        if raw == want:
            continue
        got_items, want_items = _template(raw), _template(want) or []
        before = len(problems)
        if got_items is None:
            problems.append(f"record {number}: not a single `70` record template")
            continue
        got = {item.tag: item.value for item in got_items}
        for item in want_items:
            name = f"tag {item.tag:X} ({TAG_NAMES.get(item.tag, 'data object')})"
            if item.tag not in got:
                problems.append(f"record {number}: {name} missing")
            elif got[item.tag] != item.value:
                problems.append(f"record {number}: {name} differs")
        for tag in sorted(set(got) - {item.tag for item in want_items}):
            problems.append(f"record {number}: unexpected tag {tag:X}")
        if len(problems) == before:  # same fields, other bytes (order, length form, padding)
            problems.append(f"record {number}: encoding differs")
    for number in sorted(set(read) - set(expected)):
        problems.append(f"record {number}: not a record keymgmt prepares")
    return problems
