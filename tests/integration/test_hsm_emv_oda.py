"""ODA keys on a real SoftHSM token, checked by a terminal-side oracle written from EMV Book 2
(tests/support/oda_terminal.py, `cryptography` public numbers): the test CA's issuer certificate,
the import checks (each refusal tried), the ICC key pool, the ICC certificate and SDA, and the
ICC private key as DGI 8201 unwrapped in software with K_DEK."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from cryptography.hazmat.primitives.serialization import load_der_private_key
from pkcs11 import Attribute, KeyType, ObjectClass

from services.keymgmt.emv.card_oda import generate_pool_pairs, sign_card_oda
from services.keymgmt.emv.oda import OdaError, bureau_test_ca_label, issuer_key_label, recover
from services.keymgmt.emv.profile import EmvProfile, OdaMethod
from services.keymgmt.emv.records import CardRecord, IssuerOda, aip, static_data, static_record
from services.keymgmt.hsm.p11 import as_key
from services.keymgmt.hsm.rsa import RsaPublic, rewrap_private, rsa_public
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.hsm.storage import ICC_POOL_KEY
from services.keymgmt.keys.oda import (
    CA_BITS,
    ISSUER_BITS,
    check_imported_certificate,
    ensure_rsa_pair,
    sign_with_test_ca,
)
from tests.support.oda_terminal import (
    OdaFailed,
    public_key,
    recover_icc_key,
    recover_issuer_key,
    verify_sda,
)

pytestmark = pytest.mark.integration

ISSUER = "odabank"
RECORD = CardRecord("4761739001010010", "01", "2812", "DOE/JANE", "201")
TODAY = date(2026, 12, 7)
SERIAL = bytes.fromhex("000001")


@pytest.fixture(scope="module")
def keys(hsm: Hsm) -> tuple[RsaPublic, RsaPublic]:
    ca = hsm.run(ensure_rsa_pair, bureau_test_ca_label(0x92), CA_BITS)
    issuer = hsm.run(ensure_rsa_pair, issuer_key_label(ISSUER), ISSUER_BITS)
    return ca, issuer


def _issuer_oda(hsm: Hsm, issuer: RsaPublic) -> IssuerOda:
    cert = hsm.run(
        sign_with_test_ca, 0x92, issuer_key_label(ISSUER), "476173", date(2030, 12, 1), SERIAL
    )
    return IssuerOda(0x92, cert.certificate, cert.remainder, issuer)


def test_test_ca_certificate_recovers_the_issuer_key(
    hsm: Hsm, keys: tuple[RsaPublic, RsaPublic]
) -> None:
    ca, issuer = keys
    assert (ca.size, issuer.size, issuer.exponent) == (176, 144, b"\x03")
    oda = _issuer_oda(hsm, issuer)
    got = recover_issuer_key(
        oda.certificate, oda.remainder, b"\x03", public_key(ca.modulus, ca.exponent)
    )
    assert got.modulus == issuer.modulus
    assert got.identifier == bytes.fromhex("476173FF")
    assert got.expiry_mmyy == "1230"
    assert len(oda.remainder) == 4  # NI - (NCA - 36)


def _scheme_signed(
    ca: rsa.RSAPrivateKey, issuer: RsaPublic, expires: str, modulus: bytes | None = None
) -> tuple[bytes, bytes]:
    """An issuer certificate as a scheme CA would sign it: the block built here from Book 2
    Table 6, signed with the software CA's private exponent (raw RSA)."""
    n_ca = ca.key_size // 8
    key = modulus or issuer.modulus
    leftmost, remainder = key[: n_ca - 36], key[n_ca - 36 :]
    body = (
        bytes.fromhex("02476173FF") + bytes.fromhex(expires) + SERIAL + bytes([1, 1, len(key), 1])
    ) + leftmost
    block = b"\x6a" + body + hashlib.sha1(body + remainder + b"\x03").digest() + b"\xbc"
    numbers = ca.private_numbers()
    n = numbers.public_numbers.n
    signed = pow(int.from_bytes(block, "big"), numbers.d, n).to_bytes(n_ca, "big")
    return signed, remainder


@pytest.fixture(scope="module")
def scheme_ca() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=3, key_size=CA_BITS)


def _ca_public(ca: rsa.RSAPrivateKey) -> RsaPublic:
    n = ca.public_key().public_numbers().n
    return RsaPublic(n.to_bytes(ca.key_size // 8, "big"), b"\x03")


def test_imported_certificate_is_checked(
    hsm: Hsm, keys: tuple[RsaPublic, RsaPublic], scheme_ca: rsa.RSAPrivateKey
) -> None:
    _, issuer = keys
    label = issuer_key_label(ISSUER)
    cert, remainder = _scheme_signed(scheme_ca, issuer, "1230")
    facts = hsm.run(
        check_imported_certificate, label, cert, remainder, b"\x03", _ca_public(scheme_ca), TODAY
    )
    assert facts.modulus == issuer.modulus
    assert facts.bin_digits == "476173"
    assert facts.expires == date(2030, 12, 31)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "certificate expired on 2025-11-30"),
        ("other-key", "does not match the issuer key"),
        ("tampered", "bad signature"),
        ("other-ca", "bad signature"),
    ],
)
def test_bad_imported_certificates_are_refused(
    hsm: Hsm,
    keys: tuple[RsaPublic, RsaPublic],
    scheme_ca: rsa.RSAPrivateKey,
    case: str,
    message: str,
) -> None:
    _, issuer = keys
    ca_public = _ca_public(scheme_ca)
    other = bytes([issuer.modulus[0]]) + bytes(142) + b"\x01"
    cert, remainder = _scheme_signed(
        scheme_ca,
        issuer,
        "1125" if case == "expired" else "1230",
        other if case == "other-key" else None,
    )
    if case == "tampered":
        cert = cert[:50] + bytes([cert[50] ^ 1]) + cert[51:]
    if case == "other-ca":
        ca_public = _ca_public(rsa.generate_private_key(public_exponent=3, key_size=CA_BITS))
    with pytest.raises(OdaError, match=message):
        hsm.run(
            check_imported_certificate,
            issuer_key_label(ISSUER),
            cert,
            remainder,
            b"\x03",
            ca_public,
            TODAY,
        )


def test_icc_certificate_sda_and_the_wrapped_private_key(
    hsm: Hsm, keys: tuple[RsaPublic, RsaPublic]
) -> None:
    _, issuer = keys
    oda = _issuer_oda(hsm, issuer)
    [pair] = hsm.run(generate_pool_pairs, 1)
    assert (pair.public.size, pair.public.exponent) == (128, b"\x03")
    profile = EmvProfile()
    signed = hsm.run(
        sign_card_oda, issuer_key_label(ISSUER), oda, RECORD, profile, "261207", pair.public, SERIAL
    )
    static = static_data(static_record(RECORD, profile, "261207"), aip(profile))
    issuer_key = public_key(issuer.modulus, issuer.exponent)
    assert signed.oda.sda is not None
    assert signed.oda.icc_certificate is not None
    assert verify_sda(signed.oda.sda, static, issuer_key) == SERIAL[-2:]
    icc = recover_icc_key(
        signed.oda.icc_certificate, signed.oda.icc_remainder, b"\x03", static, issuer_key
    )
    assert icc.modulus == pair.public.modulus
    assert icc.identifier == bytes.fromhex("4761739001010010FFFF")
    assert icc.expiry_mmyy == "1228"
    with pytest.raises(OdaFailed, match="hash"):  # other static data: the certificate fails
        recover_icc_key(
            signed.oda.icc_certificate,
            signed.oda.icc_remainder,
            b"\x03",
            static + b"\x00",
            issuer_key,
        )
    with pytest.raises(OdaFailed, match="hash"):
        verify_sda(signed.oda.sda, bytes([static[0] ^ 1]) + static[1:], issuer_key)

    # DGI 8201: the pool's wrap re-wrapped under a K_DEK the test knows, unwrapped in software.
    kdek_value = bytes(range(16, 32))

    def rewrap(h: Hsm) -> bytes:
        kdek = as_key(
            h.session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.VALUE: kdek_value,
                    Attribute.TOKEN: False,
                    Attribute.WRAP: True,
                }
            )
        )
        try:
            return rewrap_private(h.key(ICC_POOL_KEY), pair.wrapped, kdek)
        finally:
            kdek.destroy()

    dgi_8201 = hsm.run(rewrap)
    clear = aes_key_unwrap_with_padding(kdek_value, dgi_8201)
    # SoftHSM 2.6 zero-pads the PKCS#8 DER to a multiple of 8 before RFC 5649: a card reads
    # the DER length and ignores what follows (docs/emv-profile.md).
    der = clear[: 4 + int.from_bytes(clear[2:4], "big")]
    assert clear[len(der) :] == bytes(len(clear) - len(der))
    private = load_der_private_key(der, None)
    assert isinstance(private, rsa.RSAPrivateKey)
    n = private.public_key().public_numbers().n
    assert n.to_bytes(128, "big") == pair.public.modulus
    # the card's key signs dynamic data a terminal recovers with the certified key
    block = b"\x6a\x05" + bytes(125) + b"\xbc"
    signature = pow(int.from_bytes(block, "big"), private.private_numbers().d, n).to_bytes(
        128, "big"
    )
    assert recover(signature, RsaPublic(icc.modulus, b"\x03")) == block
    assert hsm.run(rsa_public, issuer_key_label(ISSUER)) == issuer


def test_no_issuer_key_no_certificate(hsm: Hsm, keys: tuple[RsaPublic, RsaPublic]) -> None:
    with pytest.raises(OdaError, match="no issuer RSA key"):
        hsm.run(
            check_imported_certificate,
            issuer_key_label("nobank"),
            bytes(176),
            b"",
            b"\x03",
            keys[0],
            TODAY,
        )
    assert OdaMethod.CDA in EmvProfile().oda_methods
