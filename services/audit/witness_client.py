"""Audit's side of c2sp.org/tlog-witness: have each new checkpoint cosigned by the witness.

The witness cosigns only a checkpoint consistent with the last one it cosigned, whose size it
names in a 409 when audit guessed wrong; audit then proves consistency from that size. The
cosignature lines are checked with the witness's vkey before they join the stored note.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable

import httpx

from services.audit.signer import SignerError
from shared.checkpoint_note import NoteError, SignedNote, Vkey, parse_note, parse_vkey, verify_with

log = logging.getLogger(__name__)
ProofFrom = Callable[[int], Awaitable[list[bytes]]]  # consistency proof from a size to the note's


class WitnessError(SignerError):
    """The witness did not cosign: the checkpoint waits a round (the message says why)."""


class WitnessClient:
    def __init__(
        self,
        url: str,
        vkey: str = "",
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout_s, transport=transport)
        self._vkey = parse_vkey(vkey) if vkey else None
        self._size: int | None = None  # the size the witness last cosigned, once known

    async def aclose(self) -> None:
        await self._http.aclose()

    async def vkey(self) -> Vkey:
        """The configured vkey; without one, the witness's own answer, kept from then on (audit
        only checks its answers with it: auditors are given the vkey out of band)."""
        if self._vkey is None:
            try:
                answer = await self._http.get("/vkey")
                answer.raise_for_status()
                self._vkey = parse_vkey(answer.text)
            except (httpx.HTTPError, NoteError) as exc:
                raise WitnessError(f"witness vkey unavailable: {exc}") from exc
        return self._vkey

    async def cosign(self, note: SignedNote, known_size: int, proof_from: ProofFrom) -> SignedNote:
        """The note with the witness's verified cosignature added. `known_size`: the size audit
        believes the witness last cosigned (its newest stored checkpoint)."""
        vkey = await self.vkey()
        old = self._size if self._size is not None else known_size
        for _ in range(2):
            proof = await proof_from(old)
            body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
            try:
                answer = await self._http.post(
                    "/add-checkpoint", content=(body + "\n" + note.render()).encode()
                )
            except httpx.HTTPError as exc:
                raise WitnessError(f"witness unreachable: {exc}") from exc
            if answer.status_code == 409 and answer.headers.get("content-type", "").startswith(
                "text/x.tlog.size"
            ):
                old = int(answer.text.strip())
                continue
            if answer.status_code != 200:
                raise WitnessError(f"witness refused ({answer.status_code}): {answer.text[:300]}")
            return self._checked(note, answer.text, vkey)
        raise WitnessError("the witness's last cosigned size keeps changing")

    def _checked(self, note: SignedNote, lines: str, vkey: Vkey) -> SignedNote:
        try:
            cosigned = parse_note(note.render() + lines)
        except NoteError as exc:
            raise WitnessError(f"the witness answered no signature lines: {exc}") from exc
        if verify_with(cosigned, vkey) is None:
            raise WitnessError("the witness's cosignature does not verify with its vkey")
        self._size = note.body().tree_size
        return cosigned
