"""The read side of keymgmt's vault API that graphical and fulfillment share (docs/services.md).

Transport errors and 5xx are retried here with backoff; if keymgmt stays away the call raises
KeymgmtUnavailable, a ConnectionError, which the event consumer treats as transient and
retries without limit: an outage delays a card, it never loses one. A 404 means keymgmt
has no such card (CardNotInVault), which the handler turns into a poison event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)


class KeymgmtError(Exception):
    """Base of everything this client raises."""


class KeymgmtUnavailable(KeymgmtError, ConnectionError):
    """keymgmt did not answer usefully (network, 5xx, refused credentials): try again later."""


class CardNotInVault(KeymgmtError, LookupError):
    """keymgmt answered 404: it holds no record of this card."""


class KeymgmtBadResponse(KeymgmtError):
    """keymgmt answered, but not with what the contract promises."""


class VaultReader:
    """GETs one card's record from the vault as a contract model, with bounded retries."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_s: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            transport=transport,
        )
        self._attempts = attempts
        self._backoff_s = backoff_s

    async def aclose(self) -> None:
        await self._http.aclose()

    async def card_record(self, card_id: UUID, view: str, model: type[Model]) -> Model:
        """`GET /v1/vault/cards/{card_id}/{view}` validated as `model`."""
        body = await self._get_json(f"/v1/vault/cards/{card_id}/{view}", card_id)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise KeymgmtBadResponse(f"{view} for card {card_id}: {field_problems(exc)}") from exc

    async def _get_json(self, path: str, card_id: UUID) -> object:
        last_problem = ""
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._http.get(path)
            except httpx.TransportError as exc:
                last_problem = f"{exc.__class__.__name__}: {exc}"
            else:
                if response.status_code == 404:
                    raise CardNotInVault(f"keymgmt holds no card {card_id}")
                if response.status_code in (401, 403):
                    # Our credentials are wrong: a configuration fault, not the card's.
                    raise KeymgmtUnavailable(
                        f"keymgmt refused our service token ({response.status_code})"
                    )
                if response.status_code < 500:
                    if response.status_code != 200:
                        raise KeymgmtBadResponse(
                            f"GET {path} answered {response.status_code}: {response.text[:200]}"
                        )
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise KeymgmtBadResponse(f"GET {path} answered no JSON") from exc
                last_problem = f"HTTP {response.status_code}"
            if attempt < self._attempts:
                log.warning(
                    "keymgmt call failed; retrying",
                    extra={"path": path, "attempt": attempt, "problem": last_problem},
                )
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
        raise KeymgmtUnavailable(f"GET {path} failed {self._attempts} times: {last_problem}")


def field_problems(exc: ValidationError) -> str:
    """Which fields are wrong, without their values: they are cardholder data."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        for err in exc.errors(include_input=False)[:5]
    )
