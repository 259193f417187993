"""keymgmt's answers to QA about a payment chip, from the test issuer's own data (tests/support/
emv_issuer.py): the records compared by DGI number, the ARQC recomputed with pyemv. The real
keymgmt does both in its vault and HSM; this stands in where a test has no keymgmt."""

from __future__ import annotations

import uuid
from datetime import date

from pyemv import ac, kd

from shared.keymgmt.contract import (
    CA_PUBLIC_KEY,
    ArqcRequest,
    CaPublicKey,
    ReadbackProblem,
    ReadbackRequest,
    Verdict,
)
from shared.keymgmt.errors import KeymgmtRefused
from tests.support import emv_issuer


class IssuerOracle:
    def __init__(self, *, arqc_ok: bool = True, trusts_ca: bool = True) -> None:
        self.cards: dict[uuid.UUID, emv_issuer.CardData] = {}
        self.arqc_ok = arqc_ok
        self.trusts_ca = trusts_ca
        self.readbacks: list[ReadbackRequest] = []
        self.verified: list[ArqcRequest] = []

    def add(self, card_id: uuid.UUID, data: emv_issuer.CardData) -> None:
        self.cards[card_id] = data

    async def readback(self, request: ReadbackRequest) -> Verdict:
        """keymgmt's reason codes (shared/keymgmt/contract.py ReadbackProblem), no record named."""
        self.readbacks.append(request)
        data = self.cards[request.card_id]
        want = {f"{dgi:04X}": raw.hex().upper() for dgi, raw in data.records.items()}
        got = {k: v.upper() for k, v in request.records.items()}
        problems = set()
        if set(want) - set(got):
            problems.add(ReadbackProblem.RECORD_MISSING.value)
        if set(got) - set(want):
            problems.add(ReadbackProblem.RECORD_UNEXPECTED.value)
        if any(k in got and got[k] != v for k, v in want.items()):
            problems.add(ReadbackProblem.RECORDS_DIFFER.value)
        return Verdict(ok=not problems, problems=tuple(sorted(problems)))

    async def ca_public_key(self, rid: str, ca_index: str) -> CaPublicKey:
        """The test issuer's CA, as keymgmt answers for a CA it trusts; 404 for any other."""
        ca_rid, modulus, index, exponent = emv_issuer.ca_public_key()
        path = CA_PUBLIC_KEY.format(rid=rid, ca_index=ca_index)
        if not self.trusts_ca or (rid, ca_index) != (ca_rid.hex().upper(), f"{index:02X}"):
            raise KeymgmtRefused(path, 404, None, f"no trusted CA public key {rid}/{ca_index}")
        return CaPublicKey(
            rid=rid,
            ca_index=ca_index,
            modulus=modulus.hex().upper(),
            exponent=exponent.hex().upper(),
            expires=date(2030, 12, 31),
        )

    async def verify_arqc(self, request: ArqcRequest) -> Verdict:
        self.verified.append(request)
        data = self.cards[request.card_id]
        atc = bytes.fromhex(request.atc)
        session_key = kd.derive_common_sk(data.mk_ac, atc + bytes(6))
        mac = ac.generate_ac(session_key, bytes.fromhex(request.cdol1) + emv_issuer.AIP + atc)
        return Verdict(ok=self.arqc_ok and bytes(mac).hex() == request.arqc)
