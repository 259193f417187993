"""QA of a SIM product's chip, read the way a handset reads a UICC at power-up (ETSI TS 102
221 §8, 3GPP TS 31.102 §5.1.1), then authenticated as the operator's network would.

1. SELECT the MF and EF.DIR; find the USIM's application template by its AID (RID 3GPP,
   application code 1002); SELECT the ADF by that AID.
2. EF.ICCID must hold the ICCID keymgmt prepared for the card.
3. PIN1: its status from the ADF's PIN status template and VERIFY without data; when enabled
   (full retry counter expected), VERIFY with the PIN1 keymgmt gives the QA station.
4. Every mandatory EF of the USIM (TS 31.102 §4.2) is selected, its FCP read for its size or
   records, and read; EF.IMSI must hold the prepared IMSI.
5. AUTHENTICATE: keymgmt makes RAND and AUTN with the card's Ki in the HSM (POST
   /v1/sim/qa/challenge), the chip answers with RES, CK and IK (TS 31.102 §7.1.2.1), keymgmt
   recomputes them in the HSM (POST /v1/sim/qa/check).

QA never holds a key; the failure reasons name the check, never the values. PIN1 is the one
secret QA receives (VERIFY carries it in clear to the card, as a handset's keypad does): it is
taken out of keymgmt's answer at once, lives only until the VERIFY is sent, and is never logged,
put in a failure reason or stored (docs/sim.md, "PIN1 at QA").
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable
from uuid import UUID

from pydantic import ValidationError

from services.qa.service import QaFailure, require_ok
from shared.iso7816 import Tlv, decode_tlv, find_tlv
from shared.keymgmt.contract import SimChallenge, SimChallengeRequest, SimCheckRequest, Verdict
from shared.keymgmt.errors import KeymgmtBadResponse, KeymgmtRefused, field_problems
from shared.pcsc import CardConnection

USIM_APPLICATION: Final = bytes.fromhex("A0000000871002")  # 3GPP RID + USIM (TS 101 220)
SELECT_MF: Final = bytes.fromhex("00A40004023F0000")
SELECT_DIR: Final = bytes.fromhex("00A40004022F0000")
SELECT_ICCID: Final = bytes.fromhex("00A40804022FE200")  # by path from the MF
KEY_PIN1: Final = 0x01
# TS 31.102 §4.2: the EFs of ADF.USIM that are mandatory (and read at power-up)
MANDATORY_EFS: Final = {
    0x6F07: "EF.IMSI",
    0x6F08: "EF.Keys",
    0x6F09: "EF.KeysPS",
    0x6F31: "EF.HPPLMN",
    0x6F38: "EF.UST",
    0x6F5B: "EF.START-HFN",
    0x6F5C: "EF.THRESHOLD",
    0x6F73: "EF.PSLOCI",
    0x6F78: "EF.ACC",
    0x6F7B: "EF.FPLMN",
    0x6F7E: "EF.LOCI",
    0x6FAD: "EF.AD",
    0x6FC4: "EF.NETPAR",
}
SW_AUTH_MAC_FAILURE: Final = 0x9862
CHECK_SIM_FILES: Final = "sim-files"
CHECK_SIM_PIN: Final = "sim-pin1"
CHECK_SIM_AUTHENTICATE: Final = "sim-authenticate"


@runtime_checkable
class SimOracle(Protocol):
    """keymgmt's SIM checks (shared/keymgmt/client.py), as ChipOracle in checker.py."""

    async def sim_challenge(self, request: SimChallengeRequest) -> SimChallenge: ...

    async def sim_check(self, request: SimCheckRequest) -> Verdict: ...


def _digits(data: bytes) -> str:
    """BCD with the low nibble first (EF_ICCID, EF_IMSI), F padding dropped."""
    return "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in data).rstrip("F")


def authenticate_apdu(rand: bytes, autn: bytes) -> bytes:
    """AUTHENTICATE, 3G context: `00 88 00 81 22 10 RAND 10 AUTN 00`."""
    return bytes.fromhex("0088008122") + b"\x10" + rand + b"\x10" + autn + b"\x00"


def _select_fid(fid: int) -> bytes:
    return bytes.fromhex("00A4000402") + fid.to_bytes(2, "big") + b"\x00"


def _select_aid(aid: bytes) -> bytes:
    return bytes((0x00, 0xA4, 0x04, 0x04, len(aid))) + aid + b"\x00"


def _fcp(name: str, data: bytes) -> Tlv:
    try:
        items = decode_tlv(data)
    except ValueError as exc:
        raise QaFailure(f"{CHECK_SIM_FILES}: the FCP of {name} is not BER-TLV") from exc
    if not items or items[0].tag != 0x62 or items[0].find(0x82) is None:
        raise QaFailure(f"{CHECK_SIM_FILES}: {name} answered no FCP template")
    return items[0]


async def usim_aid(conn: CardConnection) -> bytes | None:
    """The USIM's AID from EF.DIR, or None when the chip is no UICC with a USIM."""
    _, sw = await conn.transmit(SELECT_MF)
    if sw != 0x9000:
        return None
    fcp, sw = await conn.transmit(SELECT_DIR)
    if sw != 0x9000:
        return None
    descriptor = _fcp("EF.DIR", fcp).find(0x82)
    if descriptor is None or len(descriptor.value) < 5:
        return None
    length, count = descriptor.value[3], descriptor.value[4]
    for number in range(1, count + 1):
        record, sw = await conn.transmit(bytes((0x00, 0xB2, number, 0x04, length)))
        if sw != 0x9000:
            return None
        aid = find_tlv(decode_tlv(record), 0x4F)
        if aid is not None and aid.value.startswith(USIM_APPLICATION):
            return aid.value
    return None


async def is_usim(conn: CardConnection) -> bool:
    """Whether the chip is a UICC whose EF.DIR names a USIM (a SIM product)."""
    return await usim_aid(conn) is not None


async def sim_chip_checks(conn: CardConnection, card_id: UUID, oracle: object) -> list[str]:
    """The SIM checks of a chip; QaFailure names what is wrong."""
    if not isinstance(oracle, SimOracle):
        raise QaFailure("sim: this QA machine's keymgmt client cannot check SIMs")
    try:
        return await _checks(conn, card_id, oracle)
    except (KeymgmtRefused, KeymgmtBadResponse) as exc:
        raise QaFailure(f"sim: {exc}") from exc
    except ValidationError as exc:  # the chip's answer cannot even be put to keymgmt
        problem = field_problems(exc)
        raise QaFailure(f"sim: the chip's answer breaks the contract: {problem}") from exc


async def _read_ef(conn: CardConnection, fid: int, name: str) -> bytes:
    """SELECT an EF of the current ADF, read its size or records from the FCP, read it."""
    apdu = _select_fid(fid)
    data, sw = await conn.transmit(apdu)
    require_ok(f"SELECT {name}", apdu, sw)
    fcp = _fcp(name, data)
    descriptor = fcp.find(0x82)
    size = fcp.find(0x80)
    assert descriptor is not None
    if descriptor.value[0] & 0x07 == 0x01:  # transparent
        if size is None:
            raise QaFailure(f"{CHECK_SIM_FILES}: the FCP of {name} has no file size")
        read = bytes((0x00, 0xB0, 0x00, 0x00, int.from_bytes(size.value, "big") & 0xFF))
        content, sw = await conn.transmit(read)
        require_ok(f"READ BINARY {name}", read, sw)
        return content
    length, count = descriptor.value[3], descriptor.value[4]
    records = b""
    for number in range(1, count + 1):
        read = bytes((0x00, 0xB2, number, 0x04, length))
        record, sw = await conn.transmit(read)
        require_ok(f"READ RECORD {name}", read, sw)
        records += record
    return records


async def _pin1(conn: CardConnection, adf_fcp: Tlv, pin1: bytes | None) -> None:
    """PIN1 as a handset meets it: its status, then VERIFY when it is enabled."""
    status = adf_fcp.find(0xC6)
    if status is None:
        raise QaFailure(f"{CHECK_SIM_PIN}: the ADF's FCP has no PIN status template")
    verify = bytes((0x00, 0x20, 0x00, KEY_PIN1))
    _, sw = await conn.transmit(verify)
    if sw == 0x9000:  # disabled
        if pin1 is not None:
            raise QaFailure(f"{CHECK_SIM_PIN}: PIN1 is disabled, the profile enables it")
        return
    if sw != 0x63C3:
        raise QaFailure(f"{CHECK_SIM_PIN}: PIN1 has not its full retry counter ({sw:04X})")
    if pin1 is None:
        raise QaFailure(f"{CHECK_SIM_PIN}: PIN1 is enabled, the profile disables it")
    _, sw = await conn.transmit(verify + bytes((len(pin1),)) + pin1)
    if sw != 0x9000:
        raise QaFailure(f"{CHECK_SIM_PIN}: the chip refused the prepared PIN1 ({sw:04X})")


async def _checks(conn: CardConnection, card_id: UUID, oracle: SimOracle) -> list[str]:
    asked = await oracle.sim_challenge(SimChallengeRequest(card_id=card_id))
    pin1 = asked.pin1
    asked = asked.model_copy(update={"pin1": None})  # the rest of the check never sees PIN1
    aid = await usim_aid(conn)
    if aid is None:
        raise QaFailure(f"{CHECK_SIM_FILES}: EF.DIR names no USIM")
    _, sw = await conn.transmit(SELECT_ICCID)
    require_ok("SELECT EF.ICCID", SELECT_ICCID, sw)
    content, sw = await conn.transmit(bytes.fromhex("00B000000A"))
    require_ok("READ BINARY EF.ICCID", SELECT_ICCID, sw)
    if _digits(content) != asked.iccid:
        raise QaFailure(f"{CHECK_SIM_FILES}: EF_ICCID does not hold the prepared iccid")
    apdu = _select_aid(aid)
    adf, sw = await conn.transmit(apdu)
    require_ok("SELECT ADF.USIM", apdu, sw)
    try:
        await _pin1(conn, _fcp("ADF.USIM", adf), pin1)
    finally:
        del pin1  # held for the VERIFY only
    files = {name: await _read_ef(conn, fid, name) for fid, name in MANDATORY_EFS.items()}
    if _digits(files["EF.IMSI"][1:])[1:] != asked.imsi:
        raise QaFailure(f"{CHECK_SIM_FILES}: EF_IMSI does not hold the prepared imsi")
    apdu = authenticate_apdu(asked.rand, asked.autn)
    answer, sw = await conn.transmit(apdu)
    if sw == SW_AUTH_MAC_FAILURE:
        raise QaFailure(f"{CHECK_SIM_AUTHENTICATE}: the chip refused the network's MAC (9862)")
    require_ok("AUTHENTICATE", apdu, sw)
    if answer[:1] == b"\xdc":
        raise QaFailure(f"{CHECK_SIM_AUTHENTICATE}: the chip reported a SQN out of range")
    request = SimCheckRequest(card_id=card_id, rand=asked.rand.hex(), response=answer.hex())
    verdict = await oracle.sim_check(request)
    problems = [p[:200] for p in verdict.found("keymgmt says the answer does not check out")][:10]
    if problems:
        raise QaFailure(f"{CHECK_SIM_AUTHENTICATE}: {'; '.join(problems)}")
    return [CHECK_SIM_FILES, CHECK_SIM_PIN, CHECK_SIM_AUTHENTICATE]
