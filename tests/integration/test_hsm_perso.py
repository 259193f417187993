"""EMV CPS personalization script built in the HSM, checked against software oracles.

K_DEK is recomputed here with `cryptography` (CPG202-AES), DGI 8000 is decrypted with it and
compared with pyemv's Option A keys derived from the same test IMKs; DGIs 8010 and 8201 are
opened with it too, the records decoded with pyemv's TLV decoder, and ODA verified by the
terminal-side oracle of tests/support/oda_terminal.py (written from EMV Book 2).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from cryptography.hazmat.primitives.serialization import load_der_private_key
from pkcs11 import Attribute, Mechanism, MechanismFlag
from pkcs11.exceptions import KeyNotWrappable, KeyUnextractable
from pyemv import kd
from pyemv.tlv import decode

from services.keymgmt.emv.keys import derive_icc_mk
from services.keymgmt.emv.perso import CardRecord, abuild_perso_script, build_perso_script
from services.keymgmt.gp.cardkeys import STATIC_KEYS, card_static_key_kcvs, derive_static_key
from services.keymgmt.hsm.session import Hsm, HsmError
from tests.support.emv_cards import card_profile_on, issuer_oda_on
from tests.support.hsm import (
    IMK_AC,
    IMK_SMC,
    IMK_SMI,
    TEST_KMC,
    IssuerKeys,
    soft_aes_cmac_kcv,
    soft_aes_zero_kcv,
    soft_des_kcv,
)
from tests.support.oda_terminal import (
    OdaFailed,
    public_key,
    recover_icc_key,
    recover_issuer_key,
    verify_sda,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]
log = logging.getLogger(__name__)

RECORD = CardRecord("4761739001010010", "01", "2512", "DOE/JANE", "201")
DIV = bytes.fromhex("434256430A0B0C0D0001")  # CPLC fabricator, type, serial, batch


def _aes_ecb(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def _expected_static_key(i: int) -> bytes:
    block = DIV[4:10] + bytes([0xF0, i]) + DIV[4:10] + bytes([0x0F, i])
    return _aes_ecb(TEST_KMC, block)


def _dgis_of(apdus: list[bytes]) -> list[tuple[str, bytes, list[int]]]:
    """The DGIs a card reassembles from STORE DATA (EMV CPS v1.1: DGI, length 1 byte or FF +
    2 bytes, a large DGI continued over the next commands), with the commands carrying each."""
    out: list[tuple[str, bytes, list[int]]] = []
    pending: tuple[str, int, bytearray, list[int]] | None = None
    for n, apdu in enumerate(apdus):
        assert apdu[:2] == b"\x80\xe2"
        assert apdu[3] == n  # block number
        assert apdu[2] == (0x88 if n == len(apdus) - 1 else 0x08)
        data = apdu[5 : 5 + apdu[4]]
        if pending is None:
            tag, length = data[:2].hex().upper(), data[2]
            start = 3
            if length == 0xFF:
                length, start = int.from_bytes(data[3:5], "big"), 5
            pending = (tag, length, bytearray(data[start:]), [n])
        else:
            pending[2].extend(data)
            pending[3].append(n)
        if len(pending[2]) >= pending[1]:
            assert len(pending[2]) == pending[1]
            out.append((pending[0], bytes(pending[2]), pending[3]))
            pending = None
    assert pending is None
    return out


def _records(dgis: dict[str, bytes]) -> dict[str, Any]:
    return {
        t: v for n, d in dgis.items() if n[:2] in ("01", "02") for t, v in decode(d)["70"].items()
    }


def test_script_carries_every_dgi_of_the_contract(hsm: Hsm, test_keys: IssuerKeys) -> None:
    issuer = hsm.run(issuer_oda_on, test_keys.issuer)
    card = hsm.run(card_profile_on, RECORD, issuer)
    assert card.pair is not None
    before = hsm.run(lambda h: h.count_objects())
    script = hsm.run(
        build_perso_script, RECORD, DIV, test_keys.imks, test_keys.kmc_label, card.data
    )
    assert hsm.run(lambda h: h.count_objects()) == before, "per-card keys must be destroyed"
    apdus = [a.hex().upper() for a in script.apdus]
    assert apdus[0] == "80E620000D000007A0000000031010000000"  # INSTALL [for perso]
    parsed = _dgis_of(list(script.apdus[1:]))
    names = [name for name, _, _ in parsed]
    assert names == [
        "0101", "0201", "0202", "0203", "0204", "9102", "9103", "9104", "9105",
        "0D01", "9010", "8000", "8010", "8201",
    ]  # fmt: skip
    sensitive = {n + 1 for name, _, blocks in parsed if name[0] == "8" for n in blocks}
    assert [c.sensitive for c in script.commands] == [
        n in sensitive for n in range(len(script.commands))
    ]
    assert len(parsed[-1][2]) > 1, "DGI 8201 is split over STORE DATA commands (CPS 3.2.7.4)"
    assert all(len(a) <= 5 + 239 for a in script.apdus[1:]), "fits C-DECRYPTION + C-MAC"
    dgis = {name: value for name, value, _ in parsed}
    records = _records(dgis)
    assert records["57"] == bytes.fromhex("4761739001010010D251220100000123")  # iCVV 123
    assert records["5F20"] == b"DOE/JANE"
    assert records["5A"] == bytes.fromhex("4761739001010010")
    assert records["5F24"] == bytes.fromhex("251231")
    assert records["5F34"] == b"\x01"
    assert records["8E"].hex().upper() == "0000000000000000410342031E031F00"
    assert records["9F4A"] == b"\x82"
    assert records["9F49"] == bytes.fromhex("9F3704")
    gpo = decode(dgis["9104"])
    assert gpo["82"] == bytes.fromhex("7D00")  # SDA, DDA, CV, TRM, issuer auth, CDA
    assert gpo["94"] == bytes.fromhex("0801010010010401")
    assert dgis["9105"] == dgis["9104"]
    fci = decode(dgis["9102"])
    assert fci["50"] == b"CARDBUREAU"
    assert b"\x9f\x66\x04" in fci["9F38"]
    assert decode(dgis["0D01"])["9F10"] == bytes.fromhex("06010A0300000000")
    assert dgis["9010"] == b"\x03\x03"

    k_dek = _expected_static_key(STATIC_KEYS["DEK"])
    clear = _aes_ecb(k_dek, dgis["8000"], decrypt=True)
    expected = [
        kd.derive_icc_mk_a(imk, RECORD.pan, RECORD.psn) for imk in (IMK_AC, IMK_SMI, IMK_SMC)
    ]
    assert [clear[0:16], clear[16:32], clear[32:48]] == expected
    # DGI 8010: ISO 9564-1 format 2 block of the card's PIN, 80 00.., AES-ECB under K_DEK
    assert _aes_ecb(k_dek, dgis["8010"], decrypt=True) == bytes.fromhex(
        "244321FFFFFFFFFF8000000000000000"
    )
    # DGI 8201: the ICC private key, PKCS#8 under K_DEK (RFC 5649), the certified key's pair
    pkcs8 = aes_key_unwrap_with_padding(k_dek, dgis["8201"])
    private = load_der_private_key(pkcs8[: 4 + int.from_bytes(pkcs8[2:4], "big")], None)
    assert isinstance(private, rsa.RSAPrivateKey)
    n = private.public_key().public_numbers().n
    assert n.to_bytes(128, "big") == card.pair.public.modulus

    # ODA as a terminal does it: CA public key -> issuer key -> SDA and ICC key.
    static_data = _template_value(dgis["0201"]) + gpo["82"]
    ca = public_key(issuer.ca.modulus, issuer.ca.exponent)
    issuer_key = recover_issuer_key(records["90"], records["92"], records["9F32"], ca)
    ipk = public_key(issuer_key.modulus, issuer_key.exponent)
    assert len(verify_sda(records["93"], static_data, ipk)) == 2
    icc = recover_icc_key(records["9F46"], records["9F48"], records["9F47"], static_data, ipk)
    assert icc.modulus == card.pair.public.modulus
    # a corrupted certificate or signature fails its method
    bad = {tag: bytes([records[tag][0] ^ 1]) + records[tag][1:] for tag in ("90", "93", "9F46")}
    with pytest.raises(OdaFailed):
        recover_issuer_key(bad["90"], records["92"], records["9F32"], ca)
    with pytest.raises(OdaFailed):
        verify_sda(bad["93"], static_data, ipk)
    with pytest.raises(OdaFailed):
        recover_icc_key(bad["9F46"], records["9F48"], records["9F47"], static_data, ipk)

    summary = script.summary
    assert summary.dgis == tuple(names)
    assert summary.chip_serial == "0A0B0C0D0001"
    assert summary.pan_masked == "476173******0010"
    assert summary.static_key_scheme == "CPG202-AES"
    assert summary.kdek_kcv.value == soft_aes_cmac_kcv(k_dek)
    assert [(n, k.value) for n, k in summary.mk_kcvs] == [
        (n, soft_des_kcv(v)) for n, v in zip(("MK-AC", "MK-SMI", "MK-SMC"), expected, strict=True)
    ]
    assert RECORD.pan not in repr(script)


def _template_value(record: bytes) -> bytes:
    """The value of a record's `70` template (Book 3 §10.3: tag and length excluded)."""
    assert record[0] == 0x70
    if record[1] < 0x80:
        return record[2:]
    return record[2 + (record[1] & 0x7F) :]


def test_static_key_kcvs_match_cpg202_aes(hsm: Hsm, test_keys: IssuerKeys) -> None:
    kcvs = hsm.run(card_static_key_kcvs, test_keys.kmc_label, DIV)
    for name, i in STATIC_KEYS.items():
        key = _expected_static_key(i)
        cmac, zero = kcvs[name]
        assert (cmac.value, zero.value) == (soft_aes_cmac_kcv(key), soft_aes_zero_kcv(key))


def test_trusted_wrap_is_refused_by_softhsm(hsm: Hsm, test_keys: IssuerKeys) -> None:
    # SoftHSM 2.6.1: only the SO may set CKA_TRUSTED (and the SO cannot use private keys).
    before = hsm.run(lambda h: h.count_objects())
    with pytest.raises(HsmError, match="CKA_TRUSTED"):
        hsm.run(
            build_perso_script,
            RECORD,
            DIV,
            test_keys.imks,
            test_keys.kmc_label,
            hsm.run(card_profile_on, RECORD, hsm.run(issuer_oda_on, test_keys.issuer)).data,
            trusted_wrap=True,
        )
    assert hsm.run(lambda h: h.count_objects()) == before


def test_untrusted_key_cannot_wrap_a_wrap_with_trusted_key(
    hsm: Hsm,
    test_keys: IssuerKeys,
) -> None:
    def run(h: Hsm) -> bytes:
        kdek = derive_static_key(h, test_keys.kmc_label, DIV, 3, MechanismFlag.WRAP)
        extra = {Attribute.EXTRACTABLE: True, Attribute.WRAP_WITH_TRUSTED: True}
        mk = derive_icc_mk(
            h, test_keys.imks.ac, RECORD.pan, "01", caps=MechanismFlag(0), extra=extra
        )
        try:
            assert kdek[Attribute.TRUSTED] is False
            return kdek.wrap_key(mk, mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
        finally:
            mk.destroy()
            kdek.destroy()

    with pytest.raises(KeyNotWrappable):
        hsm.run(run)


def test_kdek_cannot_wrap_the_issuer_master_key(
    hsm: Hsm,
    test_keys: IssuerKeys,
) -> None:
    def run(h: Hsm) -> bytes:
        kdek = derive_static_key(h, test_keys.kmc_label, DIV, 3, MechanismFlag.WRAP)
        try:
            imk = h.key(test_keys.imks.ac)
            return kdek.wrap_key(imk, mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
        finally:
            kdek.destroy()

    with pytest.raises(KeyUnextractable):
        hsm.run(run)


async def test_async_build_and_throughput(hsm: Hsm, test_keys: IssuerKeys) -> None:
    cards = [
        CardRecord(f"47617390{n:08d}", "00", "2712", "CARDHOLDER/TEST", "201") for n in range(300)
    ]
    issuer = hsm.run(issuer_oda_on, test_keys.issuer)
    data = hsm.run(card_profile_on, cards[0], issuer).data
    script = await abuild_perso_script(
        hsm, cards[0], DIV, test_keys.imks, test_keys.kmc_label, data
    )
    assert len(script.apdus) == 1 + 13 + 3  # INSTALL, 13 DGIs, DGI 8201 over 4 commands

    def batch(h: Hsm) -> float:
        start = time.perf_counter()
        for card in cards:  # one card's profile data for all: the scripts' cost is the same
            build_perso_script(h, card, DIV, test_keys.imks, test_keys.kmc_label, data)
        return time.perf_counter() - start

    elapsed = hsm.run(batch)
    rate = len(cards) / elapsed
    log.warning(
        "perso scripts prepared: %d cards in %.3f s = %.0f cards/s", len(cards), elapsed, rate
    )
    assert rate > 20
