"""The IPP codec of shared/ipp.py (RFC 8010): requests as a printer reads them, responses as
printers write them (additional values, collections, out-of-band values), bad input refused.
The client itself meets a real printer in tests/integration/test_graphical_printing.py."""

from __future__ import annotations

import struct

import pytest

from shared.ipp import JobState
from shared.ipp_codec import (
    BEGIN_COLLECTION,
    END_COLLECTION,
    END_OF_ATTRIBUTES,
    ENUM,
    INTEGER,
    JOB_GROUP,
    KEYWORD,
    MEMBER_NAME,
    NAME,
    OPERATION_GROUP,
    PRINT_JOB,
    Attribute,
    IppError,
    IppMessage,
    decode,
    encode,
)


def attr(tag: int, name: str, raw: bytes) -> bytes:
    return struct.pack(">bh", tag, len(name)) + name.encode() + struct.pack(">h", len(raw)) + raw


def test_a_request_encodes_header_groups_values_and_document() -> None:
    message = IppMessage(
        (2, 0),
        PRINT_JOB,
        7,
        (
            (
                OPERATION_GROUP,
                {
                    "job-name": Attribute(NAME, "job-name", ("card-1",)),
                    "requested-attributes": Attribute(KEYWORD, "requested-attributes", ("a", "b")),
                },
            ),
        ),
        b"%PNG...",
    )
    raw = encode(message)
    assert raw[:8] == bytes.fromhex("0200 0002 00000007")
    assert raw[8] == OPERATION_GROUP
    assert attr(NAME, "job-name", b"card-1") in raw
    # An additional value repeats the attribute with an empty name (RFC 8010 §3.1.4).
    assert attr(KEYWORD, "requested-attributes", b"a") + attr(KEYWORD, "", b"b") in raw
    assert raw.endswith(bytes((END_OF_ATTRIBUTES,)) + b"%PNG...")
    assert decode(raw) == message


def test_a_response_with_collections_and_several_values_decodes() -> None:
    body = bytes.fromhex("0200 0000 00000003")  # successful-ok, request 3
    body += bytes((OPERATION_GROUP,)) + attr(0x47, "attributes-charset", b"utf-8")
    body += bytes((JOB_GROUP,))
    body += attr(INTEGER, "job-id", struct.pack(">i", 12))
    body += attr(ENUM, "job-state", struct.pack(">i", 9))
    body += attr(KEYWORD, "job-state-reasons", b"job-completed-successfully")
    body += attr(KEYWORD, "", b"job-printing")
    body += attr(BEGIN_COLLECTION, "media-col", b"")
    body += attr(MEMBER_NAME, "", b"media-size")
    body += attr(BEGIN_COLLECTION, "", b"")  # a nested collection is skipped whole
    body += attr(MEMBER_NAME, "", b"x-dimension")
    body += attr(INTEGER, "", struct.pack(">i", 8560))
    body += attr(END_COLLECTION, "", b"")
    body += attr(END_COLLECTION, "", b"")
    body += attr(0x13, "job-name", b"")  # out-of-band no-value
    body += bytes((END_OF_ATTRIBUTES,))
    message = decode(body)
    assert (message.code, message.request_id) == (0, 3)
    job = message.group(JOB_GROUP)
    assert job["job-id"].values == (12,)
    assert job["job-state"].values == (JobState.COMPLETED,)
    assert job["job-state-reasons"].values == ("job-completed-successfully", "job-printing")
    assert "media-col" not in job
    assert job["job-name"].values == (b"",)


@pytest.mark.parametrize(
    "body",
    [b"", bytes.fromhex("0200 0000"), bytes.fromhex("0200 0000 00000001 02") + b"\x21\x00\x06job"],
)
def test_a_truncated_message_is_an_ipp_error(body: bytes) -> None:
    with pytest.raises(IppError):
        decode(body)


def test_job_states_know_which_are_final() -> None:
    assert not JobState.PROCESSING.final
    assert not JobState.PENDING_HELD.final
    assert JobState.ABORTED.final
    assert JobState.COMPLETED.final
