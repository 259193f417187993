"""keymgmt's answers to QA about a payment chip, from the test issuer's own data (tests/support/
emv_issuer.py): the records compared by DGI number, the ARQC recomputed with pyemv. The real
keymgmt does both in its vault and HSM; this stands in where a test has no keymgmt."""

from __future__ import annotations

import uuid

from pyemv import ac, kd

from shared.keymgmt.contract import ArqcRequest, ReadbackRequest, Verdict
from tests.support import emv_issuer


class IssuerOracle:
    def __init__(self, *, arqc_ok: bool = True) -> None:
        self.cards: dict[uuid.UUID, emv_issuer.CardData] = {}
        self.arqc_ok = arqc_ok
        self.verified: list[ArqcRequest] = []

    def add(self, card_id: uuid.UUID, data: emv_issuer.CardData) -> None:
        self.cards[card_id] = data

    async def readback(self, request: ReadbackRequest) -> Verdict:
        data = self.cards[request.card_id]
        want = {f"{dgi:04X}": raw.hex().upper() for dgi, raw in data.records.items()}
        problems = [f"record {k} differs" for k in want if request.records.get(k) != want[k]]
        return Verdict(ok=not problems, problems=tuple(problems))

    async def verify_arqc(self, request: ArqcRequest) -> Verdict:
        self.verified.append(request)
        data = self.cards[request.card_id]
        atc = bytes.fromhex(request.atc)
        session_key = kd.derive_common_sk(data.mk_ac, atc + bytes(6))
        mac = ac.generate_ac(session_key, bytes.fromhex(request.cdol1) + emv_issuer.AIP + atc)
        return Verdict(ok=self.arqc_ok and bytes(mac).hex() == request.arqc)
