"""Station domain logic, no I/O: chip identity from the CPLC, the redacted APDU trace, the
claim order, and the errors that spoil a card (docs/perso-protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

from shared.cplc import GET_CPLC as GET_CPLC  # re-exported: the station's APDUs live here
from shared.cplc import ChipIdentity as ChipIdentity
from shared.cplc import CplcError, chip_identity_from_get_data
from shared.iso7816 import SW_OK, sw_hex

ISD_AID: Final = bytes.fromhex("A000000151000000")  # the card manager (GlobalPlatform ISD)
SELECT_ISD: Final = bytes((0x00, 0xA4, 0x04, 0x00, len(ISD_AID))) + ISD_AID + b"\x00"
IU_ANSWER_LENGTHS: Final = (29, 28)  # SCP03 i = 00; SCP02 i = 15 (docs/perso-protocol.md)
TRACE_LIMIT: Final = 64  # entries kept on a card.spoiled event; the newest matter most


class CardError(Exception):
    """The chip (or what sits in the reader) cannot be personalised; the reason carries no
    card data, only headers, status words and chip serials."""


class WrongCard(CardError):
    """The reader holds a card that is not a blank chip this station may personalise."""


def parse_cplc_response(data: bytes, sw: int) -> ChipIdentity:
    """GET DATA 9F7F answers `9F7F 2A` + 42 bytes CPLC (shared/cplc.py reads it)."""
    if sw != SW_OK:
        raise WrongCard(f"card answered {sw_hex(sw)} to GET DATA CPLC")
    try:
        return chip_identity_from_get_data(data)
    except CplcError as exc:
        raise WrongCard(str(exc)) from exc


def initialize_update(host_challenge: bytes) -> bytes:
    """INITIALIZE UPDATE `80 50 00 00 08 host-challenge 00` (key version 00: the card's set)."""
    return bytes((0x80, 0x50, 0x00, 0x00, len(host_challenge))) + host_challenge + b"\x00"


def check_initialize_update(data: bytes, sw: int, chip: ChipIdentity) -> bytes:
    """The card's answer, checked for shape, protocol and chip before it goes to keymgmt: a
    chip whose secure channel the bureau cannot open is rejected here, and its card goes back
    to the queue (docs/perso-protocol.md: SCP03 i=00 with KVN 30-3F, or SCP02 with KVN 20-2F)."""
    if sw != SW_OK:
        raise WrongCard(f"card answered {sw_hex(sw)} to INITIALIZE UPDATE")
    if len(data) not in IU_ANSWER_LENGTHS:
        raise WrongCard(f"INITIALIZE UPDATE answer is {len(data)} bytes, not 29 or 28")
    if data[:10] != chip.diversification_data:
        raise WrongCard("INITIALIZE UPDATE names other key diversification data than the CPLC")
    kvn, scp = data[10], data[11]
    if len(data) == 29 and (scp != 0x03 or not 0x30 <= kvn <= 0x3F or data[12] & 0x10):
        raise WrongCard(f"the card offers SCP{scp:02X} key version {kvn:02X} i {data[12]:02X}")
    if len(data) == 28 and (scp != 0x02 or not 0x20 <= kvn <= 0x2F):
        raise WrongCard(f"the card offers SCP{scp:02X} key version {kvn:02X}")
    return data


def apdu_header(apdu: bytes) -> str:
    """CLA INS P1 P2 only: the body of a STORE DATA carries keys and cardholder data."""
    return apdu[:4].hex().upper()


@dataclass
class ApduTrace:
    """What a spoiled card's event may say about its APDUs: headers and status words."""

    entries: list[str] = field(default_factory=list)

    def record(self, apdu: bytes, sw: int | None) -> None:
        outcome = "no-answer" if sw is None else sw_hex(sw)
        self.entries.append(f"{apdu_header(apdu)} {outcome}")

    def tail(self, limit: int = TRACE_LIMIT) -> list[str]:
        return self.entries[-limit:]


def describe_failure(apdu: bytes, sw: int) -> str:
    """The reason a card is spoiled for a status word other than 9000."""
    return f"card answered {sw_hex(sw)} to {describe_command(apdu)} ({apdu_header(apdu)})"


def describe_command(apdu: bytes) -> str:
    ins = apdu[1] if len(apdu) > 1 else -1
    if ins == 0xE2 and len(apdu) >= 4:
        last = " (last)" if apdu[2] & 0x80 else ""
        return f"STORE DATA block {apdu[3]:02X}{last}"
    names = {
        0xA4: "SELECT",
        0xCA: "GET DATA",
        0x50: "INITIALIZE UPDATE",
        0x82: "EXTERNAL AUTHENTICATE",
        0xE6: "INSTALL",
    }
    return names.get(ins, f"INS {ins:02X}")


# -- the claim order ---------------------------------------------------------------------------
# The queue hands out the oldest batch first (the batch that reached this station first), then
# cards in arrival order. repository.claim_next() implements the same order in SQL over the
# columns named here; the unit tests pin the order, the integration tests the SQL.
CLAIM_ORDER_COLUMNS: Final = ("batch_seq", "seq")


@dataclass(frozen=True)
class QueuedCard:
    card_id: UUID
    batch_id: UUID
    batch_seq: int
    seq: int
    issuer_id: str
    product_id: str
    traceparent: str | None = None  # the card's trace, from its card.prepared


def claim_order(card: QueuedCard) -> tuple[int, int]:
    return (card.batch_seq, card.seq)


def next_to_claim(queued: list[QueuedCard]) -> QueuedCard | None:
    return min(queued, key=claim_order, default=None)
