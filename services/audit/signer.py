"""The audit service's client of keymgmt's checkpoint-signing endpoints (the HSM's only door).

Every signature is checked against the public key before a checkpoint is stored, so a
misconfigured or substituted signer can never produce a checkpoint auditors would reject.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from services.audit.checkpoint import ALGORITHM, public_key_id


class SignerError(RuntimeError):
    """keymgmt did not sign, or answered something unusable: the checkpoint waits a round."""


@dataclass(frozen=True)
class SignedDigest:
    key_id: str
    algorithm: str
    signature: str  # base64 DER


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    public_key_pem: str


ClientFactory = Callable[[], httpx.AsyncClient]


class KeymgmtSigner:
    def __init__(self, base_url: str, token: str, client: ClientFactory | None = None) -> None:
        self._headers = {"Authorization": f"Bearer {token}"}
        self._client = client or (lambda: httpx.AsyncClient(base_url=base_url, timeout=10.0))
        self._key: SigningKey | None = None

    async def _request(self, method: str, path: str, json: object = None) -> dict[str, object]:
        try:
            async with self._client() as client:
                response = await client.request(method, path, json=json, headers=self._headers)
        except httpx.HTTPError as exc:
            raise SignerError(f"keymgmt unreachable: {exc.__class__.__name__}") from exc
        if response.status_code != 200:
            raise SignerError(f"keymgmt answered {response.status_code}: {response.text[:200]}")
        body: dict[str, object] = response.json()
        return body

    async def public_key(self) -> SigningKey:
        if self._key is None:
            body = await self._request("GET", "/v1/signing/audit-checkpoints/public-key")
            pem, key_id = str(body["public_key_pem"]), str(body["key_id"])
            if public_key_id(pem) != key_id or body.get("algorithm") != ALGORITHM:
                raise SignerError("keymgmt's public key does not match its key id or algorithm")
            self._key = SigningKey(key_id, pem)
        return self._key

    async def sign(self, origin: str, tree_size: int, root_hash: str, at: datetime) -> SignedDigest:
        """keymgmt builds the checkpoint text from these fields itself and signs that."""
        fields = {
            "origin": origin,
            "tree_size": tree_size,
            "root_hash": root_hash,
            "timestamp": at.isoformat(),
        }
        body = await self._request("POST", "/v1/signing/audit-checkpoints", json=fields)
        return SignedDigest(str(body["key_id"]), str(body["algorithm"]), str(body["signature"]))
