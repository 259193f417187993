"""The one client of keymgmt's HTTP API (shared/keymgmt/contract.py), for every service.

One retry policy decides what is tried again and for how long: the station and QA wait for
keymgmt without limit (a card stays in its reader meanwhile), the vault readers try a few times
and then let the event consumer retry, audit tries once a round. One mapping turns keymgmt's
answer into the vocabulary of shared/keymgmt/errors.py, in `status_error` below.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode
from uuid import UUID

import httpx
from pydantic import BaseModel, ValidationError

from shared.keymgmt import contract as c
from shared.keymgmt.errors import (
    KeymgmtBadResponse,
    KeymgmtError,
    KeymgmtRefused,
    KeymgmtUnavailable,
    field_problems,
)
from shared.pan import redact_pans
from shared.telemetry import inject_trace_headers

log = logging.getLogger(__name__)
Answer = TypeVar("Answer", bound=BaseModel)

SERVER_ERRORS = frozenset(range(500, 600))
CREDENTIALS_REFUSED = frozenset({401, 403})


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are tried again, how often, and how long to wait in between.

    Transport errors (no answer, timeout) and the statuses in `retry_statuses` are retried;
    every other answer is final. The n-th wait is `backoff_s * 2**(n-1)`, capped at
    `backoff_max_s`, less a random share of up to `jitter` of it (so that replicas that
    failed together do not come back together).
    """

    max_attempts: int | None = 4  # None: until keymgmt answers
    backoff_s: float = 0.2
    backoff_max_s: float = 5.0
    jitter: float = 0.2
    retry_statuses: frozenset[int] = SERVER_ERRORS

    @classmethod
    def until_answered(cls, backoff_s: float = 0.2, backoff_max_s: float = 5.0) -> RetryPolicy:
        """For a caller holding a card that only keymgmt's answer can move on (station, QA):
        wait out any outage, refused credentials included (a configuration being fixed)."""
        statuses = SERVER_ERRORS | CREDENTIALS_REFUSED
        return cls(None, backoff_s, backoff_max_s, retry_statuses=statuses)

    @classmethod
    def once(cls) -> RetryPolicy:
        """No retry here: the caller tries again on its own schedule."""
        return cls(max_attempts=1)

    def gives_up_after(self, attempt: int) -> bool:
        return self.max_attempts is not None and attempt >= self.max_attempts

    def delay_s(self, failures: int, draw: float) -> float:
        """The wait after the `failures`-th failure in a row; `draw` is uniform in [0, 1)."""
        doubled: float = self.backoff_s * 2.0 ** min(failures - 1, 32)
        return min(doubled, self.backoff_max_s) * (1 - self.jitter * draw)


@dataclass
class RetryState:
    """How an outage looks from the caller (readiness and tests read it)."""

    failures: int = 0
    last_problem: str = ""


def _json(body: BaseModel) -> bytes:
    """The request body as JSON, straight from the model (no copy as dicts on the way)."""
    return body.model_dump_json().encode()


def status_error(method: str, path: str, response: httpx.Response) -> KeymgmtError | None:
    """keymgmt's HTTP answer in the bureau's words; None for a 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    refusal = response.headers.get(c.REFUSAL_HEADER)
    if status in CREDENTIALS_REFUSED and refusal is None:
        # Our credentials are wrong: a configuration fault, never the card's. (A 403 with a
        # refusal code is keymgmt's verdict on the card for this caller: station planning.)
        return KeymgmtUnavailable(f"{method} {path}: keymgmt refused our service token ({status})")
    if status >= 500:
        return KeymgmtUnavailable(f"{method} {path}: HTTP {status}")
    detail = redact_pans(response.text[:200])
    return KeymgmtRefused(path, status, refusal, detail)


class KeymgmtClient:
    """Every keymgmt endpoint another service calls, typed with the contract's models."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        policy: RetryPolicy | None = None,
        timeout_s: float | httpx.Timeout = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        """`http`: an existing client to send through (tests bind one to keymgmt's app);
        it stays its owner's to close."""
        self._owned = http is None
        self._http = http or httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout_s,
            transport=transport,
            event_hooks={"request": [inject_trace_headers]},
        )
        self._headers = {"Authorization": f"Bearer {token}"}
        self._json_headers = self._headers | {"Content-Type": "application/json"}
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._draw = draw
        self.retries = RetryState()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    # -- the vault ---------------------------------------------------------------------------
    async def store_cards(self, request: c.VaultStore) -> c.VaultStored:
        return await self.store_cards_json(_json(request))

    async def store_cards_json(self, body: bytes) -> c.VaultStored:
        """store_cards with its body already written (contract.vault_store_json): a bulk
        order's chunk goes out without ever being models all at once."""
        return await self._call("POST", c.VAULT_CARDS, body, c.VaultStored)

    async def forget_cards(self, request: c.VaultForget) -> c.VaultForgotten:
        return await self._call("POST", c.VAULT_FORGET, _json(request), c.VaultForgotten)

    async def print_data(self, card_id: UUID) -> c.PrintData:
        path = c.VAULT_PRINT_DATA.format(card_id=card_id)
        return await self._call("GET", path, None, c.PrintData)

    async def mailing(self, card_id: UUID) -> c.MailingData:
        return await self._call("GET", c.VAULT_MAILING.format(card_id=card_id), None, c.MailingData)

    # -- perso -------------------------------------------------------------------------------
    async def secure_script(self, request: c.SecureScriptRequest) -> c.SecureScript:
        script = await self._call("POST", c.SECURE_SCRIPTS, _json(request), c.SecureScript)
        if script.card_id != request.card_id:
            raise KeymgmtBadResponse("keymgmt answered with the script of another card")
        if script.chip_serial != request.chip_serial.upper():
            raise KeymgmtBadResponse("keymgmt answered with the script of another chip")
        return script

    # -- QA ----------------------------------------------------------------------------------
    async def readback(self, request: c.ReadbackRequest) -> c.Verdict:
        return await self._call("POST", c.QA_READBACK, _json(request), c.Verdict)

    async def verify_arqc(self, request: c.ArqcRequest) -> c.Verdict:
        return await self._call("POST", c.ARQC_VERIFY, _json(request), c.Verdict)

    async def ca_public_key(self, rid: str, ca_index: str) -> c.CaPublicKey:
        """A CA public key the bureau trusts, by RID and index (QA's ODA checks)."""
        path = c.CA_PUBLIC_KEY.format(rid=rid.upper(), ca_index=ca_index.upper())
        return await self._call("GET", path, None, c.CaPublicKey)

    async def sim_challenge(self, request: c.SimChallengeRequest) -> c.SimChallenge:
        return await self._call("POST", c.SIM_QA_CHALLENGE, _json(request), c.SimChallenge)

    async def sim_check(self, request: c.SimCheckRequest) -> c.Verdict:
        return await self._call("POST", c.SIM_QA_CHECK, _json(request), c.Verdict)

    # -- PIN mailers -------------------------------------------------------------------------
    async def pin_mailer(self, request: c.PinMailerRequest) -> c.PinMailerState | None:
        """Have keymgmt print the card's PIN mailer (idempotent). None: the card has no PIN."""
        try:
            return await self._call("POST", c.PIN_MAILERS, _json(request), c.PinMailerState)
        except KeymgmtRefused as exc:
            if exc.not_found:
                return None
            raise

    # -- audit checkpoint signing ------------------------------------------------------------
    async def sign_checkpoint(self, request: c.CheckpointToSign) -> c.CheckpointSignature:
        body = _json(request)
        return await self._call("POST", c.CHECKPOINT_SIGNATURES, body, c.CheckpointSignature)

    async def checkpoint_public_key(self) -> c.SigningPublicKey:
        return await self._call("GET", c.CHECKPOINT_PUBLIC_KEY, None, c.SigningPublicKey)

    async def last_signed_checkpoint(self, origin: str) -> c.LastSignedCheckpoint | None:
        """keymgmt's record of the newest checkpoint it signed; None before the first."""
        path = f"{c.CHECKPOINT_LAST_SIGNED}?{urlencode({'origin': origin})}"
        try:
            return await self._call("GET", path, None, c.LastSignedCheckpoint)
        except KeymgmtRefused as exc:
            if exc.not_found:
                return None
            raise

    # -- one request, retried by the policy ----------------------------------------------------
    async def _call(
        self, method: str, path: str, content: bytes | None, answer: type[Answer]
    ) -> Answer:
        response = await self._send(method, path, content)
        try:
            return answer.model_validate_json(response.content)
        except ValidationError as exc:
            raise KeymgmtBadResponse(f"{method} {path}: {field_problems(exc)}") from exc

    async def _send(self, method: str, path: str, content: bytes | None) -> httpx.Response:
        """keymgmt's 2xx answer; raises what anything else means once the policy gives up."""
        headers = self._headers if content is None else self._json_headers
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(method, path, content=content, headers=headers)
            except httpx.TransportError as exc:
                failure: KeymgmtError = KeymgmtUnavailable(exc.__class__.__name__)
                retryable = True
            else:
                found = status_error(method, path, response)
                if found is None:
                    return response
                failure = found
                retryable = isinstance(found, KeymgmtUnavailable) and (
                    response.status_code in self.policy.retry_statuses
                )
            if not retryable:
                raise failure
            if self.policy.gives_up_after(attempt):
                raise KeymgmtUnavailable(f"{method} {path} failed {attempt} times: {failure}")
            await self._wait(method, path, attempt, str(failure))

    async def _wait(self, method: str, path: str, attempt: int, problem: str) -> None:
        self.retries.failures += 1
        self.retries.last_problem = problem
        delay = self.policy.delay_s(attempt, self._draw())
        log.warning(
            "keymgmt unavailable; retrying",
            extra={"path": f"{method} {path}", "attempt": attempt, "problem": problem},
        )
        await self._sleep(delay)


__all__ = [
    "KeymgmtBadResponse",
    "KeymgmtClient",
    "KeymgmtError",
    "KeymgmtRefused",
    "KeymgmtUnavailable",
    "RetryPolicy",
    "RetryState",
    "field_problems",
    "status_error",
]
