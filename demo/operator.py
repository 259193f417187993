"""The mobile operator's side of `make demo`: it holds an RSA key pair, receives its transport
key from keymgmt under RSA-OAEP (POST /v1/sim/transport-keys/{operator}), and opens its SIM
output file with that key as its authentication centre would load it (docs/sim.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MAX_VERSION = 999


def _kcv(key: bytes) -> str:
    """AES-CMAC of a zero block, first 3 bytes (X9.24-1:2017), as keymgmt reports it."""
    mac = CMAC(algorithms.AES(key))
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


@dataclass
class Operator:
    issuer_id: str
    private_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        repr=False,
    )
    transport_label: str = ""
    transport_key: bytes = field(default=b"", repr=False)
    kcv: str = ""

    def public_pem(self) -> str:
        pem = self.private_key.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode("ascii")

    async def receive_transport_key(self, keymgmt: httpx.AsyncClient) -> None:
        """Ask keymgmt for a fresh transport key under our RSA key (the next free version)."""
        for version in range(1, MAX_VERSION + 1):
            response = await keymgmt.post(
                f"/v1/sim/transport-keys/{self.issuer_id}",
                json={"public_key_pem": self.public_pem(), "version": version},
            )
            if response.status_code == 409:  # that version exists (an earlier run's key)
                continue
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
            oaep = padding.OAEP(
                mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None
            )
            key = self.private_key.decrypt(bytes.fromhex(answer["wrapped_key"]), oaep)
            if _kcv(key) != answer["kcv"]:
                raise ValueError("the transport key does not match the KCV keymgmt gave")
            self.transport_label, self.transport_key, self.kcv = answer["label"], key, answer["kcv"]
            return
        raise RuntimeError(f"no free transport key version for {self.issuer_id}")

    def open_output_file(self, text: str, op: bytes) -> list[dict[str, Any]]:
        """Each SIM's clear values from the output file; OPc checked against OP (TS 35.206)."""
        if f"KCV {self.kcv}" not in text:
            raise ValueError("the output file is not under this operator's transport key")
        sims = []
        for line in text.splitlines():
            if not line or line.startswith(("*", "var_")):
                continue
            iccid, imsi, ki_hex, opc_hex, pins_hex, _ota = line.split()
            ki = aes_key_unwrap(self.transport_key, bytes.fromhex(ki_hex))
            opc = aes_key_unwrap(self.transport_key, bytes.fromhex(opc_hex))
            aes_ki = Cipher(algorithms.AES(ki), modes.ECB()).encryptor().update(op)
            if opc != bytes(a ^ b for a, b in zip(aes_ki, op, strict=True)):
                raise ValueError(f"SIM {iccid}: OPc is not AES_Ki(OP) xor OP")
            pins = aes_key_unwrap(self.transport_key, bytes.fromhex(pins_hex))
            names = ("pin1", "puk1", "pin2", "puk2", "adm1")
            values = {
                n: pins[8 * i : 8 * i + 8].rstrip(b"\xff").decode() for i, n in enumerate(names)
            }
            sims.append({"iccid": iccid, "imsi": imsi, "ki": ki, "opc": opc} | values)
        return sims
