"""The IPP decoder cannot be driven into a loop (issue 16): lengths are read unsigned, the cursor
only moves forward, and the message size, attribute count and collection depth are bounded.

The properties run under hypothesis with a per-example deadline, so a decode that loops or
slows down fails the test instead of hanging it."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ipp_codec import (
    BEGIN_COLLECTION,
    END_COLLECTION,
    END_OF_ATTRIBUTES,
    INTEGER,
    JOB_GROUP,
    KEYWORD,
    MAX_ATTRIBUTES,
    MAX_COLLECTION_DEPTH,
    MAX_MESSAGE_BYTES,
    OPERATION_GROUP,
    Attribute,
    IppError,
    IppMessage,
    decode,
    encode,
)
from tests.support.properties import BOUNDED

HEADER = bytes.fromhex("0200 0000 00000001")  # IPP 2.0, successful-ok, request 1

# The answer that looped for ever before issue 16: an attribute whose name length is -5 read as
# a signed short sends the cursor back onto a zero value length and then onto the same tag.
LOOPING_ANSWER = HEADER + bytes.fromhex("0121 0000 0002 000021 fffb") + b"\x03"


def attr(tag: int, name: bytes, value: bytes) -> bytes:
    return struct.pack(">BH", tag, len(name)) + name + struct.pack(">H", len(value)) + value


def test_the_answer_that_looped_for_ever_is_a_clear_error() -> None:
    with pytest.raises(IppError, match="truncated attribute name"):
        decode(LOOPING_ANSWER)


@pytest.mark.parametrize("length", [0x8000, 0xFFFB, 0xFFFF])
def test_a_length_with_the_sign_bit_set_is_a_large_unsigned_length(length: int) -> None:
    body = HEADER + b"\x01\x21" + struct.pack(">H", length) + b"abc\x00\x00\x03"
    with pytest.raises(IppError, match="truncated"):
        decode(body)


def test_too_many_attributes_are_refused() -> None:
    values = attr(INTEGER, b"n", struct.pack(">i", 1)) * (MAX_ATTRIBUTES + 1)
    with pytest.raises(IppError, match="more than 4096 attribute values"):
        decode(HEADER + b"\x01" + values + b"\x03")


def test_collections_nested_too_deep_are_refused() -> None:
    nested = attr(BEGIN_COLLECTION, b"c", b"") * (MAX_COLLECTION_DEPTH + 1)
    with pytest.raises(IppError, match="nested deeper"):
        decode(HEADER + b"\x01" + nested + attr(END_COLLECTION, b"", b"") + b"\x03")


def test_an_end_of_collection_never_begun_is_refused() -> None:
    with pytest.raises(IppError, match="never begun"):
        decode(HEADER + b"\x01" + attr(END_COLLECTION, b"", b"") + b"\x03")


def test_an_oversized_message_is_refused_before_decoding() -> None:
    with pytest.raises(IppError, match="exceeds"):
        decode(HEADER + b"\x03" + bytes(MAX_MESSAGE_BYTES))


def test_a_non_ascii_attribute_name_is_an_ipp_error() -> None:
    with pytest.raises(IppError, match="not ASCII"):
        decode(HEADER + b"\x01" + attr(KEYWORD, b"\xff", b"x") + b"\x03")


@BOUNDED
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_ipp_error(body: bytes) -> None:
    try:
        decode(body)
    except IppError:
        pass


_TAGS = st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x13, 0x21, 0x23, 0x34, 0x37, 0x44, 0x4A])
_LENGTHS = st.one_of(st.integers(0, 8), st.integers(0x7FF0, 0xFFFF))


@st.composite
def ipp_like(draw: st.DrawFn) -> bytes:
    """Near-valid messages: real tags, and lengths that are short or have the sign bit set."""
    out = bytearray(HEADER)
    for _ in range(draw(st.integers(0, 40))):
        tag = draw(_TAGS)
        out.append(tag)
        if tag >= 0x10:
            for _field in range(2):
                length = draw(_LENGTHS)
                out += struct.pack(">H", length) + draw(st.binary(max_size=min(length, 8)))
    return bytes(out)


@BOUNDED
@given(ipp_like())
def test_near_valid_messages_decode_or_raise_ipp_error(body: bytes) -> None:
    try:
        decode(body)
    except IppError:
        pass


_NAMES = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)


@BOUNDED
@given(
    st.dictionaries(_NAMES, st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=4)),
    st.binary(max_size=64),
)
def test_what_we_encode_decodes_the_same(ints: dict[str, list[int]], data: bytes) -> None:
    attrs = {n: Attribute(INTEGER, n, tuple(v)) for n, v in ints.items()}
    message = IppMessage((2, 0), 0, 7, ((OPERATION_GROUP, attrs), (JOB_GROUP, {})), data)
    assert decode(encode(message)) == message


def test_the_end_tag_alone_after_the_header_is_an_empty_message() -> None:
    assert decode(HEADER + bytes((END_OF_ATTRIBUTES,))).groups == ()
