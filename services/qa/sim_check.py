"""QA of a SIM product's chip: the USIM's files and an AUTHENTICATE that keymgmt checks.

On the QA reader the chip must answer SELECT of the USIM; its EF_ICCID and EF_IMSI must hold
the ICCID and IMSI keymgmt prepared for the card; and it must authenticate a network the way
the operator's will: keymgmt makes RAND and AUTN with the card's Ki in the HSM (POST
/v1/sim/qa/challenge), the chip answers AUTHENTICATE (TS 31.102 §7.1.2.1) with RES, CK and IK,
and keymgmt recomputes them in the HSM (POST /v1/sim/qa/check). QA never holds a key; the
failure reasons name the check, never the values.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable
from uuid import UUID

from pydantic import ValidationError

from services.qa.service import QaFailure, require_ok
from shared.keymgmt.contract import SimChallenge, SimChallengeRequest, SimCheckRequest, Verdict
from shared.keymgmt.errors import KeymgmtBadResponse, KeymgmtRefused, field_problems
from shared.pcsc import CardConnection

USIM_AID: Final = bytes.fromhex("A0000000871002FFFFFFFF8907090000")
SELECT_USIM: Final = bytes.fromhex("00A4040010") + USIM_AID + b"\x00"
SELECT_ICCID: Final = bytes.fromhex("00A4000C022FE2")
SELECT_IMSI: Final = bytes.fromhex("00A4000C026F07")
READ_ICCID: Final = bytes.fromhex("00B000000A")
READ_IMSI: Final = bytes.fromhex("00B0000009")
SW_AUTH_MAC_FAILURE: Final = 0x9862
CHECK_SIM_FILES: Final = "sim-files"
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


async def is_usim(conn: CardConnection) -> bool:
    """Whether the chip answers SELECT of the USIM (a SIM product) with 9000."""
    _fcp, sw = await conn.transmit(SELECT_USIM)
    return sw == 0x9000


async def sim_chip_checks(conn: CardConnection, card_id: UUID, oracle: object) -> list[str]:
    """The SIM checks of a chip whose USIM is selected; QaFailure names what is wrong."""
    if not isinstance(oracle, SimOracle):
        raise QaFailure("sim: this QA machine's keymgmt client cannot check SIMs")
    try:
        return await _checks(conn, card_id, oracle)
    except (KeymgmtRefused, KeymgmtBadResponse) as exc:
        raise QaFailure(f"sim: {exc}") from exc
    except ValidationError as exc:  # the chip's answer cannot even be put to keymgmt
        problem = field_problems(exc)
        raise QaFailure(f"sim: the chip's answer breaks the contract: {problem}") from exc


async def _checks(conn: CardConnection, card_id: UUID, oracle: SimOracle) -> list[str]:
    asked = await oracle.sim_challenge(SimChallengeRequest(card_id=card_id))
    for select, read, name, field in (
        (SELECT_ICCID, READ_ICCID, "EF_ICCID", "iccid"),
        (SELECT_IMSI, READ_IMSI, "EF_IMSI", "imsi"),
    ):
        _, sw = await conn.transmit(select)
        require_ok(f"SELECT {name}", select, sw)
        content, sw = await conn.transmit(read)
        require_ok(f"READ BINARY {name}", read, sw)
        found = _digits(content) if field == "iccid" else _digits(content[1:])[1:]
        if found != getattr(asked, field):
            raise QaFailure(f"{CHECK_SIM_FILES}: {name} does not hold the prepared {field}")
    rand, autn = asked.rand, asked.autn
    apdu = authenticate_apdu(rand, autn)
    answer, sw = await conn.transmit(apdu)
    if sw == SW_AUTH_MAC_FAILURE:
        raise QaFailure(f"{CHECK_SIM_AUTHENTICATE}: the chip refused the network's MAC (9862)")
    require_ok("AUTHENTICATE", apdu, sw)
    if answer[:1] == b"\xdc":
        raise QaFailure(f"{CHECK_SIM_AUTHENTICATE}: the chip reported a SQN out of range")
    request = SimCheckRequest(card_id=card_id, rand=rand.hex(), response=answer.hex())
    verdict = await oracle.sim_check(request)
    problems = [p[:200] for p in verdict.found("keymgmt says the answer does not check out")][:10]
    if problems:
        raise QaFailure(f"{CHECK_SIM_AUTHENTICATE}: {'; '.join(problems)}")
    return [CHECK_SIM_FILES, CHECK_SIM_AUTHENTICATE]
