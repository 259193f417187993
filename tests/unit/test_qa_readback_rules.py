"""keymgmt's read-back rules without a database (issue 16): which cards are in QA, and how a
refused read-back is named. The rules meet real Postgres and the guessing attack in
tests/integration/test_qa_readback_oracle.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.keymgmt.emv.readback import (
    READBACK_LIMIT,
    ReadbackRepository,
    require_in_qa,
    take_readback,
)
from services.keymgmt.emv.schemas import CardInQaElsewhere, CardNotInQa, ReadbackLimitReached
from shared.keymgmt.contract import ReadbackRequest

CHIP = "A1B2C3D4E5F6"
REQUEST = ReadbackRequest(
    card_id=uuid.uuid4(), chip_serial=CHIP, qa_station="qa-1", records={"0101": "7000"}
)
BOUND = {"chip_serial": CHIP, "state": "bound", "cancelled": False}


@pytest.mark.parametrize(
    ("card", "why"),
    [
        (None, "is not personalized"),
        (BOUND | {"state": "prepared"}, "is not personalized"),
        (BOUND | {"cancelled": True}, "was cancelled"),
        (BOUND | {"chip_serial": "0123456789AB"}, f"not personalized on chip {CHIP}"),
    ],
)
def test_only_a_card_personalized_on_that_chip_and_not_cancelled_is_in_qa(
    card: dict[str, Any] | None, why: str
) -> None:
    with pytest.raises(CardNotInQa, match=why) as refused:
        require_in_qa(card, REQUEST)
    assert refused.value.refusal == "card-not-in-qa"


def test_a_bound_card_on_its_chip_is_in_qa() -> None:
    require_in_qa(BOUND, REQUEST)


class FakeReadbacks(ReadbackRepository):
    def __init__(self, taken: int | None, station: str | None) -> None:
        self.taken, self.station = taken, station

    async def take(self, card_id: uuid.UUID, station: str, limit: int) -> int | None:
        assert limit == READBACK_LIMIT
        return self.taken

    async def session(self, card_id: uuid.UUID) -> dict[str, Any] | None:
        return None if self.station is None else {"qa_station": self.station, "readbacks": 3}


async def test_a_refused_readback_says_whether_the_station_or_the_limit_refused_it() -> None:
    assert await take_readback(FakeReadbacks(2, "qa-1"), REQUEST) == 2
    with pytest.raises(CardInQaElsewhere, match="in QA at station qa-7, not qa-1"):
        await take_readback(FakeReadbacks(None, "qa-7"), REQUEST)
    with pytest.raises(ReadbackLimitReached, match=f"its {READBACK_LIMIT} read-backs"):
        await take_readback(FakeReadbacks(None, "qa-1"), REQUEST)


def test_a_readback_is_bounded_to_16_records_of_1024_bytes_keyed_by_dgi_number() -> None:
    ids = {"card_id": uuid.uuid4(), "chip_serial": CHIP, "qa_station": "qa-1"}
    full = {f"{0x0100 + n:04X}": "AB" * 1024 for n in range(1, 17)}
    assert len(ReadbackRequest.model_validate(ids | {"records": full}).records) == 16
    too_many = full | {"0201": "7000"}
    too_long = {"0101": "AB" * 1025}
    for records in (too_many, too_long, {"1": "7000"}, {"0100": "7000"}, {"1F01": "7000"}):
        with pytest.raises(ValueError, match="records"):
            ReadbackRequest.model_validate(ids | {"records": records})
