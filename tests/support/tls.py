"""Test TLS material: a CA and server certificates it signs (or not), written where a test
printer (ippeveprinter -K <dir>) finds them: <dir>/<hostname>.crt and <dir>/<hostname>.key.
Made with `cryptography`, never the stack's CA: a test owns every key it uses."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


@dataclass
class TestCa:
    """A CA whose certificate a client trusts (`cert_file`) and which signs server certs."""

    __test__ = False
    cert_file: Path
    _key: ec.EllipticCurvePrivateKey
    _cert: x509.Certificate

    @classmethod
    def create(cls, directory: Path, name: str = "test CA") -> TestCa:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(name, _name(name), key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        cert_file = directory / "ca.crt"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert_file, key, cert)

    def issue(
        self,
        keys_dir: Path,
        file_host: str = "localhost",
        names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ) -> None:
        """A server certificate for `names` (DNS names or IP addresses), saved as
        <keys_dir>/<file_host>.crt and .key (the files ippeveprinter -n <file_host> loads)."""
        keys_dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        cert = (
            _builder(names[0], self._cert.subject, key)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        (keys_dir / f"{file_host}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file = keys_dir / f"{file_host}.key"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
