"""The personalization script of a SIM (USIM) for one chip, in the EMV script's shape.

Contract: docs/perso-protocol.md ("SIM products"); the virtual card's side is vcard/usim.py.
The commands are clear (`ScriptCommand`s for services/keymgmt/secure_channel.secure_script to
protect, like perso.build_perso_script's): INSTALL [for personalization] of the USIM, then one
STORE DATA per DGI:

    DGI 0201  EF_ICCID (TS 102 221 §13.2: BCD, nibbles swapped, F-padded to 10 bytes)
    DGI 0202  EF_IMSI (TS 31.102 §4.2.2: length, parity nibble, digits)
    DGI 0203  EF_AD (TS 31.102 §4.2.18: normal operation, length of the MNC)
    DGI 0204-020D  the profile's files (profile.py): SPN, HPPLMN, FPLMN, ACC, UST, ...
    DGI 8101  AES-128-ECB(K_DEK, Ki) || AES-128-ECB(K_DEK, OPc)       -- sensitive
    DGI 8102  AES-128-CBC(K_DEK, IV 0, PIN1 PUK1 PIN2 PUK2 ADM1 flags) -- sensitive
    DGI 8103  AES-128-ECB(K_DEK, KIc) || .. KID || .. KIK (OTA)       -- sensitive, optional

Ki and OPc, the PIN block and the OTA keys (credentials.py) are held wrapped under the
bureau SIM storage key; here each is unwrapped inside the HSM as a sensitive session object
with no usage, and wrapped again under the card's K_DEK (CPG202-AES from the KMC,
perso.derive_static_key) with CKM_AES_CBC and a zero IV (over one block that is AES-ECB;
SoftHSM 2.6.1 has no CKM_AES_ECB wrap). No clear Ki, OPc, PIN or OTA key leaves the HSM;
the 81xx commands are sensitive, so the session runs at C-DECRYPTION and their data travels
encrypted once more under S-ENC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from services.keymgmt.gp.cardkeys import STATIC_KEYS, derive_static_key
from services.keymgmt.gp.channel import ScriptCommand
from services.keymgmt.gp.script import dgi, install_for_personalization_apdu, store_data_apdus
from services.keymgmt.hsm.kcv import Kcv, KcvMethod, kcv_computed
from services.keymgmt.hsm.p11 import SymKey, as_key
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.sim.credentials import BLOCK as PIN_BLOCK
from services.keymgmt.sim.profile import SimProfile, profile_dgis
from services.keymgmt.sim.secrets import WRAP

if TYPE_CHECKING:
    from pkcs11.types import UnwrapMixin

USIM_AID: Final = bytes.fromhex("A0000000871002FFFFFFFF8907090000")
DGI_ICCID: Final = 0x0201
DGI_IMSI: Final = 0x0202
DGI_AD: Final = 0x0203
DGI_SECRETS: Final = 0x8101
DGI_PINS: Final = 0x8102
DGI_OTA: Final = 0x8103
SCHEME: Final = "CPG202-AES"


def swapped_bcd(digits: str, length: int) -> bytes:
    """Two digits a byte, the first in the low nibble, F-padded to ``length`` bytes."""
    if not digits.isdigit() or len(digits) > 2 * length:
        raise ValueError(f"{len(digits)} digits do not fit {length} bytes")
    padded = digits.ljust(2 * length, "F")
    return bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, 2 * length, 2))


def ef_iccid(iccid: str) -> bytes:
    if not 18 <= len(iccid) <= 20:
        raise ValueError("an ICCID is 18-20 digits")
    return swapped_bcd(iccid, 10)


def ef_imsi(imsi: str) -> bytes:
    """Byte 1: bytes used; then the parity nibble (9 odd, 1 even) and the digits."""
    if not imsi.isdigit() or not 6 <= len(imsi) <= 15:
        raise ValueError("an IMSI is 6-15 digits")
    parity = "9" if len(imsi) % 2 else "1"
    return bytes(((len(imsi) + 2) // 2,)) + swapped_bcd(parity + imsi, 8)


def ef_ad(mnc_length: int) -> bytes:
    """EF_AD: UE operation mode normal (00), no additional info, MNC length 2 or 3."""
    if mnc_length not in (2, 3):
        raise ValueError("an MNC is 2 or 3 digits")
    return bytes((0x00, 0x00, 0x00, mnc_length))


@dataclass(frozen=True)
class SimPersoSummary:
    chip_serial: str
    iccid: str
    imsi: str
    dgis: tuple[str, ...]
    static_key_scheme: str
    kdek_kcv: Kcv


@dataclass(frozen=True)
class SimPersoScript:
    commands: tuple[ScriptCommand, ...]  # clear, for the secure channel to protect
    summary: SimPersoSummary

    @property
    def apdus(self) -> tuple[bytes, ...]:
        return tuple(c.apdu for c in self.commands)


def _unwrap_for_rewrap(
    hsm: Hsm, storage_label: str, wrapped: bytes, key_type: KeyType = KeyType.AES
) -> SymKey:
    """A stored secret back as a sensitive session object that can only be wrapped again."""
    template: dict[Attribute, Any] = {
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: True,
    }
    storage = cast("UnwrapMixin", hsm.key(storage_label))  # an AES wrap key unwraps too
    key = storage.unwrap_key(
        ObjectClass.SECRET_KEY,
        key_type,
        wrapped,
        mechanism=WRAP,
        capabilities=MechanismFlag(0),
        template=template,
    )
    return as_key(key)


def _rewrapped(
    hsm: Hsm, kdek: SymKey, storage: str, wrapped: bytes, created: list[SymKey], size: int = 16
) -> bytes:
    """RFC 3394 blobs of `size`-byte secrets, each under K_DEK with CBC and a zero IV."""
    out = b""
    step = size + 8
    for i in range(0, len(wrapped), step):
        key_type = KeyType.AES if size == 16 else KeyType.GENERIC_SECRET
        secret = _unwrap_for_rewrap(hsm, storage, wrapped[i : i + step], key_type)
        created.append(secret)
        out += kdek.wrap_key(secret, mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
    return out


def _sensitive_dgis(
    hsm: Hsm, kdek: SymKey, sim: Mapping[str, Any], created: list[SymKey]
) -> list[bytes]:
    storage = sim["storage_key_label"]
    ki_opc = bytes(sim["ki_stored"]) + bytes(sim["opc_stored"])
    out = [dgi(DGI_SECRETS, _rewrapped(hsm, kdek, storage, ki_opc, created))]
    if sim.get("pins_stored") is not None:
        pins = _rewrapped(hsm, kdek, storage, bytes(sim["pins_stored"]), created, PIN_BLOCK)
        out.append(dgi(DGI_PINS, pins))
    if sim.get("ota_stored") is not None:
        out.append(dgi(DGI_OTA, _rewrapped(hsm, kdek, storage, bytes(sim["ota_stored"]), created)))
    return out


def build_sim_script(
    hsm: Hsm,
    sim: Mapping[str, Any],
    div: bytes,
    kmc_label: str,
    mnc_length: int,
    profile: SimProfile | None = None,
) -> SimPersoScript:
    """INSTALL [for personalization] of the USIM + STORE DATA per DGI, for one chip (HSM
    worker). ``sim``: the card's sim_cards row (iccid, imsi, storage key label, Ki and OPc
    and the PIN block and OTA keys wrapped under it); ``profile``: the product's."""
    created: list[SymKey] = []
    try:
        kdek = derive_static_key(hsm, kmc_label, div, STATIC_KEYS["DEK"], MechanismFlag.WRAP)
        created.append(kdek)
        check = derive_static_key(hsm, kmc_label, div, STATIC_KEYS["DEK"], MechanismFlag.SIGN)
        created.append(check)
        kdek_kcv = kcv_computed(check, KcvMethod.AES_CMAC)
        files = profile_dgis(profile or SimProfile(), sim["imsi"], hsm.random(1)[0])
        dgis = [
            dgi(DGI_ICCID, ef_iccid(sim["iccid"])),
            dgi(DGI_IMSI, ef_imsi(sim["imsi"])),
            dgi(DGI_AD, ef_ad(mnc_length)),
            *(dgi(tag, value) for tag, value in files),
            *_sensitive_dgis(hsm, kdek, sim, created),
        ]
        stores = store_data_apdus(dgis)
        commands = (
            ScriptCommand(install_for_personalization_apdu(USIM_AID)),
            *(ScriptCommand(a, d[0] == 0x81) for a, d in zip(stores, dgis, strict=True)),
        )
        summary = SimPersoSummary(
            chip_serial=div[4:10].hex().upper(),
            iccid=sim["iccid"],
            imsi=sim["imsi"],
            dgis=tuple(d[:2].hex().upper() for d in dgis),
            static_key_scheme=SCHEME,
            kdek_kcv=kdek_kcv,
        )
        return SimPersoScript(commands, summary)
    finally:
        for obj in created:
            obj.destroy()


def mnc_length_of(imsi_prefix: str) -> int:
    """MCC is 3 digits; the rest of the product's IMSI prefix (MCC || MNC) is the MNC."""
    return len(imsi_prefix) - 3
