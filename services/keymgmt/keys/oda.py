"""ODA keys (EMV Book 2): the test CA key pair, issuer RSA key pairs, issuer public key
certificates signed by the test CA or imported and checked, and the per-card ICC certificate
and SDA. HSM-worker functions (first argument ``Hsm``); no database here.

Sizes: CA 1408 bits, issuer 1152, ICC 1024, exponent 3, so NIC <= NI <= NCA (Book 2 §5.1,
§6.1) and both certificates carry a remainder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from services.keymgmt.emv.oda import (
    IssuerCertificateFacts,
    OdaError,
    bureau_test_ca_label,
    check_issuer_certificate,
    issuer_certificate_block,
)
from services.keymgmt.hsm.rsa import RsaPublic, generate_rsa_pair, rsa_public, rsa_raw_sign
from services.keymgmt.hsm.session import Hsm, KeyNotFoundError

CA_BITS, ISSUER_BITS = 1408, 1152


def ensure_rsa_pair(hsm: Hsm, label: str, bits: int) -> RsaPublic:
    """The pair's public key, the pair generated in the HSM when absent."""
    return rsa_public(hsm, label) or generate_rsa_pair(hsm, label, bits)


@dataclass(frozen=True)
class IssuerCertificate:
    certificate: bytes
    remainder: bytes
    exponent: bytes
    serial: bytes
    expires: date


def sign_with_test_ca(
    hsm: Hsm, ca_index: int, issuer_label: str, bin_digits: str, expires: date, serial: bytes
) -> IssuerCertificate:
    """The issuer public key certificate signed by the bureau's test CA inside the HSM
    (test and demo only; production imports the scheme CA's)."""
    ca = rsa_public(hsm, bureau_test_ca_label(ca_index))
    if ca is None:
        raise KeyNotFoundError(bureau_test_ca_label(ca_index))
    issuer = rsa_public(hsm, issuer_label)
    if issuer is None:
        raise KeyNotFoundError(issuer_label)
    cert = issuer_certificate_block(issuer, bin_digits, expires, serial, ca.size)
    signed = rsa_raw_sign(hsm, bureau_test_ca_label(ca_index), cert.block)
    return IssuerCertificate(signed, cert.remainder, cert.exponent, serial, expires)


def check_imported_certificate(
    hsm: Hsm,
    issuer_label: str,
    certificate: bytes,
    remainder: bytes,
    exponent: bytes,
    ca: RsaPublic,
    today: date,
) -> IssuerCertificateFacts:
    """Book 2 §5.3 checks of an imported certificate against the CA public key and the issuer
    key in the HSM; OdaError names what is wrong."""
    issuer = rsa_public(hsm, issuer_label)
    if issuer is None:
        raise OdaError(f"no issuer RSA key {issuer_label} in the HSM")
    return check_issuer_certificate(certificate, remainder, exponent, ca, issuer, today)
