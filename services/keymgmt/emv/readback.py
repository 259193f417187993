"""QA's chip read-back, built so that it is no PAN oracle (issue 16).

A caller holding QA's credentials could once submit guessed records for any card, any number of
times, and read which tag differed: about 10^5 guesses recovered a PAN's middle digits. Now:
- only a card in QA is answered: personalized (its chip bound by a perso script), not
  cancelled, and on the chip the request names (the serial QA read from the chip's CPLC);
- only at the QA station that began the card's QA (the first read-back pins it);
- at most READBACK_LIMIT read-backs per card, each counted before it is answered;
- the answer is pass/fail with reason codes (ReadbackProblem) that name no field and no value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from uuid import UUID

from services.keymgmt.emv.schemas import CardInQaElsewhere, CardNotInQa, ReadbackLimitReached
from services.keymgmt.sql import SqlRepository
from shared.iso7816 import TlvError, decode_tlv
from shared.keymgmt.contract import ReadbackProblem, ReadbackRequest

# QA reads a card's records once; a machine fault sends the card round again. Three read-backs
# cover that, and give a guesser three answers of one bit each.
READBACK_LIMIT: Final = 3
RECORD_TEMPLATE_DEPTH: Final = 2  # a `70` template holding primitive data objects


class ReadbackRepository(SqlRepository):
    async def qa_card(self, card_id: UUID) -> dict[str, Any] | None:
        """The card's chip binding and whether it was cancelled; None: never personalized."""
        return await self._one(
            "SELECT b.chip_serial, p.state,"
            " EXISTS (SELECT 1 FROM cancelled_cards c WHERE c.card_id = b.card_id) AS cancelled"
            " FROM chip_bindings b JOIN prepared_cards p ON p.card_id = b.card_id"
            " WHERE b.card_id = :c",
            c=card_id,
        )

    async def take(self, card_id: UUID, station: str, limit: int) -> int | None:
        """Count one read-back at `station`: its number, or None when the card's QA is at
        another station or has had `limit` read-backs (one statement: no race between two)."""
        row = await self._one(
            "INSERT INTO qa_readbacks (card_id, qa_station, readbacks) VALUES (:c, :s, 1)"
            " ON CONFLICT (card_id) DO UPDATE"
            " SET readbacks = qa_readbacks.readbacks + 1, last_at = now()"
            " WHERE qa_readbacks.qa_station = EXCLUDED.qa_station"
            " AND qa_readbacks.readbacks < :limit"
            " RETURNING readbacks",
            c=card_id,
            s=station,
            limit=limit,
        )
        return None if row is None else int(row["readbacks"])

    async def session(self, card_id: UUID) -> dict[str, Any] | None:
        return await self._one(
            "SELECT qa_station, readbacks FROM qa_readbacks WHERE card_id = :c", c=card_id
        )


def require_in_qa(card: Mapping[str, Any] | None, request: ReadbackRequest) -> None:
    """Refuse a card that is not in QA on the chip the request names."""
    if card is None or card["state"] != "bound":
        raise CardNotInQa(f"card {request.card_id} is not personalized: no read-back")
    if card["cancelled"]:
        raise CardNotInQa(f"card {request.card_id} was cancelled: no read-back")
    if card["chip_serial"] != request.chip_serial:
        raise CardNotInQa(
            f"card {request.card_id} was not personalized on chip {request.chip_serial}"
        )


async def take_readback(repo: ReadbackRepository, request: ReadbackRequest) -> int:
    """Count this read-back, or refuse it (another station, or the limit reached)."""
    taken = await repo.take(request.card_id, request.qa_station, READBACK_LIMIT)
    if taken is not None:
        return taken
    session = await repo.session(request.card_id)
    if session is not None and session["qa_station"] != request.qa_station:
        raise CardInQaElsewhere(
            f"card {request.card_id} is in QA at station {session['qa_station']}, "
            f"not {request.qa_station}"
        )
    raise ReadbackLimitReached(
        f"card {request.card_id} has had its {READBACK_LIMIT} read-backs: it fails QA"
    )


def _one_template(raw: bytes) -> bool:
    try:
        items = decode_tlv(raw, max_depth=RECORD_TEMPLATE_DEPTH)
    except TlvError:
        return False
    return len(items) == 1 and items[0].tag == 0x70


def readback_verdict(expected: Mapping[str, bytes], read: Mapping[str, str]) -> list[str]:
    """The read-back's problems as reason codes (ReadbackProblem), sorted, each once; none
    when every prepared record was read back byte for byte. No code says which record or
    field differs, or anything of a value."""
    problems: set[ReadbackProblem] = set()
    for number, want in expected.items():
        raw_hex = read.get(number)
        if raw_hex is None:
            problems.add(ReadbackProblem.RECORD_MISSING)
            continue
        raw = bytes.fromhex(raw_hex)  # the contract admits hex only
        if raw == want:
            continue
        ok = _one_template(raw)
        problems.add(ReadbackProblem.RECORDS_DIFFER if ok else ReadbackProblem.RECORD_MALFORMED)
    if set(read) - set(expected):
        problems.add(ReadbackProblem.RECORD_UNEXPECTED)
    return sorted(p.value for p in problems)
