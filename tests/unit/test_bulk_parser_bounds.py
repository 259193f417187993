"""The bulk CSV/NDJSON record parser cannot be driven into recursion or an unhandled error
(issue 16): every line is a card or named problems. Properties run under hypothesis with a
per-example deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.intake.bulk import (
    CSV_COLUMNS,
    MAX_JSON_DEPTH,
    BadHeader,
    check_line,
    csv_header,
    json_depth,
    numbered_lines,
)
from tests.support.properties import BOUNDED

TODAY = date(2026, 11, 24)
HEADER = list(CSV_COLUMNS)
GOOD = {
    "pan": "4111111111111111",
    "expiry": "2911",
    "cardholder_name": "ADA LOVELACE",
    "address": {"lines": ["1 Main St"], "postcode": "1000", "city": "Brussels", "country": "BE"},
}


def test_a_line_of_four_thousand_brackets_is_a_named_problem_not_a_recursion_error() -> None:
    card, problems = check_line(2, "ndjson", None, b"[" * 4000, TODAY)
    assert card is None
    assert [(p.field, p.problem) for p in problems] == [
        ("line", f"nests JSON deeper than {MAX_JSON_DEPTH} levels")
    ]


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    name = "[" * 50 + '\\"{' * 50
    assert json_depth(json.dumps({**GOOD, "cardholder_name": name})) == 3
    card, problems = check_line(2, "ndjson", None, json.dumps(GOOD).encode(), TODAY)
    assert card is not None
    assert problems == []


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"a card"', b"null", b"42"])
def test_json_that_is_not_an_object_is_named(raw: bytes) -> None:
    assert check_line(2, "ndjson", None, raw, TODAY)[1][0].problem == "is not a JSON object"


def test_a_csv_field_over_the_csv_modules_limit_is_a_named_problem() -> None:
    card, problems = check_line(2, "csv", HEADER, b'"' + b"x" * 200_000, TODAY)
    assert card is None
    assert problems[0].problem == "is not a CSV line"
    with pytest.raises(BadHeader):
        csv_header(b'"' + b"x" * 200_000)


_LINE_BYTES = st.binary(max_size=600) | st.text(max_size=300).map(str.encode)
_CSVISH = st.lists(
    st.sampled_from(["4111111111111111", "2911", '"', '""', ",", "\x00", "\r", "ADA", "é"]),
    max_size=40,
).map(lambda parts: "".join(parts).encode())
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
).map(lambda v: json.dumps(v).encode())


@BOUNDED
@given(_LINE_BYTES | _CSVISH)
def test_any_csv_line_is_a_card_or_named_problems(raw: bytes) -> None:
    card, problems = check_line(7, "csv", HEADER, raw, TODAY)
    assert card is not None or problems
    assert all(p.line == 7 and p.field and p.problem for p in problems)


@BOUNDED
@given(_LINE_BYTES | _JSONISH | st.integers(0, 5000).map(lambda n: b"[" * n + b"]" * n))
def test_any_ndjson_line_is_a_card_or_named_problems(raw: bytes) -> None:
    card, problems = check_line(7, "ndjson", None, raw, TODAY)
    assert card is not None or problems
    assert all(p.line == 7 and p.field and p.problem for p in problems)


@BOUNDED
@given(_LINE_BYTES | _CSVISH)
def test_any_header_is_columns_or_bad_header(raw: bytes) -> None:
    try:
        names = csv_header(raw)
    except BadHeader as exc:
        problem = str(exc)
        assert "column" in problem or "UTF-8" in problem
    else:
        assert set(names) <= set(CSV_COLUMNS)


async def _collect(parts: list[bytes], max_line: int) -> list[tuple[int, bytes | None]]:
    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return [item async for item in numbered_lines(body(), max_line)]


@BOUNDED
@given(
    st.lists(st.binary(max_size=40) | st.sampled_from([b"\n", b"\r\n", b"\n\n"]), max_size=20),
    st.integers(0, 30),
)
def test_lines_are_the_body_split_at_line_feeds_whatever_the_chunking(
    parts: list[bytes], max_line: int
) -> None:
    body = b"".join(parts)
    pieces = body.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # the line end of the last line, or an empty body
    want = [
        (n, None if len(p) > max_line else p.rstrip(b"\r")) for n, p in enumerate(pieces, start=1)
    ]
    assert asyncio.run(_collect(parts, max_line)) == want
