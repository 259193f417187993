"""The operator's SIM profile of a product (docs/sim.md, "The SIM profile") and the file
contents it gives each card (3GPP TS 31.102 §4.2, ETSI TS 102 221 §13), as personalisation
DGIs (vcard/usim.py holds the card's side of the contract).

Validation names what is wrong: an SPN the SMS default alphabet cannot carry in 16 bytes, a
search period that is not a multiple of 6 minutes, a PLMN that is not MCC || MNC, an MNC length
that contradicts the product's IMSI prefix, a file the profile cannot set.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# SMS default alphabet characters that share their ASCII code (3GPP TS 23.038 §6.2.1)
SPN_CHARS: Final = r"^[A-Za-z0-9 !\"#%&'()*+,\-./:;<=>?]{1,16}$"
PLMN = Annotated[str, Field(pattern=r"^\d{5,6}$", description="MCC || MNC")]

DGI_SPN: Final = 0x0204
DGI_HPPLMN: Final = 0x0205
DGI_FPLMN: Final = 0x0206
DGI_ACC: Final = 0x0207
DGI_UST: Final = 0x0208
DGI_EST: Final = 0x0209
DGI_PL: Final = 0x020A
DGI_MSISDN: Final = 0x020B
DGI_SMSP: Final = 0x020C
DGI_ECC: Final = 0x020D
# Files a profile may set by name: DGI, (fixed size | record length | 2-byte unit) check
SETTABLE_FILES: Final[dict[str, tuple[int, str, int]]] = {
    "EF.PL": (DGI_PL, "unit", 2),
    "EF.MSISDN": (DGI_MSISDN, "records", 14),
    "EF.SMSP": (DGI_SMSP, "records", 28),
    "EF.ECC": (DGI_ECC, "records", 4),
    "EF.EST": (DGI_EST, "size", 1),
}
SERVICE_SMSP, SERVICE_SPN, SERVICE_MSISDN = 12, 19, 21
FPLMN_ENTRIES: Final = 4  # EF.FPLMN holds at least four (TS 31.102 §4.2.16)


class SimProfile(BaseModel):
    """What an operator decides for every SIM of a product."""

    model_config = ConfigDict(extra="forbid")

    spn: str | None = Field(default=None, pattern=SPN_CHARS, description="service provider name")
    show_plmn_in_home_network: bool = Field(
        default=False, description="display condition b1: the PLMN name too when at home"
    )
    show_spn_when_roaming: bool = Field(
        default=True, description="display condition b2 (inverted): the SPN when roaming"
    )
    hplmn_search_minutes: int = Field(default=30, ge=0, le=480, description="0: no search")
    fplmn: list[PLMN] = Field(default_factory=list, max_length=20)
    acc: Literal["imsi", "random"] = Field(
        default="imsi", description="access class 0-9: the IMSI's last digit, or random"
    )
    special_access_classes: list[int] = Field(default_factory=list, max_length=5)
    mnc_length: int | None = Field(default=None, ge=2, le=3)
    ota: bool = Field(default=False, description="make OTA keys KIc, KID, KIK per card")
    pin1_enabled: bool = True
    files: dict[str, str] = Field(default_factory=dict, description="file name -> hex")

    @field_validator("hplmn_search_minutes")
    @classmethod
    def _six_minutes(cls, value: int) -> int:
        if value % 6:
            raise ValueError("the HPLMN search period is a multiple of 6 minutes (0 = none)")
        return value

    @field_validator("special_access_classes")
    @classmethod
    def _special(cls, value: list[int]) -> list[int]:
        wrong = [c for c in value if not 11 <= c <= 15]
        if wrong:
            raise ValueError(f"special access classes are 11-15, not {wrong}")
        return sorted(set(value))

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str]) -> dict[str, str]:
        for name, content in value.items():
            if name not in SETTABLE_FILES:
                known = ", ".join(sorted(SETTABLE_FILES))
                raise ValueError(f"unknown file {name!r}: a profile can set {known}")
            if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", content):
                raise ValueError(f"{name}: the contents are hex bytes")
            _dgi, rule, unit = SETTABLE_FILES[name]
            size = len(content) // 2
            if (rule == "size" and size != unit) or (rule != "size" and size % unit):
                what = "bytes" if rule == "size" else "a multiple of"
                raise ValueError(f"{name}: {size} bytes, the file takes {what} {unit}")
        return value


def profile_problem(profile: SimProfile, imsi_prefix: str) -> str | None:
    """Why the profile does not fit the product's numbering, or None."""
    implied = len(imsi_prefix) - 3
    if profile.mnc_length is not None and profile.mnc_length != implied:
        return (
            f"mnc_length {profile.mnc_length} contradicts the IMSI prefix {imsi_prefix}"
            f" (MCC 3 digits + MNC {implied})"
        )
    return None


def _bcd_plmn(plmn: str) -> bytes:
    """TS 24.008 §10.5.1.3: MCC2 MCC1 | MNC3 MCC3 | MNC2 MNC1 (MNC3 F for 2 digits)."""
    mcc, mnc = plmn[:3], plmn[3:]
    mnc3 = mnc[2] if len(mnc) == 3 else "F"
    return bytes.fromhex(mcc[1] + mcc[0] + mnc3 + mcc[2] + mnc[1] + mnc[0])


def _service_table(services: set[int]) -> bytes:
    table = bytearray((max(services) - 1) // 8 + 1)
    for n in services:
        table[(n - 1) // 8] |= 1 << ((n - 1) % 8)
    return bytes(table)


def ef_spn(profile: SimProfile) -> bytes:
    """EF.SPN (TS 31.102 §4.2.12): display condition, then the name FF-padded to 16."""
    condition = (1 if profile.show_plmn_in_home_network else 0) | (
        0 if profile.show_spn_when_roaming else 2
    )
    return bytes((condition,)) + (profile.spn or "").encode("ascii").ljust(16, b"\xff")


def ef_acc(profile: SimProfile, imsi: str, random_digit: int) -> bytes:
    """EF.ACC (TS 31.102 §4.2.15, TS 22.011 §4.2): one class 0-9 and the special ones."""
    ordinary = int(imsi[-1]) if profile.acc == "imsi" else random_digit % 10
    bits = 1 << ordinary
    for special in profile.special_access_classes:
        bits |= 1 << special
    return bits.to_bytes(2, "big")


def profile_dgis(profile: SimProfile, imsi: str, random_digit: int) -> list[tuple[int, bytes]]:
    """The file contents the profile gives this card, as (DGI, contents)."""
    services = {SERVICE_SMSP, SERVICE_MSISDN} | ({SERVICE_SPN} if profile.spn else set())
    fplmn = b"".join(_bcd_plmn(p) for p in profile.fplmn)
    fplmn += b"\xff" * 3 * max(0, FPLMN_ENTRIES - len(profile.fplmn))
    out = [
        (DGI_HPPLMN, bytes((profile.hplmn_search_minutes // 6,))),
        (DGI_FPLMN, fplmn),
        (DGI_ACC, ef_acc(profile, imsi, random_digit)),
        (DGI_UST, _service_table(services)),
    ]
    if profile.spn:
        out.append((DGI_SPN, ef_spn(profile)))
    for name, content in sorted(profile.files.items()):
        out.append((SETTABLE_FILES[name][0], bytes.fromhex(content)))
    return sorted(out)


def profile_of(row: dict[str, Any] | None) -> SimProfile:
    """The stored profile (a product made before profiles existed has the defaults)."""
    stored = (row or {}).get("profile") or {}
    return SimProfile.model_validate(json.loads(stored) if isinstance(stored, str) else stored)


def profile_json(profile: SimProfile) -> str:
    return json.dumps(profile.model_dump(), sort_keys=True)
