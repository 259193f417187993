"""EMV data preparation and QA checks: per-card master-key KCVs, the perso script of a vaulted
card, the records QA reads back (compared in readback.py), ARQC verification.

Functions taking an ``Hsm`` first are HSM-worker functions: run them with ``await
hsm.call(fn, ...)``; they touch no database. Everything else here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pkcs11 import MechanismFlag

from services.keymgmt.emv.card_data import EmvCardRows, card_profile_data
from services.keymgmt.emv.keys import ImkLabels, MkDerivation, derive_icc_mk, verify_arqc
from services.keymgmt.emv.perso import CardRecord, PersoScript, build_perso_script
from services.keymgmt.emv.records import afl_records
from services.keymgmt.hsm.kcv import KcvMethod, kcv_computed
from services.keymgmt.hsm.session import Hsm, HsmError
from services.keymgmt.vault.service import OpenedCard, open_card

PREPARED_DGIS = ("0101", "0201", "9102", "9104", "0D01", "9010", "8000", "8010")
KEY_SCHEMES = {MkDerivation.OPTION_A: "EMV-OPTION-A", MkDerivation.OPTION_B: "EMV-OPTION-B"}


def imks_of(issuer_id: str) -> ImkLabels:
    """The issuer's IMK labels; an issuer id that cannot name a key is a HsmError."""
    try:
        return ImkLabels.for_issuer(issuer_id)
    except ValueError as exc:
        raise HsmError(f"issuer id {issuer_id!r} cannot name keys") from exc


def emv_record(card: OpenedCard, service_code: str) -> CardRecord:
    """The EMV record of an opened vault record (ValueError: it cannot make an EMV card)."""
    return CardRecord(card.pan, card.psn, card.expiry, card.cardholder_name, service_code)


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
    hsm: Hsm, vaulted: Mapping[str, Any], service_code: str, rows: EmvCardRows
) -> dict[str, bytes]:
    """The `70` templates of every AFL record QA reads back, by DGI number ("0101", "0201",
    ...), as preparation wrote them (HSM worker); HsmError when the card's EMV data moved."""
    record = emv_record(open_card(hsm, vaulted), service_code)
    d = card_profile_data(hsm, rows, record)
    return afl_records(record, d.profile, d.icvv, d.effective, d.issuer, d.card)


def build_card_script(
    hsm: Hsm,
    vaulted: Mapping[str, Any],
    div: bytes,
    imks: ImkLabels,
    kmc_label: str,
    service_code: str,
    rows: EmvCardRows,
) -> PersoScript:
    """The perso script of a vaulted card for one chip (HSM worker, docs/emv-profile.md)."""
    card = open_card(hsm, vaulted)
    record = emv_record(card, service_code)
    data = card_profile_data(hsm, rows, record)
    return build_perso_script(hsm, record, div, imks, kmc_label, data, mk_option(card.pan))


def verify_card_arqc(
    hsm: Hsm,
    vaulted: Mapping[str, Any],
    imk_ac: str,
    cdol1: bytes,
    atc: bytes,
    arqc: bytes,
    aip: bytes,
) -> bool:
    """The ARQC over the CDOL1 data, the AIP the card was personalized with (its product's
    EMV profile: the card's DGI 9104/9105) and the ATC."""
    card = open_card(hsm, vaulted)
    return verify_arqc(
        hsm, imk_ac, card.pan, card.psn, atc, cdol1, arqc, aip, option=mk_option(card.pan)
    )
