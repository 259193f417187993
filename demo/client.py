"""A thin client of the bureau's HTTP APIs, as an issuer, an operator and an auditor use them.
The demo and the e2e test drive the bureau through it, never through its tables."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from demo.emv_product import set_up_emv_product
from demo.operator import Operator
from shared.credentials import people_tokens
from shared.pan import luhn_check_digit

REPO = Path(__file__).resolve().parent.parent
DEMO_OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")  # TS 35.208 test set 1
DEMO_BIN = "476173"  # an EMV test-card BIN: never a live account range
FIRST = ["ADA", "ALAN", "GRACE", "EDSGER", "BARBARA", "DONALD", "FRANCES", "KEN", "RADIA", "TIM"]
LAST = ["LOVELACE", "TURING", "HOPPER", "DIJKSTRA", "LISKOV", "KNUTH", "ALLEN", "THOMPSON"]


@dataclass
class Urls:
    intake: str = "http://127.0.0.1:8101"
    keymgmt: str = "http://127.0.0.1:8102"
    audit: str = "http://127.0.0.1:8107"
    fulfillment: str = "http://127.0.0.1:8106"


@dataclass
class Tokens:
    admin: str
    operator: str
    second_operator: str  # confirms what `operator` asked (dual control)
    auditor: str

    @classmethod
    def of_stack(cls, run_dir: Path | None = None) -> Tokens:
        """The people's tokens of the local stack (BUREAU_RUN_DIR, default <repo>/.run), made
        for it by deploy/local/stack.sh (deploy/local/tokens.py)."""
        run = run_dir or Path(os.environ.get("BUREAU_RUN_DIR", REPO / ".run"))
        people = people_tokens(run)
        return cls(
            admin=people["admin:root"],
            operator=people["operator:olga"],
            second_operator=people["operator:oscar"],
            auditor=people["auditor:ann"],
        )


def demo_cards(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Cardholder records with Luhn-valid PANs in the test BIN, distinct per card."""
    rng = random.Random(seed)
    cards = []
    accounts = rng.sample(range(10**8, 10**9), count)
    for account in accounts:
        partial = f"{DEMO_BIN}{account:09d}"
        cards.append(
            {
                "pan": partial + luhn_check_digit(partial),
                "psn": "00",
                "expiry": "3011",
                "cardholder_name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                "address": {
                    "lines": [f"{rng.randint(1, 250)} Bureau Street"],
                    "postcode": f"{rng.randint(1000, 9999)}",
                    "city": "Brussels",
                    "country": "BE",
                },
            }
        )
    return cards


@dataclass
class Bureau:
    urls: Urls = field(default_factory=Urls)
    tokens: Tokens = field(default_factory=Tokens.of_stack)

    def _client(self, base: str, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120.0
        )

    async def onboard_issuer(
        self, issuer_id: str, name: str, product_id: str, kind: str = "emv", cards: int = 50
    ) -> str:
        """Create the issuer and its product (`emv` or `sim`) if missing, an EMV product with
        its full profile in keymgmt (`cards` ICC pairs for its cards); return a fresh issuer
        API token."""
        if kind == "emv":
            await self.emv_product(issuer_id, product_id, cards)
        async with self._client(self.urls.intake, self.tokens.admin) as admin:
            response = await admin.post(
                "/v1/admin/issuers", json={"issuer_id": issuer_id, "name": name}
            )
            if response.status_code not in (201, 409):
                response.raise_for_status()
            response = await admin.post(
                f"/v1/admin/issuers/{issuer_id}/products",
                json={"product_id": product_id, "name": f"{name} {kind}", "kind": kind},
            )
            if response.status_code not in (201, 409):
                response.raise_for_status()
            response = await admin.post(f"/v1/admin/issuers/{issuer_id}/credentials")
            response.raise_for_status()
            return str(response.json()["token"])

    async def emv_product(self, issuer_id: str, product_id: str, cards: int) -> Any:
        """The product's EMV profile, the test CA, the issuer key and its certificate, ICC key
        pairs in keymgmt's pool (demo/emv_product.py); the issuer's IMKs, PIN key and CVKs come
        from `ceremony demo-keys --emv`. Returns the test CA's public key."""
        async with self._client(self.urls.keymgmt, self.tokens.admin) as admin:
            return await set_up_emv_product(
                admin, issuer_id, product_id, bin_=DEMO_BIN, pairs=max(cards, 1)
            )

    async def sim_product(
        self, issuer_id: str, product_id: str, imsi_prefix: str, iccid_prefix: str = "8932990"
    ) -> Operator:
        """The operator's SIM product in keymgmt: the operator's own transport key, sent to it
        under its RSA public key (RSA-OAEP), a TEST OP (3GPP TS 35.208 test set 1), the ICCID
        and IMSI ranges (keymgmt refuses ranges that overlap another product's) and a SIM
        profile. Idempotent (the serial counter survives); returns the operator holding the
        key its output file will be under."""
        operator = Operator(issuer_id)
        async with self._client(self.urls.keymgmt, self.tokens.admin) as admin:
            await operator.receive_transport_key(admin)
            response = await admin.put(
                f"/v1/sim/products/{issuer_id}/{product_id}",
                json={
                    "op": DEMO_OP.hex(),
                    "transport_key_label": operator.transport_label,
                    "iccid_prefix": iccid_prefix,
                    "imsi_prefix": imsi_prefix,
                    "first_serial": 1,
                    "last_serial": 10**9,
                    "profile": {"spn": "Demo Mobile", "fplmn": ["00103"]},
                },
            )
            response.raise_for_status()
        return operator

    async def sim_output_file(self, batch_id: str, operator_token: str) -> str:
        """The operator's output file of a batch, fetched with the operator's own issuer token
        (intake's credentials API; keymgmt verifies it with intake, docs/sim.md)."""
        async with self._client(self.urls.keymgmt, operator_token) as operator:
            response = await operator.get(f"/v1/sim/batches/{batch_id}/output-file")
            response.raise_for_status()
            return response.text

    async def receive_stock(self, issuer_id: str, product_id: str, quantity: int) -> None:
        async with self._client(self.urls.intake, self.tokens.operator) as operator:
            response = await operator.post(
                "/v1/stock/receipts",
                json={
                    "issuer_id": issuer_id,
                    "product_id": product_id,
                    "lot_id": f"LOT-{uuid.uuid4().hex[:8].upper()}",
                    "quantity": quantity,
                },
            )
            response.raise_for_status()

    async def post_order(
        self, issuer_token: str, product_id: str, cards: list[dict[str, Any]]
    ) -> dict[str, Any]:
        async with self._client(self.urls.intake, issuer_token) as issuer:
            response = await issuer.post(
                "/v1/orders",
                json={
                    "external_ref": f"DEMO-{uuid.uuid4().hex[:8].upper()}",
                    "product_id": product_id,
                    "cards": cards,
                },
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    async def reconciliation(self, batch_id: str) -> dict[str, Any] | None:
        async with self._client(self.urls.audit, self.tokens.auditor) as auditor:
            response = await auditor.get(f"/v1/batches/{batch_id}/reconciliation")
            if response.status_code == 404:
                return None
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    async def events_of_card(self, card_id: str) -> list[dict[str, Any]]:
        async with self._client(self.urls.audit, self.tokens.auditor) as auditor:
            response = await auditor.get("/v1/events", params={"card_id": card_id, "limit": 100})
            response.raise_for_status()
            found: list[dict[str, Any]] = response.json()["events"]
            return found

    async def wait_for_batch(
        self,
        batch_id: str,
        until: set[str],
        timeout: float,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll audit's view of the batch until its status is one of `until`."""
        deadline = asyncio.get_running_loop().time() + timeout
        last: dict[str, Any] | None = None
        while True:
            view = await self.reconciliation(batch_id)
            if view is not None:
                last = view
                if progress is not None:
                    progress(view)
                if view["status"] in until:
                    return view
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"batch {batch_id} not {sorted(until)} in {timeout}s: {last}")
            await asyncio.sleep(1.0)
