"""shared.iso7816: APDU cases, BER-TLV, DGIs and STORE DATA, against hand-written encodings."""

from __future__ import annotations

import pytest

from shared.iso7816 import (
    ApduError,
    CommandAPDU,
    ResponseAPDU,
    decode_dgis,
    decode_tlv,
    encode_dgi,
    encode_length,
    find_tlv,
    store_data,
    store_data_script,
    tlv,
)


@pytest.mark.parametrize(
    ("raw", "case", "data", "le"),
    [
        ("00A40400", 1, "", None),
        ("80CA9F7F00", 2, "", 256),
        ("00B2010C1D", 2, "", 0x1D),
        ("80E2080003AABBCC", 3, "AABBCC", None),
        ("00A4040007A000000003101000", 4, "A0000000031010", 256),
    ],
)
def test_command_apdu_cases_round_trip(raw: str, case: int, data: str, le: int | None) -> None:
    cmd = CommandAPDU.parse(bytes.fromhex(raw))
    assert cmd.case == case
    assert cmd.data == bytes.fromhex(data)
    assert cmd.le == le
    assert cmd.to_bytes().hex().upper() == raw


@pytest.mark.parametrize(
    "raw", ["00A404", "80E2080005AABB", "80E2080002AABBCCDD", "00A4040000FFFF"]
)
def test_malformed_command_apdus_are_refused(raw: str) -> None:
    with pytest.raises(ApduError):
        CommandAPDU.parse(bytes.fromhex(raw))


def test_command_apdu_field_limits() -> None:
    with pytest.raises(ApduError):
        CommandAPDU(0x100, 0, 0, 0)
    with pytest.raises(ApduError):
        CommandAPDU(0, 0xE2, 0, 0, bytes(256))
    with pytest.raises(ApduError):
        CommandAPDU(0, 0xB2, 1, 0x0C, le=257)


def test_response_apdu() -> None:
    resp = ResponseAPDU.parse(bytes.fromhex("6F0A9000"))
    assert (resp.data, resp.sw, resp.sw1, resp.sw2, resp.ok) == (b"\x6f\x0a", 0x9000, 0x90, 0, True)
    assert ResponseAPDU(b"", 0x6A82).to_bytes() == b"\x6a\x82"
    with pytest.raises(ApduError):
        ResponseAPDU.parse(b"\x90")


def test_ber_lengths() -> None:
    assert encode_length(0x7F) == b"\x7f"
    assert encode_length(0x80) == b"\x81\x80"
    assert encode_length(0x100) == b"\x82\x01\x00"
    assert encode_length(0x10000) == b"\x83\x01\x00\x00"


def test_ber_tlv_multibyte_tags_nesting_and_long_lengths() -> None:
    long_value = bytes(range(200))
    encoded = tlv(0x70, tlv(0x5F20, b"DOE/JOHN") + tlv(0x9F7F, long_value) + tlv(0xBF0C, b""))
    assert encoded[:3] == bytes.fromhex("7081DA")  # 11 + 204 + 3 = 218 value bytes
    items = decode_tlv(encoded)
    assert len(items) == 1
    assert items[0].constructed
    assert [c.tag for c in items[0].children] == [0x5F20, 0x9F7F, 0xBF0C]
    name = find_tlv(items, 0x5F20)
    assert name is not None
    assert name.value == b"DOE/JOHN"
    cplc = items[0].find(0x9F7F)
    assert cplc is not None
    assert cplc.value == long_value
    assert tlv(0x9F7F, long_value)[:4] == bytes.fromhex("9F7F81C8")
    # three-byte tag: 1F, then a continuation byte with b8 set, then the last byte
    assert decode_tlv(bytes.fromhex("DF8101 01 AA".replace(" ", "")))[0].tag == 0xDF8101


def test_ber_tlv_padding_and_errors() -> None:
    assert [t.tag for t in decode_tlv(bytes.fromhex("00 5A 01 11 FF 00".replace(" ", "")))] == [
        0x5A
    ]
    for bad in ("5A0511", "9F", "5A8511", "5A82"):
        with pytest.raises(ValueError, match=r"."):
            decode_tlv(bytes.fromhex(bad))
    with pytest.raises(ValueError, match="tag"):
        tlv(0x1F, b"")


def test_dgi_length_forms() -> None:
    assert encode_dgi(0x0101, b"\x70\x00") == bytes.fromhex("0101027000")
    assert encode_dgi(0x8000, bytes(254))[:3] == bytes.fromhex("8000FE")
    long_dgi = encode_dgi(0x8201, bytes(255))
    assert long_dgi[:5] == bytes.fromhex("8201FF00FF")
    assert len(long_dgi) == 5 + 255
    pairs = [(0x0101, b"\x70\x00"), (0x8201, bytes(300)), (0x9102, b"")]
    assert decode_dgis(b"".join(encode_dgi(t, v) for t, v in pairs)) == pairs
    with pytest.raises(ValueError, match="overruns"):
        decode_dgis(bytes.fromhex("01010570"))


def test_store_data_builder() -> None:
    cmd = store_data(0, encode_dgi(0x0101, b"\x70\x00"), last=False)
    assert cmd.to_bytes().hex().upper() == "80E20800050101027000"
    last = store_data(3, b"\x91\x02\x00", last=True)
    assert (last.p1, last.p2) == (0x88, 3)
    script = store_data_script([(0x0101, b"\x70\x00"), (0x9102, b"")], encryption=0x60)
    assert [(c.p1, c.p2) for c in script] == [(0x68, 0), (0xE8, 1)]
    with pytest.raises(ValueError, match="block"):
        store_data(256, b"", last=False)
