"""The purge scan reads a column by its PostgreSQL type (tests/support/purge_scan.py
column_hits): cardholder data planted in a bytea or a jsonb column is caught, in the forms a
careless service would keep it; ids, times and a number column's few digits are not hits.
(tests/integration/test_purge_scan.py plants the same in real PostgreSQL columns.)"""

from __future__ import annotations

import json

from tests.support.purge_scan import column_hits, pan_secret, short_secret, text_secret

PAN = "4761739001010119"
NAME = "Zoë Müller-Łukasz"
SECRETS = [pan_secret("PAN", PAN), text_secret("name", NAME), short_secret("CVV2", "123")]


def hits(data_type: str, value: str | bytes | None) -> list[str]:
    return column_hits("s.t.c", data_type, value, SECRETS)


def test_a_pan_in_a_bytea_column_is_caught_as_ascii_bcd_and_grouped() -> None:
    assert hits("bytea", b"\x00\x01card " + PAN.encode() + b"\xff") == ["PAN in s.t.c"]
    assert hits("bytea", b"\x5a\x08" + bytes.fromhex(PAN) + b"\x9f") == ["PAN in s.t.c"]
    assert hits("bytea", b"4761 7390 0101 0119") == ["PAN in s.t.c"]
    assert hits("bytea", b"4761-7390-0101-0119") == ["PAN in s.t.c"]


def test_a_name_in_a_bytea_column_is_caught_in_utf8_and_in_latin1() -> None:
    assert hits("bytea", b"\x01" + "Zoë Müller".encode() + b"\x02") == []  # a part is no hit
    assert hits("bytea", NAME.encode()) == ["name in s.t.c"]
    latin1 = "Zoë Müller-Lukasz"
    scan = column_hits("s.t.c", "bytea", latin1.encode("latin-1"), [text_secret("name", latin1)])
    assert scan == ["name in s.t.c"]


def test_a_pan_and_a_name_in_a_jsonb_column_are_caught_as_postgresql_renders_it() -> None:
    # jsonb::text keeps a non-ASCII name as it is, and a PAN kept as a JSON number.
    assert hits("jsonb", json.dumps({"holder": NAME}, ensure_ascii=False)) == ["name in s.t.c"]
    assert hits("jsonb", '{"card": {"pan": ' + PAN + "}}") == ["PAN in s.t.c"]
    assert hits("jsonb", '{"cvv2": "123"}') == ["CVV2 in s.t.c"]
    assert hits("json", '["x", "' + PAN + '"]') == ["PAN in s.t.c"]


def test_a_pan_in_a_number_column_is_caught_but_a_few_digits_are_the_tables_own() -> None:
    assert hits("bigint", PAN) == ["PAN in s.t.c"]
    assert hits("numeric", PAN) == ["PAN in s.t.c"]
    assert hits("integer", "123") == []  # a count of 123 is no CVV
    assert hits("text", "123") == ["CVV2 in s.t.c"]  # a text column of just a CVV is one


def test_ids_times_flags_and_nulls_are_not_scanned_and_clean_values_are_no_hit() -> None:
    assert hits("uuid", "47617390-0101-0119-0000-000000000000") == []
    assert hits("timestamp with time zone", "2026-12-07 10:35:11.123+00") == []
    assert hits("jsonb", None) == []
    assert hits("bytea", b"\x47\x61\x73\x90") == []
    assert hits("jsonb", '{"status": "dispatched", "count": 4761}') == []
    assert hits("text", "4761 7390 0101 011") == []  # one digit short


def test_a_name_json_escaped_in_a_json_column_is_caught() -> None:
    """A json column (not jsonb) keeps the `\\u00eb` escapes Python's json.dumps writes."""
    assert hits("json", json.dumps({"holder": NAME})) == ["name in s.t.c"]
    assert hits("json", json.dumps({"holder": NAME.upper()})) == ["name in s.t.c"]
