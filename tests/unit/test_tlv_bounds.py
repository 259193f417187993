"""BER-TLV decoding is bounded in depth and length (issue 16): 1,200 nested templates, which
raised RecursionError (a 500 at QA's readback), are a TlvError naming the bound; properties run
under hypothesis with a per-example deadline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.iso7816 import (
    MAX_TLV_BYTES,
    MAX_TLV_DEPTH,
    Tlv,
    TlvError,
    decode_tlv,
    find_tlv,
    tlv,
)
from tests.support.properties import BOUNDED


def nested(depth: int, tag: int = 0x70, leaf: bytes = b"") -> bytes:
    value = leaf
    for _ in range(depth):
        value = tlv(tag, value)
    return value


def test_twelve_hundred_nested_templates_are_a_bounded_error() -> None:
    with pytest.raises(TlvError, match=f"nested deeper than {MAX_TLV_DEPTH}"):
        decode_tlv(nested(1200))


def test_templates_as_deep_as_the_bound_decode() -> None:
    with pytest.raises(TlvError):  # the leaf is one level too deep
        decode_tlv(nested(MAX_TLV_DEPTH, leaf=tlv(0x5A, b"\x47\x61")))
    items = decode_tlv(nested(MAX_TLV_DEPTH - 1, leaf=tlv(0x5A, b"\x47\x61")))
    found = find_tlv(items, 0x5A)
    assert found is not None
    assert found.value == b"\x47\x61"


def test_the_depth_bound_can_be_tightened_by_a_caller() -> None:
    with pytest.raises(TlvError, match="nested deeper than 2"):
        decode_tlv(nested(3), max_depth=2)


def test_input_over_the_length_bound_is_refused() -> None:
    with pytest.raises(TlvError, match="exceeds"):
        decode_tlv(bytes(MAX_TLV_BYTES + 1))


@pytest.mark.parametrize(
    "raw",
    ["1F8080808001 00", "5A 85 0000000001 00", "5A 84 FFFFFFFF 00", "70 03 5A 05 11", "5A"],
)
def test_malformed_tlv_is_a_tlv_error(raw: str) -> None:
    with pytest.raises(TlvError):
        decode_tlv(bytes.fromhex(raw.replace(" ", "")))


@BOUNDED
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_raise_tlv_error(data: bytes) -> None:
    try:
        decode_tlv(data)
    except TlvError:
        pass


@BOUNDED
@given(st.integers(0, 3000), st.sampled_from([0x70, 0x77, 0x61, 0xBF0C, 0xA5]))
def test_any_nesting_decodes_or_raises_tlv_error(depth: int, tag: int) -> None:
    try:
        items = decode_tlv(nested(depth, tag))
    except TlvError:
        assert depth > MAX_TLV_DEPTH
    else:
        assert depth <= MAX_TLV_DEPTH
        assert len(items) == (1 if depth else 0)


_PRIMITIVE_TAGS = st.sampled_from([0x5A, 0x57, 0x5F20, 0x5F24, 0x9F07, 0xDF8101])
_TEMPLATE_TAGS = st.sampled_from([0x70, 0x77, 0xA5, 0xBF0C])
_TREES = st.recursive(
    st.builds(lambda t, v: Tlv(t, v), _PRIMITIVE_TAGS, st.binary(min_size=1, max_size=40)),
    lambda kids: st.builds(
        lambda t, cs: Tlv(t, b"".join(encode_tree(c) for c in cs), cs),
        _TEMPLATE_TAGS,
        st.lists(kids, min_size=1, max_size=4),
    ),
    max_leaves=30,
)


def encode_tree(item: Tlv) -> bytes:
    return tlv(item.tag, item.value)


@BOUNDED
@given(st.lists(_TREES, max_size=4))
def test_well_formed_trees_round_trip(trees: list[Tlv]) -> None:
    assert decode_tlv(b"".join(encode_tree(t) for t in trees)) == trees
