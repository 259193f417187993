"""EMV CPS personalization script for one card, exactly as docs/perso-protocol.md specifies.

Card static keys, scheme CPG202-AES (docs/perso-protocol.md): the GlobalPlatform EMV CPG 2.02
diversification layout applied with AES-128-ECB under the bureau KMC,
    K_i = AES-128-ECB(KMC, d[4:10] || F0 || i || d[4:10] || 0F || i),  i = 01 ENC, 02 MAC, 03 DEK,
derived in the HSM with CKM_AES_ECB_ENCRYPT_DATA. The per-card master keys (EMV Option A) are
derived in the HSM as sensitive session objects and leave it only wrapped under K_DEK.

The script is a list of clear commands for the card manager's SCP03 session
(services/keymgmt/gp/secure_channel.py protects them): INSTALL [for personalization] of the payment
application, then one STORE DATA per DGI of the profile (docs/emv-profile.md); those carrying
DGIs 8000, 8010 and 8201 are marked sensitive. Every sensitive value is formed in the HSM by
C_WrapKey under K_DEK: the per-card master keys (8000), the offline PIN block held as an AES
key object (8010), the ICC private key unwrapped from the pool's wrap (8201).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pkcs11 import Attribute, Mechanism, MechanismFlag
from pkcs11.exceptions import AttributeReadOnly

from services.keymgmt.emv.keys import ImkLabels, MkDerivation, derive_icc_mk
from services.keymgmt.emv.offline_pin import offline_pin_dgi
from services.keymgmt.emv.profile import EmvProfile
from services.keymgmt.emv.records import AID, CardOda, CardRecord, IssuerOda, clear_dgis
from services.keymgmt.gp.cardkeys import SCHEME, STATIC_KEYS, derive_static_key
from services.keymgmt.gp.channel import ScriptCommand
from services.keymgmt.gp.script import dgi, script_commands
from services.keymgmt.hsm.kcv import Kcv, KcvMethod, kcv_computed
from services.keymgmt.hsm.p11 import SymKey
from services.keymgmt.hsm.rsa import rewrap_private
from services.keymgmt.hsm.session import Hsm, HsmError
from shared.pan import mask_pan

log = logging.getLogger(__name__)

SENSITIVE_DGIS = frozenset({0x8000, 0x8010, 0x8201})
__all__ = ["AID", "CardRecord", "PersoScript", "PersoSummary", "build_perso_script"]


@dataclass(frozen=True)
class PersoSummary:
    chip_serial: str
    pan_masked: str
    dgis: tuple[str, ...]
    mk_derivation: MkDerivation
    static_key_scheme: str
    kdek_kcv: Kcv
    mk_kcvs: tuple[tuple[str, Kcv], ...]  # (MK-AC|MK-SMI|MK-SMC, DES KCV)


@dataclass(frozen=True)
class PersoScript:
    commands: tuple[ScriptCommand, ...]  # clear, for the secure channel to protect
    summary: PersoSummary

    @property
    def apdus(self) -> tuple[bytes, ...]:
        return tuple(c.apdu for c in self.commands)


def select_apdu() -> bytes:
    return bytes([0x00, 0xA4, 0x04, 0x00, len(AID)]) + AID + b"\x00"


@dataclass(frozen=True)
class CardProfileData:
    """Everything but the keys that a card's script carries, made at preparation: the
    product's EMV profile, the iCVV, the ODA data, and the sensitive parts as wraps under
    bureau storage keys (the ICC private key under the pool key, the offline PIN block under
    the PIN storage key), re-wrapped under the card's K_DEK only inside the HSM."""

    profile: EmvProfile
    icvv: str | None
    effective: str  # YYMMDD, 5F25
    issuer: IssuerOda | None
    card: CardOda | None
    icc_wrapped: bytes | None
    pool_key_label: str | None
    offline_pin_wrapped: bytes
    pin_storage_label: str


# -- the script --------------------------------------------------------------------------------
def _master_keys(
    hsm: Hsm,
    kdek: SymKey,
    record: CardRecord,
    imks: ImkLabels,
    option: MkDerivation,
    trusted_wrap: bool,
    created: list[SymKey],
) -> tuple[bytes, list[tuple[str, Kcv]]]:
    """DGI 8000's value and the MK KCVs: each MK a sensitive session object with no usage at
    all (it can only be wrapped), its KCV from a second, encrypt-only derivation."""
    mk_extra = {Attribute.EXTRACTABLE: True, Attribute.WRAP_WITH_TRUSTED: trusted_wrap}
    wrapped = b""
    kcvs: list[tuple[str, Kcv]] = []
    for name, label in (("MK-AC", imks.ac), ("MK-SMI", imks.smi), ("MK-SMC", imks.smc)):
        mk = derive_icc_mk(hsm, label, record.pan, record.psn, option, MechanismFlag(0), mk_extra)
        created.append(mk)
        check = derive_icc_mk(hsm, label, record.pan, record.psn, option, MechanismFlag.ENCRYPT)
        created.append(check)
        kcvs.append((name, kcv_computed(check, KcvMethod.DES)))
        # ENC = AES-128-ECB(K_DEK, MK). SoftHSM 2.6.1 has no CKM_AES_ECB wrap; CKM_AES_CBC
        # with a zero IV over a single 16-byte block is the same computation.
        wrapped += kdek.wrap_key(mk, mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
    return wrapped, kcvs


def _sensitive_dgis(hsm: Hsm, kdek: SymKey, data: CardProfileData) -> list[bytes]:
    """DGIs 8010 and (DDA/CDA) 8201, formed by C_WrapKey under K_DEK."""
    out = [
        dgi(0x8010, offline_pin_dgi(hsm, data.pin_storage_label, data.offline_pin_wrapped, kdek))
    ]
    if data.profile.needs_icc_key:
        if data.icc_wrapped is None or data.pool_key_label is None:
            raise HsmError("the product uses DDA/CDA but the card has no ICC key pair")
        pool_key = hsm.key(data.pool_key_label)
        out.append(dgi(0x8201, rewrap_private(pool_key, data.icc_wrapped, kdek)))
    return out


def build_perso_script(
    hsm: Hsm,
    record: CardRecord,
    div: bytes,
    imks: ImkLabels,
    kmc_label: str,
    data: CardProfileData,
    option: MkDerivation = MkDerivation.OPTION_A,
    trusted_wrap: bool = False,
) -> PersoScript:
    """INSTALL [for personalization] + STORE DATA commands for one card, in clear for the secure
    channel (HSM worker). No clear key leaves the HSM: DGIs 8000, 8010 and 8201 are C_WrapKey
    outputs under K_DEK.

    ``trusted_wrap``: derive the per-card keys with CKA_WRAP_WITH_TRUSTED and K_DEK with
    CKA_TRUSTED. SoftHSM 2.6.1 lets only the SO set CKA_TRUSTED (and an SO session cannot use
    private keys), so there it fails with HsmError; enable it on HSMs that allow it.

    KCVs: SoftHSM's CKA_CHECK_VALUE of derived keys is wrong, so each KCV is computed by a
    second, encrypt-only derivation of the same key; the wrap-only keys keep no other usage.
    """
    created: list[SymKey] = []
    dek = STATIC_KEYS["DEK"]
    try:
        kdek = derive_static_key(hsm, kmc_label, div, dek, MechanismFlag.WRAP)
        created.append(kdek)
        if trusted_wrap:
            try:  # set after derivation: a refused template would leave an orphan object
                kdek[Attribute.TRUSTED] = True
            except AttributeReadOnly as exc:
                raise HsmError("this token refuses CKA_TRUSTED for the key-manager user") from exc
        created.append(derive_static_key(hsm, kmc_label, div, dek, MechanismFlag.SIGN))
        kdek_kcv = kcv_computed(created[-1], KcvMethod.AES_CMAC)
        wrapped, kcvs = _master_keys(hsm, kdek, record, imks, option, trusted_wrap, created)
        dgis = clear_dgis(record, data.profile, data.icvv, data.effective, data.issuer, data.card)
        dgis += [dgi(0x8000, wrapped), *_sensitive_dgis(hsm, kdek, data)]
        summary = PersoSummary(
            chip_serial=div[4:10].hex().upper(),
            pan_masked=mask_pan(record.pan),
            dgis=tuple(d[:2].hex().upper() for d in dgis),
            mk_derivation=option,
            static_key_scheme=SCHEME,
            kdek_kcv=kdek_kcv,
            mk_kcvs=tuple(kcvs),
        )
        commands = script_commands(AID, dgis, SENSITIVE_DGIS)
        log.debug("perso script built", extra={"chip_serial": summary.chip_serial})
        return PersoScript(commands, summary)
    finally:
        for obj in created:
            obj.destroy()


async def abuild_perso_script(
    hsm: Hsm,
    record: CardRecord,
    div: bytes,
    imks: ImkLabels,
    kmc_label: str,
    data: CardProfileData,
    option: MkDerivation = MkDerivation.OPTION_A,
    trusted_wrap: bool = False,
) -> PersoScript:
    return await hsm.call(
        build_perso_script, record, div, imks, kmc_label, data, option, trusted_wrap
    )
