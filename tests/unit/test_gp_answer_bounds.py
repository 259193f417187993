"""The INITIALIZE UPDATE answer parser (GlobalPlatform Card Spec 2.3.1 §11.8, Amendment D
§7.1.1 for SCP03 and Card Spec §E.5.1.6 for SCP02) takes exactly the answer's length and names
what is wrong with anything else; properties under hypothesis with a per-example deadline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.keymgmt.gp.channel import (
    KEY_VERSIONS,
    SCP02,
    SCP02_KEY_VERSIONS,
    SCP03,
    InitializeUpdateAnswer,
    SecureChannelError,
)
from tests.support.properties import BOUNDED


@BOUNDED
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_a_named_error(raw: bytes) -> None:
    try:
        answer = InitializeUpdateAnswer.parse(raw)
    except SecureChannelError as exc:
        problem = str(exc)
        assert problem, "a refusal names what is wrong"
    else:
        assert len(raw) in (28, 29)
        assert answer.scp in (SCP02, SCP03)


@BOUNDED
@given(
    st.binary(min_size=10, max_size=10),
    st.sampled_from(list(KEY_VERSIONS)),
    st.integers(0, 0xFF).filter(lambda i: not i & 0x10),
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=8, max_size=8),
)
def test_an_scp03_answer_parses_into_its_fields(
    div: bytes, kvn: int, i: int, challenge: bytes, cryptogram: bytes
) -> None:
    raw = div + bytes((kvn, SCP03, i)) + challenge + cryptogram
    answer = InitializeUpdateAnswer.parse(raw)
    assert answer == InitializeUpdateAnswer(div, kvn, i, challenge, cryptogram)
    assert answer.chip_serial == div[4:10].hex().upper()


@BOUNDED
@given(
    st.binary(min_size=10, max_size=10),
    st.sampled_from(list(SCP02_KEY_VERSIONS)),
    st.binary(min_size=2, max_size=2),
    st.binary(min_size=6, max_size=6),
    st.binary(min_size=8, max_size=8),
)
def test_an_scp02_answer_parses_into_its_fields(
    div: bytes, kvn: int, counter: bytes, challenge: bytes, cryptogram: bytes
) -> None:
    answer = InitializeUpdateAnswer.parse(
        div + bytes((kvn, SCP02)) + counter + challenge + cryptogram
    )
    assert (answer.scp, answer.key_version, answer.sequence_counter) == (SCP02, kvn, counter)
    assert (answer.card_challenge, answer.card_cryptogram) == (challenge, cryptogram)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "is 0 bytes"),
        (bytes(29 + 256), "is 285 bytes"),
        (bytes(10) + b"\x30\x02" + bytes(17), "offers SCP02, not SCP03"),
        (bytes(10) + b"\x01\x03" + bytes(17), "key version 01 is not an SCP03 key set"),
        (bytes(10) + b"\x30\x03\x10" + bytes(16), "pseudo-random"),
        (bytes(10) + b"\x30\x02" + bytes(16), "key version 30 is not an SCP02 key set"),
    ],
)
def test_unusable_answers_are_named(raw: bytes, problem: str) -> None:
    with pytest.raises(SecureChannelError, match=problem):
        InitializeUpdateAnswer.parse(raw)
