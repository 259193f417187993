"""intake on the real stack for its own tests: real Postgres and Kafka, the vault answered by
the real keymgmt app in this process (fresh SoftHSM token), two issuers with a product and
blank stock each. intake writes to its own topic prefix, so keymgmt does not try to prepare
the orders these tests make; tests play the other services by producing their events."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import text

from services.intake.app import bootstrap, build_app
from services.intake.orders import PanVault
from services.intake.settings import IntakeSettings
from services.intake.webhook_targets import Resolver, system_resolver
from services.intake.webhooks import Deliverer, SecretBox
from services.keymgmt.settings import KeymgmtSettings
from shared.events import Event
from shared.keymgmt.client import KeymgmtClient
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.bus import produce_events

ISSUERS = ("bank-a", "bank-b")
ADDRESS = {"lines": ["1 Rue Royale"], "postcode": "1000", "city": "Brussels", "country": "BE"}
CSV_HEADER = b"pan,psn,expiry,cardholder_name,address_line1,address_line2,postcode,city,country\n"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_pan(n: int, prefix: str = "4761739") -> str:
    """A Luhn-valid 16-digit test PAN, distinct for each n."""
    body = f"{prefix}{n:08d}"
    total = sum(
        d if i % 2 else (2 * d - 9 if 2 * d > 9 else 2 * d)
        for i, d in enumerate(int(c) for c in reversed(body))
    )
    return body + str(-total % 10)


def csv_line(n: int, **overrides: str) -> bytes:
    fields = {
        "pan": make_pan(n),
        "psn": "00",
        "expiry": "3011",
        "name": f"CARDHOLDER NUMBER {n}",
        "line1": f"Residence Les Jardins, {n} Rue Royale",
        "line2": f"Apartment {n % 500}, Staircase B, 3rd floor",
        "postcode": "1000",
        "city": "Brussels",
        "country": "BE",
    } | overrides
    return (",".join(f'"{v}"' if "," in v else v for v in fields.values()) + "\n").encode()


def csv_lines(count: int) -> Iterator[bytes]:
    yield CSV_HEADER
    for n in range(count):
        yield csv_line(n)


async def chunked(lines: Iterator[bytes], size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A request body produced as it is sent, never held whole."""
    buffer = bytearray()
    for line in lines:
        buffer += line
        if len(buffer) >= size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


class PeakRss:
    """Peak resident memory growth of this process while the block runs, sampled every 5 ms
    by a thread. Before the baseline, garbage is collected and glibc gives its free pages back
    (malloc_trim), so memory freed earlier cannot hide a new allocation."""

    def __init__(self) -> None:
        self.growth = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.growth = max(self.growth, self.rss() - self.baseline)

    def __enter__(self) -> PeakRss:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.baseline = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.growth = max(self.growth, self.rss() - self.baseline)


class Intake:
    def __init__(
        self, http: httpx.AsyncClient, app: Any, runtime: ServiceRuntime, config: IntakeSettings
    ) -> None:
        self.http, self.app, self.runtime, self.settings = http, app, runtime, config
        self.tokens: dict[str, str] = {}
        self.admin: dict[str, str] = {}
        self.operator: dict[str, str] = {}
        self.second_operator: dict[str, str] = {}  # confirms what `operator` asked

    def issuer(self, name: str, **headers: str) -> dict[str, str]:
        return {**bearer(self.tokens[name]), **headers}

    async def rows(self, *tables: str) -> dict[str, int]:
        async with self.runtime.engine.connect() as conn:
            return {
                t: int((await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one())
                for t in tables
            }

    async def state(self) -> dict[str, int]:
        """Rows of everything an order writes, once the relay has drained the outbox."""
        for _ in range(600):
            found = await self.rows(
                "orders", "cards", "stock_movements", "order_events", "webhook_deliveries"
            )
            if (await self.rows("outbox"))["outbox"] == 0:
                return found | {"events": self.runtime.relay.published}
            await asyncio.sleep(0.05)
        raise AssertionError("the outbox did not drain")

    async def order(self, issuer: str, key: str, cards: list[dict[str, Any]]) -> httpx.Response:
        body = {"external_ref": key, "product_id": "debit", "cards": cards}
        return await self.http.post(
            "/v1/orders", json=body, headers=self.issuer(issuer, **{"Idempotency-Key": key})
        )


def card(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "pan": make_pan(n),
        "psn": "00",
        "expiry": "3011",
        "cardholder_name": "ADA LOVELACE",
        "address": ADDRESS,
    } | overrides


@asynccontextmanager
async def started_intake(
    keymgmt_settings: KeymgmtSettings,
    keymgmt_http: httpx.AsyncClient,
    unique: str,
    *,
    stock: int = 20,
    vault: Callable[[KeymgmtClient], PanVault] | None = None,
    resolver: Resolver | None = None,
    **overrides: Any,
) -> AsyncIterator[Intake]:
    """`vault` wraps the client of the real keymgmt (a test injecting a fault); `resolver`
    answers the webhook deliverer's name lookups."""
    values: dict[str, Any] = {
        "environment": "test",
        "topic_prefix": f"{keymgmt_settings.topic_prefix}i",  # override to have keymgmt prepare
        "service_tokens": keymgmt_settings.service_tokens,
        "principals": (
            f"admin:root=adm-{unique},operator:olga=op-{unique},operator:oscar=op2-{unique}"
        ),
        "keymgmt_url": "http://keymgmt",
    }
    config = IntakeSettings(**(values | overrides))
    client = KeymgmtClient("http://keymgmt", f"in-{unique}", http=keymgmt_http)
    deliverer = Deliverer(
        config, SecretBox(config.webhook_key), resolver=resolver or system_resolver
    )
    runtime = bootstrap(
        config,
        schema=f"intake_{unique}",
        vault=vault(client) if vault else client,
        deliverer=deliverer,
    )
    app = build_app(runtime)
    async with running(runtime):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://intake", timeout=600
        ) as http:
            intake = Intake(http, app, runtime, config)
            intake.admin, intake.operator = bearer(f"adm-{unique}"), bearer(f"op-{unique}")
            intake.second_operator = bearer(f"op2-{unique}")
            for issuer in ISSUERS:
                await expect(
                    http.post(
                        "/v1/admin/issuers",
                        headers=intake.admin,
                        json={"issuer_id": issuer, "name": issuer},
                    ),
                    201,
                )
                await expect(
                    http.post(
                        f"/v1/admin/issuers/{issuer}/products",
                        headers=intake.admin,
                        json={"product_id": "debit", "name": "Debit", "kind": "emv"},
                    ),
                    201,
                )
                answer = await expect(
                    http.post(f"/v1/admin/issuers/{issuer}/credentials", headers=intake.admin),
                    201,
                )
                intake.tokens[issuer] = answer.json()["token"]
                await expect(
                    http.post(
                        "/v1/stock/receipts",
                        headers=intake.operator,
                        json={
                            "issuer_id": issuer,
                            "product_id": "debit",
                            "lot_id": f"L-{issuer}",
                            "quantity": stock,
                        },
                    ),
                    201,
                )
            if runtime.consumer is not None:  # as behind a readiness probe: /ready is 200
                async with asyncio.timeout(60):
                    await runtime.consumer.ready.wait()
            yield intake


async def expect(request: Any, status: int) -> httpx.Response:
    answer: httpx.Response = await request
    assert answer.status_code == status, answer.text
    return answer


async def produce(bootstrap: str, topic: str, items: list[Event]) -> None:
    """Play another service: its events on its topic, keyed as the outbox relay keys them."""
    await produce_events(bootstrap, *((topic, event) for event in items))
