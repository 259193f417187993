"""Personalisation for a station: what a card needs before its script is built (prepared,
not cancelled, bound to no other chip, its keys active), the script builder the secure channel
calls once the card has proved itself (an EMV card or a USIM), and the check that the keys did
not change since preparation. No database and no HTTP here: the endpoint passes what it read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.keymgmt.emv.card_data import EmvCardRows
from services.keymgmt.emv.keys import ImkLabels
from services.keymgmt.emv.perso import PersoScript, PersoSummary
from services.keymgmt.emv.service import build_card_script, imks_of
from services.keymgmt.gp.channel import InitializeUpdateAnswer, ScriptCommand
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.perso.schemas import PersoRefused
from services.keymgmt.settings import KeymgmtSettings
from services.keymgmt.sim.perso import SimPersoScript, build_sim_script, mnc_length_of
from services.keymgmt.sim.profile import SimProfile, profile_of


@dataclass(frozen=True)
class PersoTarget:
    """A card ready for its script: its rows, and the USIM's when it is one."""

    prepared: Mapping[str, Any]
    vaulted: Mapping[str, Any]
    bound: Mapping[str, Any] | None
    sim: Mapping[str, Any] | None
    mnc_length: int
    imks: ImkLabels
    sim_profile: SimProfile | None = None
    emv: EmvCardRows | None = None  # an EMV card's profile rows (docs/emv-profile.md)


def other_station(bound: Mapping[str, Any] | None, station: str) -> str | None:
    """The station the card is bound at, when it is not `station` (station binding: the
    station named by the caller's own token, never by the request)."""
    if bound is not None and bound["station"] != station:
        return str(bound["station"])
    return None


def binding_problem(bound: Mapping[str, Any] | None, chip: str, chip_card: Any) -> str | None:
    """Why this chip cannot be personalised as this card, or None."""
    if bound is not None and bound["chip_serial"] != chip:
        return "the card is already bound to another chip"
    if bound is None and chip_card is not None:
        return "this chip is already bound to another card"
    return None


def target_of(
    prepared: Mapping[str, Any],
    vaulted: Mapping[str, Any],
    bound: Mapping[str, Any] | None,
    sim: Mapping[str, Any] | None,
    sim_product: Mapping[str, Any] | None,
    emv: EmvCardRows | None = None,
) -> PersoTarget:
    """The card's target; a USIM needs its product (for the MNC length)."""
    mnc_length, profile = 0, None
    if sim is not None:
        if sim_product is None:
            raise PersoRefused("the SIM's product is not configured")
        mnc_length = mnc_length_of(sim_product["imsi_prefix"])
        profile = profile_of(dict(sim_product))
    imks = imks_of(prepared["issuer_id"])
    return PersoTarget(prepared, vaulted, bound, sim, mnc_length, imks, profile, emv)


def needed_keys(target: PersoTarget, kmc_label: str) -> list[str]:
    if target.sim is None:  # an EMV payment card
        return [target.imks.ac, target.imks.smi, target.imks.smc, kmc_label]
    return [target.sim["storage_key_label"], kmc_label]  # a USIM (docs/perso-protocol.md)


class ScriptBuilder:
    """secure_script's `build` (HSM worker): the card's clear script, built only once the card
    has proved it holds our keys; keeps what it built for its summary."""

    def __init__(self, target: PersoTarget, settings: KeymgmtSettings) -> None:
        self.target, self.settings = target, settings
        self.built: list[PersoScript | SimPersoScript] = []

    def __call__(self, hsm: Hsm, answer: InitializeUpdateAnswer) -> tuple[ScriptCommand, ...]:
        div, s, t = answer.diversification_data, self.settings, self.target
        if t.sim is not None:
            sim = (t.sim, div, s.kmc_label, t.mnc_length, t.sim_profile)
            self.built.append(build_sim_script(hsm, *sim))
        else:
            if t.emv is None:
                raise PersoRefused("the card's product has no EMV profile (docs/emv-profile.md)")
            args = (div, t.imks, s.kmc_label, s.service_code, t.emv)
            self.built.append(build_card_script(hsm, t.vaulted, *args))
        return self.built[-1].commands


def check_unchanged_keys(summary: PersoSummary | Any, prepared: Mapping[str, Any]) -> None:
    """An EMV card's MK KCVs must be the ones of its preparation."""
    if isinstance(summary, PersoSummary):
        kcvs = tuple(k.value for _, k in summary.mk_kcvs)
        expected = (prepared["mk_ac_kcv"], prepared["mk_smi_kcv"], prepared["mk_smc_kcv"])
        if kcvs != expected:
            raise PersoRefused("the issuer keys changed since the card was prepared")
