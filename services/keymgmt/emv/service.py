"""EMV data preparation and QA checks: per-card master-key KCVs, the perso script of a vaulted
card, the records QA reads back, ARQC verification.

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
from services.keymgmt.emv.records import magstripe_record, static_record
from services.keymgmt.hsm.kcv import KcvMethod, kcv_computed
from services.keymgmt.hsm.session import Hsm, HsmError
from services.keymgmt.vault.service import OpenedCard, open_card
from shared.iso7816 import Tlv, decode_tlv

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
    """The `70` templates QA reads back: "1" SFI 1 record 1 (track 2, name), "2" SFI 2 record
    1 (the static data signed for ODA), as preparation wrote them (HSM worker)."""
    record = emv_record(open_card(hsm, vaulted), service_code)
    data = card_profile_data(hsm, rows, record)
    return {
        "1": magstripe_record(record, data.icvv),
        "2": static_record(record, data.profile, data.effective),
    }


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
