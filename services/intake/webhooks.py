"""Signed webhook callbacks to issuers, delivered from a durable outbox with retries.

A milestone (order accepted, cards dispatched, a card spoiled, failed QA or cancelled) writes a
`webhook_deliveries` row in the same transaction as the change it reports; the deliverer posts
it to the issuer's URL until a 2xx answer, backing off exponentially, and gives up after
`webhook_max_attempts` (the row stays, marked failed, for the issuer to see).

Signature (the scheme issuers verify, documented in docs/intake-api.md):
    X-Bureau-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>
The timestamp is signed with the body, so a receiver rejects replays older than its tolerance.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.intake.repository import IntakeRepository
from services.intake.settings import IntakeSettings
from services.intake.webhook_targets import (
    Resolver,
    Target,
    TargetRefused,
    parse_networks,
    resolve_target,
    system_resolver,
)
from shared.outage import report_failure
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Bureau-Signature"
NO_ANSWER = "not delivered: no HTTP answer from the endpoint"
_NAMESPACE = uuid.UUID("3c2b7f3e-8a1d-4e55-b0a3-6d1c9e0a7b21")


class SecretBox:
    """Seals webhook secrets at rest: AES-256-GCM, key derived from settings.webhook_key,
    the issuer id bound as associated data (a sealed secret cannot be moved to another
    issuer). The secret must be usable to sign, so it cannot be kept as a digest."""

    def __init__(self, key_material: str) -> None:
        key = hashlib.sha256(b"intake webhook secrets|" + key_material.encode()).digest()
        self._aead = AESGCM(key)

    def seal(self, issuer_id: str, secret: str) -> bytes:
        nonce = uuid.uuid4().bytes[:12]
        return nonce + self._aead.encrypt(nonce, secret.encode(), issuer_id.encode())

    def open(self, issuer_id: str, blob: bytes) -> str:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], issuer_id.encode()).decode()
        except InvalidTag as exc:
            raise ValueError("webhook secret failed authentication") from exc


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """What an issuer's receiver does: recompute, compare in constant time, check the age."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt after `attempts` failures: base, 2 base, 4 base..."""
    return float(min(cap, base * 2 ** max(attempts - 1, 0)))


def delivery(
    issuer_id: str, kind: str, source: str, data: dict[str, Any], at: str
) -> dict[str, Any]:
    """A webhook_deliveries row. The id derives from what it reports (`source`), so a replayed
    event or request never queues a second callback."""
    delivery_id = uuid.uuid5(_NAMESPACE, f"{issuer_id}/{kind}/{source}")
    body = {"id": str(delivery_id), "type": kind, "created_at": at, "data": data}
    return {
        "delivery_id": delivery_id,
        "issuer_id": issuer_id,
        "type": kind,
        "body": json.dumps(body, sort_keys=True, separators=(",", ":")),
    }


# The runtime's unit_of_work: the worker owns each of its transactions.
Units = Callable[[], AbstractAsyncContextManager[UnitOfWork[IntakeRepository]]]


class Deliverer:
    """Posts due deliveries; one loop per intake replica (rows are leased, SKIP LOCKED)."""

    def __init__(
        self,
        settings: IntakeSettings,
        box: SecretBox,
        client: httpx.AsyncClient | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._settings = settings
        self.box = box
        self._allowed = parse_networks(settings.webhook_allowed_networks)
        self._resolver = resolver
        self._client = client or httpx.AsyncClient(
            timeout=settings.webhook_timeout, follow_redirects=False
        )
        self.wakeup = asyncio.Event()

    async def check_target(self, url: str) -> Target:
        """The URL checked and its host resolved as a delivery would: TargetRefused if the
        bureau must not post there (webhook_targets.py)."""
        return await resolve_target(
            url,
            production=self._settings.environment not in ("dev", "test"),
            allowed=self._allowed,
            resolver=self._resolver,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def run(self, units: Units) -> None:
        while True:
            try:
                sent = await self.deliver_due(units)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Rows stay queued either way. An outage is waited out here and logged once
                # (shared.outage); anything else ends the loop for its supervisor to restart.
                if not report_failure(exc):
                    raise
                sent = 0
            if sent == 0:
                try:
                    await asyncio.wait_for(self.wakeup.wait(), self._settings.webhook_poll_interval)
                except TimeoutError:
                    pass
                self.wakeup.clear()

    async def deliver_due(self, units: Units, limit: int = 20) -> int:
        lease = self._settings.webhook_timeout * 3
        async with units() as uow:
            due = await uow.repo.claim_deliveries(limit, lease)
        results = await asyncio.gather(*(self._post(row) for row in due))
        async with units() as uow:
            repo = uow.repo
            for row, error in zip(due, results, strict=True):
                if error is None:
                    await repo.delivered(row["id"])
                    continue
                attempts = row["attempts"] + 1
                retry: float | None = None
                if attempts < self._settings.webhook_max_attempts:
                    retry = backoff(
                        attempts,
                        self._settings.webhook_backoff_base,
                        self._settings.webhook_backoff_max,
                    )
                log.warning(
                    "webhook delivery failed",
                    extra={"issuer_id": row["issuer_id"], "attempt": attempts, "error": error},
                )
                await repo.delivery_failed(row["id"], error, retry)
        return len(due)

    async def _post(self, row: dict[str, Any]) -> str | None:
        """None when the issuer acknowledged (2xx), else what went wrong."""
        body = row["body"].encode()
        try:
            secret = self.box.open(row["issuer_id"], bytes(row["secret_blob"]))
        except ValueError as exc:
            return str(exc)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
            "X-Bureau-Delivery": str(row["delivery_id"]),
            "X-Bureau-Event-Type": row["type"],
        }
        try:
            # Resolved and checked again now: the name may point elsewhere than when it was set.
            target = await self.check_target(row["url"])
        except TargetRefused as exc:
            return f"not delivered: {exc}"
        headers["Host"] = target.host_header
        try:
            # Connect to the checked address (pinned); TLS still verifies the issuer's name.
            answer = await self._client.post(
                target.url,
                content=body,
                headers=headers,
                extensions={"sni_hostname": target.host},
            )
        except httpx.HTTPError as exc:
            # Which transport error it was stays in our log: told to the issuer, it would map
            # what listens where (a port scanner).
            log.info("webhook transport error", extra={"error": exc.__class__.__name__})
            return NO_ANSWER
        if 200 <= answer.status_code < 300:
            return None
        return f"not acknowledged: the endpoint answered HTTP {answer.status_code}"
