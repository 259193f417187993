"""Which secret-handling operations run inside the HSM, and why the others do not.

Production (any BUREAU_ENVIRONMENT but dev/test) allows no clear key component, PIN, PIN block
or OP in keymgmt's process, so each operation below needs its PKCS#11 mechanisms on the
configured token AND an HSM path in keymgmt. `survey` (HSM worker) asks the token
(C_GetMechanismList, C_GetMechanismInfo, and one throw-away wrap where SoftHSM lists a flag it
does not honour) and returns the inventory; keymgmt refuses to start in production while any
operation is missing something (`require_hsm_paths`, named one by one), and in dev/test it runs
the Python fallback of each such operation, recorded as such: a log line at start (the keeper's
"hsm mechanism inventory"), /ready's `hsm.operations`, and a ceremony's "combine" step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pkcs11 import Mechanism, MechanismFlag

from services.keymgmt.hsm.session import Hsm, des3_wrap_missing

# C_DeriveKey "XOR of two key objects": not in PKCS#11 v2.40 or 3.0, a vendor mechanism whose
# parameter is the CK_OBJECT_HANDLE of the second key. 0x8000001B is SafeNet/Thales Luna's
# CKM_XOR_BASE_AND_KEY; other vendors number it CKM_VENDOR_DEFINED + 0x364
# (BUREAU_HSM_KEY_XOR_MECHANISM chooses).
LUNA_XOR_BASE_AND_KEY = 0x8000001B


class HsmOperation(StrEnum):
    CEREMONY_UNWRAP = "ceremony-component-unwrap"  # components arrive wrapped (RSA-OAEP)
    CEREMONY_COMBINE = "ceremony-component-combine"  # XOR of the unwrapped components
    PIN_GENERATE = "pin-generate"
    PIN_TRANSLATE = "pin-block-translate"
    PIN_MAILER_DECRYPT = "pin-mailer-decrypt"
    SIM_OPC = "sim-opc"


@dataclass(frozen=True)
class Need:
    """One mechanism with the function flag an operation uses it for."""

    code: int
    name: str
    flag: MechanismFlag

    def __str__(self) -> str:
        return f"{self.name} with CKF_{self.flag.name}"


@dataclass(frozen=True)
class OperationSpec:
    op: HsmOperation
    needs: tuple[Need, ...]
    no_path: str | None = None  # why keymgmt has no HSM path yet (the operation stays missing)
    probe_des3_wrap: bool = False  # the token must really wrap with CKM_DES3_ECB


@dataclass(frozen=True)
class OperationState:
    op: HsmOperation
    missing: tuple[str, ...]

    @property
    def in_hsm(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        return (
            "hsm" if self.in_hsm else "python fallback (missing: " + "; ".join(self.missing) + ")"
        )


@dataclass(frozen=True)
class MechanismInventory:
    states: tuple[OperationState, ...]

    def in_hsm(self, op: HsmOperation) -> bool:
        return next(s for s in self.states if s.op is op).in_hsm

    def missing(self) -> list[str]:
        return [f"{s.op.value}: {m}" for s in self.states for m in s.missing]

    def report(self) -> dict[str, str]:
        return {s.op.value: s.describe() for s in self.states}


class ProductionRefused(RuntimeError):
    """Production settings on a token that cannot keep every secret inside the HSM."""


def specs(xor_mechanism: int) -> tuple[OperationSpec, ...]:
    des3 = int(Mechanism.DES3_ECB)
    return (
        OperationSpec(
            HsmOperation.CEREMONY_UNWRAP,
            (Need(int(Mechanism.RSA_PKCS_OAEP), "CKM_RSA_PKCS_OAEP", MechanismFlag.UNWRAP),),
        ),
        OperationSpec(
            HsmOperation.CEREMONY_COMBINE,
            (
                Need(
                    xor_mechanism,
                    f"CKM_XOR_BASE_AND_KEY ({xor_mechanism:#x})",
                    MechanismFlag.DERIVE,
                ),
            ),
        ),
        OperationSpec(
            HsmOperation.PIN_GENERATE,
            (),
            no_path="PKCS#11 defines no PIN generation mechanism and keymgmt has no payment-HSM"
            " binding for one",
        ),
        OperationSpec(
            HsmOperation.PIN_TRANSLATE,
            (
                Need(des3, "CKM_DES3_ECB", MechanismFlag.WRAP),
                Need(des3, "CKM_DES3_ECB", MechanismFlag.UNWRAP),
            ),
            no_path="keymgmt has no HSM PIN block translation path yet",
            probe_des3_wrap=True,
        ),
        OperationSpec(
            HsmOperation.PIN_MAILER_DECRYPT,
            (
                Need(des3, "CKM_DES3_ECB", MechanismFlag.DECRYPT),
                Need(int(Mechanism.AES_ECB), "CKM_AES_ECB", MechanismFlag.DECRYPT),
            ),
            no_path="the PIN field is read from the decrypted block in keymgmt, not printed by"
            " the HSM",
        ),
        OperationSpec(
            HsmOperation.SIM_OPC,
            (
                Need(
                    int(Mechanism.AES_ECB_ENCRYPT_DATA),
                    "CKM_AES_ECB_ENCRYPT_DATA",
                    MechanismFlag.DERIVE,
                ),
                Need(
                    int(Mechanism.XOR_BASE_AND_DATA), "CKM_XOR_BASE_AND_DATA", MechanismFlag.DERIVE
                ),
            ),
            no_path="keymgmt computes OPc from AES_Ki(OP) in process memory",
        ),
    )


def survey(hsm: Hsm, xor_mechanism: int = LUNA_XOR_BASE_AND_KEY) -> MechanismInventory:
    """What the configured token offers each operation (HSM worker)."""
    slot = hsm.session.token.slot
    # A vendor code the python-pkcs11 enum does not know comes back as a plain int.
    flags: dict[int, MechanismFlag] = {
        int(m): MechanismFlag(int(slot.get_mechanism_info(m).flags) & _KNOWN_FLAGS)
        for m in slot.get_mechanisms()
    }
    offered = set(flags)
    wrap_problem: str | None = None
    states = []
    for spec in specs(xor_mechanism):
        missing: list[str] = []
        for need in spec.needs:
            if need.code not in offered:
                missing.append(f"{need.name} (not in the token's mechanism list)")
            elif not flags[need.code] & need.flag:
                missing.append(f"{need} (the token does not give it CKF_{need.flag.name})")
        if spec.probe_des3_wrap and not missing:
            wrap_problem = wrap_problem or des3_wrap_missing(hsm)
            if wrap_problem:
                missing.append(wrap_problem)
        if spec.no_path:
            missing.append(spec.no_path)
        states.append(OperationState(spec.op, tuple(missing)))
    return MechanismInventory(tuple(states))


_KNOWN_FLAGS = int(
    MechanismFlag.ENCRYPT
    | MechanismFlag.DECRYPT
    | MechanismFlag.SIGN
    | MechanismFlag.VERIFY
    | MechanismFlag.WRAP
    | MechanismFlag.UNWRAP
    | MechanismFlag.DERIVE
    | MechanismFlag.GENERATE
    | MechanismFlag.GENERATE_KEY_PAIR
)


def require_hsm_paths(inventory: MechanismInventory, environment: str) -> None:
    """Refuse production (ProductionRefused naming every missing piece) unless every
    operation runs inside the HSM."""
    missing = inventory.missing()
    if missing:
        raise ProductionRefused(
            f"keymgmt refuses to start in {environment}: the HSM cannot keep every secret"
            " inside it; missing: " + "; ".join(missing)
        )
