"""EMV CPS personalization script for one card, exactly as docs/perso-protocol.md specifies.

Card static keys, scheme CPG202-AES (docs/perso-protocol.md): the GlobalPlatform EMV CPG 2.02
diversification layout applied with AES-128-ECB under the bureau KMC,
    K_i = AES-128-ECB(KMC, d[4:10] || F0 || i || d[4:10] || 0F || i),  i = 01 ENC, 02 MAC, 03 DEK,
derived in the HSM with CKM_AES_ECB_ENCRYPT_DATA. The per-card master keys (EMV Option A) are
derived in the HSM as sensitive session objects and leave it only wrapped under K_DEK.

The script is a list of clear commands for the card manager's SCP03 session
(services/keymgmt/gp/secure_channel.py protects them): INSTALL [for personalization] of the payment
application, then one STORE DATA per DGI; the one carrying DGI 8000 is marked sensitive.
"""

from __future__ import annotations

import calendar
import logging
from dataclasses import dataclass

from pkcs11 import Attribute, Mechanism, MechanismFlag
from pkcs11.exceptions import AttributeReadOnly

from services.keymgmt.emv.keys import ImkLabels, MkDerivation, derive_icc_mk
from services.keymgmt.gp.cardkeys import SCHEME, STATIC_KEYS, derive_static_key
from services.keymgmt.gp.channel import ScriptCommand
from services.keymgmt.gp.script import dgi, script_commands
from services.keymgmt.hsm.kcv import Kcv, KcvMethod, kcv_computed
from services.keymgmt.hsm.p11 import SymKey
from services.keymgmt.hsm.session import Hsm, HsmError
from shared.pan import mask_pan

log = logging.getLogger(__name__)

AID = bytes.fromhex("A0000000031010")


@dataclass(frozen=True)
class CardRecord:
    pan: str
    psn: str  # 2 digits, "00" when the issuer has none
    expiry: str  # YYMM
    cardholder_name: str
    service_code: str  # 3 digits

    def __post_init__(self) -> None:
        if not self.pan.isdigit() or not 13 <= len(self.pan) <= 19:  # as the vault seals them
            raise ValueError("PAN must be 13-19 digits")
        if not self.psn.isdigit() or len(self.psn) != 2:
            raise ValueError("PSN must be 2 digits")
        if (
            not self.expiry.isdigit()
            or len(self.expiry) != 4
            or not 1 <= int(self.expiry[2:]) <= 12
        ):
            raise ValueError("expiry must be YYMM")
        if not self.service_code.isdigit() or len(self.service_code) != 3:
            raise ValueError("service code must be 3 digits")
        if not 2 <= len(self.cardholder_name) <= 26 or not self.cardholder_name.isascii():
            raise ValueError("cardholder name must be 2-26 ASCII characters")

    def __repr__(self) -> str:  # never print a full PAN
        return f"CardRecord(pan={mask_pan(self.pan)}, psn={self.psn}, expiry={self.expiry})"


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


# -- encodings ---------------------------------------------------------------------------------
def tlv(tag: bytes, value: bytes) -> bytes:
    """BER-TLV (EMV Book 3 Annex B) with definite length."""
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82]) + n.to_bytes(2, "big")
    return tag + length + value


def _bcd(digits: str, pad: str = "F") -> bytes:
    return bytes.fromhex(digits + pad * (len(digits) % 2))


def track2(record: CardRecord) -> bytes:
    """Tag 57: PAN || D || YYMM || service code, F-padded (EMV Book 3, Annex A)."""
    return _bcd(f"{record.pan}D{record.expiry}{record.service_code}")


def expiry_yymmdd(yymm: str) -> bytes:
    year, month = 2000 + int(yymm[:2]), int(yymm[2:])
    return _bcd(f"{yymm}{calendar.monthrange(year, month)[1]:02d}")


def record_dgis(record: CardRecord, app_label: str) -> list[bytes]:
    r1 = tlv(
        b"\x70", tlv(b"\x57", track2(record)) + tlv(b"\x5f\x20", record.cardholder_name.encode())
    )
    r2 = tlv(
        b"\x70",
        tlv(b"\x5a", _bcd(record.pan))
        + tlv(b"\x5f\x24", expiry_yymmdd(record.expiry))
        + tlv(b"\x5f\x34", bytes.fromhex(record.psn))
        + tlv(b"\x9f\x07", b"\xff\x00"),
    )
    fci = tlv(b"\x50", app_label.encode("ascii")) + tlv(b"\x87", b"\x01")
    return [dgi(0x0101, r1), dgi(0x0102, r2), dgi(0x9102, fci)]


def select_apdu() -> bytes:
    return bytes([0x00, 0xA4, 0x04, 0x00, len(AID)]) + AID + b"\x00"


# -- the script --------------------------------------------------------------------------------
def build_perso_script(
    hsm: Hsm,
    record: CardRecord,
    div: bytes,
    imks: ImkLabels,
    kmc_label: str,
    app_label: str = "CARDBUREAU",
    option: MkDerivation = MkDerivation.OPTION_A,
    trusted_wrap: bool = False,
) -> PersoScript:
    """INSTALL [for personalization] + STORE DATA commands for one card, in clear for the secure
    channel (HSM worker). No clear key leaves the HSM: DGI 8000 holds them wrapped under K_DEK.

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
        mk_extra = {Attribute.EXTRACTABLE: True, Attribute.WRAP_WITH_TRUSTED: trusted_wrap}
        wrapped = b""
        kcvs: list[tuple[str, Kcv]] = []
        for name, label in (("MK-AC", imks.ac), ("MK-SMI", imks.smi), ("MK-SMC", imks.smc)):
            # Sensitive session object with no usage at all: it can only be wrapped.
            mk = derive_icc_mk(
                hsm, label, record.pan, record.psn, option, MechanismFlag(0), mk_extra
            )
            created.append(mk)
            check = derive_icc_mk(hsm, label, record.pan, record.psn, option, MechanismFlag.ENCRYPT)
            created.append(check)
            kcvs.append((name, kcv_computed(check, KcvMethod.DES)))
            # ENC = AES-128-ECB(K_DEK, MK). SoftHSM 2.6.1 has no CKM_AES_ECB wrap; CKM_AES_CBC
            # with a zero IV over a single 16-byte block is the same computation.
            wrapped += kdek.wrap_key(mk, mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
        dgis = record_dgis(record, app_label) + [dgi(0x8000, wrapped)]
        summary = PersoSummary(
            chip_serial=div[4:10].hex().upper(),
            pan_masked=mask_pan(record.pan),
            dgis=tuple(d[:2].hex().upper() for d in dgis),
            mk_derivation=option,
            static_key_scheme=SCHEME,
            kdek_kcv=kdek_kcv,
            mk_kcvs=tuple(kcvs),
        )
        commands = script_commands(AID, dgis, frozenset({0x8000}))
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
    app_label: str = "CARDBUREAU",
    option: MkDerivation = MkDerivation.OPTION_A,
    trusted_wrap: bool = False,
) -> PersoScript:
    return await hsm.call(
        build_perso_script, record, div, imks, kmc_label, app_label, option, trusted_wrap
    )
