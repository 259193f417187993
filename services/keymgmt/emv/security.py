"""A card's PIN and card verification values at data preparation, per the product profile.

``prepare_card_security`` is an HSM-worker function: it opens the vault record, issues a PIN
(pin.py) and computes CVV/iCVV/CVV2 (cvv.py) with the issuer's keys, and returns only what
keymgmt's tables may hold: encrypted PIN blocks, PVV or offset, and the three values sealed
under the card's own vault key (bound to card and issuer as GCM AAD).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from uuid import UUID

from services.keymgmt.emv.card_data import (
    EmvPrep,
    IssuerOdaInputs,
    prepare_emv_data,
    values_context,
)
from services.keymgmt.emv.cvv import (
    CVV2_SERVICE_CODE,
    CvkLabels,
    card_verification_values,
    visa_cvv,
)
from services.keymgmt.emv.keys import ImkLabels
from services.keymgmt.emv.pin import (
    IssuedPin,
    PinBlockFormat,
    PinKeys,
    PinPolicy,
    PinVerification,
    issue_pin,
    protect_pin,
    random_pin,
)
from services.keymgmt.emv.schemas import ProductProfile
from services.keymgmt.emv.service import (
    KEY_SCHEMES,
    Preparation,
    emv_record,
    mk_kcv,
    mk_option,
)
from services.keymgmt.hsm.rsa import RsaPublic
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.hsm.storage import PIN_STORAGE_KEY
from services.keymgmt.vault.crypto import SealedPan, seal_bytes
from services.keymgmt.vault.service import OpenedCard, open_card


@dataclass(frozen=True)
class CardSecurity:
    pin: IssuedPin | None
    pvki: str | None
    cvk: CvkLabels | None
    sealed_values: bytes | None
    emv: EmvPrep | None = None


@dataclass(frozen=True)
class EmvInputs:
    """What an EMV-profile card's preparation needs beside its record: the issuer certificate
    (None without ODA), the card's ICC pool pair (None without DDA/CDA), today's date."""

    issuer: IssuerOdaInputs | None
    icc: RsaPublic | None
    pool_id: int | None
    today: date


def profile_key_labels(issuer_id: str, profile: ProductProfile) -> list[str]:
    """The issuer keys a product profile needs (checked active in the inventory first)."""
    policy, labels = profile.pin_policy(), []
    if policy is not None:
        keys = PinKeys.for_issuer(issuer_id)
        labels += [keys.iso0] if PinBlockFormat.ISO0 in policy.formats else []
        labels += [keys.iso4] if PinBlockFormat.ISO4 in policy.formats else []
        labels += [keys.pvk] if policy.verification is not PinVerification.NONE else []
    if profile.cvv:
        cvk = CvkLabels.for_issuer(issuer_id)
        labels += [cvk.a, cvk.b]
    return [label for label in labels if label is not None]


def prepare_card_security(
    hsm: Hsm, vaulted: Mapping[str, Any], profile: ProductProfile, service_code: str
) -> CardSecurity:
    """PIN and CVVs of a vaulted card (HSM worker). KeyNotFoundError: an issuer key is
    missing from the HSM; HsmError: the profile needs a key the issuer does not have."""
    return card_security(hsm, open_card(hsm, vaulted), vaulted, profile, service_code)


def card_security(
    hsm: Hsm,
    card: OpenedCard,
    vaulted: Mapping[str, Any],
    profile: ProductProfile,
    service_code: str,
    emv: EmvInputs | None = None,
) -> CardSecurity:
    """PIN, CVVs and, for a product with an EMV profile, the offline PIN wrap and the ODA
    signatures (card_data.prepare_emv_data), the PIN digits shared by all."""
    issuer, card_id = vaulted["issuer_id"], vaulted["card_id"]
    policy = profile.pin_policy()
    pin, pvki, emv_prep = None, None, None
    if policy is not None:
        digits = random_pin(hsm, policy.length)
        try:
            pin = issue_card_pin(hsm, card.pan, policy, PinKeys.for_issuer(issuer), digits)
            if profile.emv is not None:
                inputs = emv or EmvInputs(None, None, None, date.today())
                record = emv_record(card, service_code)
                emv_prep = prepare_emv_data(
                    hsm, record, profile.emv, digits, inputs.issuer, inputs.icc, inputs.today
                )
        finally:
            digits[:] = bytes(len(digits))
        pvki = policy.pvki if pin.pvv is not None else None
    cvk, sealed = None, None
    if profile.cvv:
        cvk = CvkLabels.for_issuer(issuer)
        values = card_verification_values(hsm, cvk, card.pan, card.expiry, service_code)
        # CVV2 is not kept: it is computed again for the card body's print (print_view).
        clear = json.dumps({"cvv": values.cvv, "icvv": values.icvv})
        vault_label = SealedPan.from_bytes(bytes(vaulted["pan_blob"])).key_label
        sealed = seal_bytes(hsm, vault_label, clear.encode(), values_context(card_id, issuer))
    return CardSecurity(pin, pvki, cvk, sealed, emv_prep)


@dataclass(frozen=True)
class PrintView:
    """What graphical prints of a card: the opened record and, for a product with a CVK pair,
    the CVV2 computed in the HSM for this print only (never stored, logged or sent on)."""

    card: OpenedCard
    cvv2: str | None = field(default=None, repr=False)


def print_view(hsm: Hsm, vaulted: Mapping[str, Any], cvk: CvkLabels | None) -> PrintView:
    """The card's print data (HSM worker): its CVV2 (service code 000) under ``cvk``, the CVK
    pair its values were prepared under, else none."""
    card = open_card(hsm, vaulted)
    if cvk is None:
        return PrintView(card)
    return PrintView(card, visa_cvv(hsm, cvk, card.pan, card.expiry, CVV2_SERVICE_CODE))


def prepare_card_data(
    hsm: Hsm,
    vaulted: Mapping[str, Any],
    imks: ImkLabels,
    service_code: str,
    profile: ProductProfile | None,
    emv: EmvInputs | None = None,
) -> tuple[Preparation, CardSecurity | None]:
    """Data preparation of one card in ONE HSM-worker call, the vault record opened once:
    the MK-AC/SMI/SMC KCVs (each MK derived for the check only, service.mk_kcv) and, when
    the product asks, PIN and CVVs. ValueError: the record cannot make an EMV card."""
    card = open_card(hsm, vaulted)
    emv_record(card, service_code)  # validates every field the perso script will need
    option = mk_option(card.pan)
    ac, smi, smc = (
        mk_kcv(hsm, label, card.pan, card.psn, option) for label in (imks.ac, imks.smi, imks.smc)
    )
    prep = Preparation(KEY_SCHEMES[option], (ac, smi, smc))
    if profile is None:
        return prep, None
    return prep, card_security(hsm, card, vaulted, profile, service_code, emv)


def issue_card_pin(
    hsm: Hsm, pan: str, policy: PinPolicy, keys: PinKeys, digits: bytearray | None = None
) -> IssuedPin:
    """Only the keys the policy uses: a product without PVV needs no PVK. ``digits``: the
    PIN drawn by the caller (who zeroes it), else a new random one."""
    needs_pvk = policy.verification is not PinVerification.NONE
    used = PinKeys(
        keys.iso0 if PinBlockFormat.ISO0 in policy.formats else None,
        keys.iso4 if PinBlockFormat.ISO4 in policy.formats else None,
        keys.pvk if needs_pvk else None,
    )
    if digits is None:
        return issue_pin(hsm, pan, policy, used)
    return protect_pin(hsm, digits, pan, policy, used)


def security_rows(card_id: UUID, issuer_id: str, sec: CardSecurity) -> dict[str, Any]:
    """Rows for card_pins and card_verification_values (either may be absent)."""
    rows: dict[str, Any] = {}
    if sec.pin is not None:
        iso0 = sec.pin.blocks.get(PinBlockFormat.ISO0)
        iso4 = sec.pin.blocks.get(PinBlockFormat.ISO4)
        rows["pin"] = {
            "card_id": card_id,
            "issuer_id": issuer_id,
            "iso0_block": iso0[1] if iso0 else None,
            "iso0_key_label": iso0[0] if iso0 else None,
            "iso4_block": iso4[1] if iso4 else None,
            "iso4_key_label": iso4[0] if iso4 else None,
            "pvki": sec.pvki,
            "pvv": sec.pin.pvv,
            "ibm_offset": sec.pin.offset,
        }
    if sec.cvk is not None and sec.sealed_values is not None:
        rows["cvv"] = {
            "card_id": card_id,
            "issuer_id": issuer_id,
            "cvk_a_label": sec.cvk.a,
            "cvk_b_label": sec.cvk.b,
            "sealed": sec.sealed_values,
        }
    if sec.emv is not None:
        rows["offline_pin"] = {
            "card_id": card_id,
            "storage_key_label": PIN_STORAGE_KEY,
            "wrapped": sec.emv.offline_pin,
        }
    return rows


def oda_row(card_id: UUID, issuer_id: str, prep: EmvPrep, emv: EmvInputs | None) -> dict[str, Any]:
    """The card_oda row of an EMV-profile card (its static data hash even without ODA)."""
    signed = prep.signed
    return {
        "card_id": card_id,
        "issuer_id": issuer_id,
        "issuer_key_label": "" if emv is None or emv.issuer is None else emv.issuer.key_label,
        "pool_id": None if emv is None else emv.pool_id,
        "effective": prep.effective,
        "static_hash": prep.static_hash if signed is None else signed.static_hash,
        "sda": None if signed is None else signed.oda.sda,
        "icc_certificate": None if signed is None else signed.oda.icc_certificate,
    }
