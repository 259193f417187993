"""Pure encodings of keymgmt (no HSM): EMV derivation data, DGIs, TLVs, APDUs, blobs, masks."""

from __future__ import annotations

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from pyemv import kd, mac

from services.keymgmt.emv.keys import (
    MkDerivation,
    arqc_input,
    mk_derivation_data,
    option_a_y,
    option_b_y,
    pad_iso9797_m2,
)
from services.keymgmt.emv.perso import select_apdu
from services.keymgmt.emv.records import CardRecord, expiry_yymmdd, track2
from services.keymgmt.gp.cardkeys import cpg202_aes_block
from services.keymgmt.gp.script import dgi, store_data_apdus
from services.keymgmt.hsm.kcv import Kcv, KcvMethod, normalise_kcv
from services.keymgmt.vault.crypto import SealedPan, VaultError
from shared.cplc import chip_identity
from shared.iso7816 import tlv
from shared.pan import mask_pan

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def _tdes(key: bytes, data: bytes) -> bytes:
    enc = Cipher(TripleDES(key + key[:8]), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def _parity(key: bytes) -> bytes:
    return bytes((b & 0xFE) | (1 ^ (bin(b >> 1).count("1") & 1)) for b in key)


@pytest.mark.parametrize(
    ("pan", "psn", "y"),
    [
        ("4761739001010010", "01", "6173900101001001"),
        ("12345678901234567", "01", "4567890123456701"),
        ("123456789012", "00", "0012345678901200"),
    ],
)
def test_option_a_y(pan: str, psn: str, y: str) -> None:
    assert option_a_y(pan, psn) == bytes.fromhex(y)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize(
    ("pan", "psn", "option"),
    [
        ("4761739001010010", "01", MkDerivation.OPTION_A),
        ("12345678901234567", "01", MkDerivation.OPTION_B),
        ("6799998900000074324", "02", MkDerivation.OPTION_B),
        ("5413330089020011", "00", MkDerivation.OPTION_B),
    ],
)
def test_derivation_data_gives_pyemv_keys(pan: str, psn: str, option: MkDerivation) -> None:
    data = mk_derivation_data(pan, psn, option)
    assert data[8:] == bytes(b ^ 0xFF for b in data[:8])
    oracle = kd.derive_icc_mk_a if option is MkDerivation.OPTION_A else kd.derive_icc_mk_b
    assert _parity(_tdes(IMK, data)) == oracle(IMK, pan, psn)


def test_option_b_is_option_a_up_to_16_digits() -> None:
    assert option_b_y("4761739001010010", "01") == option_a_y("4761739001010010", "01")


def test_bad_pan_or_psn() -> None:
    with pytest.raises(ValueError, match="PAN"):
        option_a_y("47617390A1010010", "01")
    with pytest.raises(ValueError, match="PSN"):
        option_a_y("4761739001010010", "1")


def test_padding_method_2_matches_pyemv() -> None:
    for n in range(0, 20):
        data = bytes(range(n))
        assert pad_iso9797_m2(data) == mac.pad_iso9797_2(data, 8)


def test_arqc_input_layout() -> None:
    assert arqc_input(bytes(29), b"\x00\x01") == bytes(29) + b"\x38\x00\x00\x01"
    with pytest.raises(ValueError, match="29 bytes"):
        arqc_input(bytes(28), b"\x00\x01")


def test_tlv_and_dgi_lengths() -> None:
    assert tlv(0x5A, b"\x01") == bytes.fromhex("5A0101")
    assert tlv(0x70, bytes(200))[:3] == bytes.fromhex("7081C8")
    assert tlv(0x70, bytes(300))[:4] == bytes.fromhex("7082012C")
    assert dgi(0x0101, bytes(254))[:3] == bytes.fromhex("0101FE")
    assert dgi(0x0101, bytes(255))[:5] == bytes.fromhex("0101FF00FF")


def test_track2_and_expiry() -> None:
    odd = CardRecord("4761739001010", "00", "2602", "A B", "201")
    assert track2(odd, None).hex().upper() == "4761739001010D2602201F"
    # iCVV in the discretionary data, after the zero PVKI/PVV positions (docs/emv-profile.md)
    assert track2(odd, "987").hex().upper() == "4761739001010D260220100000987F"
    assert expiry_yymmdd("2802") == bytes.fromhex("280229")  # leap year
    assert expiry_yymmdd("2702") == bytes.fromhex("270228")


def test_store_data_p1_p2() -> None:
    apdus = store_data_apdus([b"\x01\x01\x01\xaa", b"\x01\x02\x01\xbb", b"\x80\x00\x01\xcc"])
    assert [a[:5].hex().upper() for a in apdus] == ["80E2080004", "80E2080104", "80E2880204"]
    # a DGI over 239 bytes continues in the next commands (EMV CPS v1.1 §3.2.7.4)
    big = dgi(0x8201, bytes(range(256)) * 2 + bytes(100))  # 617 bytes = 239 + 239 + 139
    split = store_data_apdus([b"\x01\x01\x01\xaa", big])
    assert [a[:5].hex().upper() for a in split] == [
        "80E2080004", "80E20801EF", "80E20802EF", "80E288038B",
    ]  # fmt: skip
    assert b"".join(a[5:] for a in split[1:]) == big
    assert select_apdu().hex().upper() == "00A4040007A000000003101000"


def test_card_identity_from_cplc() -> None:
    cplc = bytes.fromhex("4342564300015330010053300A0B0C0D0001") + bytes(24)
    assert chip_identity(cplc).chip_serial == "0A0B0C0D0001"
    div = chip_identity(cplc).diversification_data
    assert div.hex().upper() == "434256430A0B0C0D0001"
    assert cpg202_aes_block(div, 3).hex().upper() == "0A0B0C0D0001F0030A0B0C0D00010F03"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pan": "47617390"},
        {"pan": "476173900101"},  # 12 digits: the vault seals 13-19, as intake accepts them
        {"psn": "1"},
        {"expiry": "2513"},
        {"service_code": "20"},
        {"cardholder_name": "X" * 27},
    ],
)
def test_card_record_validation(kwargs: dict[str, str]) -> None:
    base = {
        "pan": "4761739001010010",
        "psn": "01",
        "expiry": "2512",
        "cardholder_name": "DOE/JANE",
        "service_code": "201",
    }
    with pytest.raises(ValueError):  # noqa: PT011
        CardRecord(**{**base, **kwargs})


def test_card_record_repr_masks_pan() -> None:
    record = CardRecord("4761739001010010", "01", "2512", "DOE/JANE", "201")
    assert "4761739001010010" not in repr(record)


def test_mask_pan() -> None:
    assert mask_pan("4761739001010010") == "476173******0010"
    assert mask_pan("6799998900000074324") == "679999*********4324"


def test_sealed_pan_layout() -> None:
    sealed = SealedPan("acme/VAULT/1", bytes(12), bytes(range(32)))
    blob = sealed.to_bytes()
    assert blob[:2] == bytes([1, len("acme/VAULT/1")])
    assert SealedPan.from_bytes(blob) == sealed
    with pytest.raises(VaultError, match="too short"):
        SealedPan.from_bytes(blob[:20])


def test_kcv_normalisation() -> None:
    assert normalise_kcv("08 d7 b4") == "08D7B4"
    assert Kcv("08D7B4", KcvMethod.DES).matches("08d7b4")
    with pytest.raises(ValueError, match="3 bytes"):
        normalise_kcv("08D7")
