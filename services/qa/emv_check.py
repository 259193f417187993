"""QA of a payment chip: a whole terminal transaction with QA's EMV kernel (services/qa/emv/).

Contact: PSE, SELECT, GPO, every AFL record, SDA, DDA, GENERATE AC asking an ARQC with CDA.
keymgmt compares the records with what it prepared (POST /v1/qa/readback) and verifies the ARQC
in the HSM (POST /v1/arqc/verify: CDOL1 data as sent || AIP || ATC); the kernel then completes
the transaction (second GENERATE AC, approved). Contactless: PPSE, GPO with a TTQ, the records,
a CDA-signed ARQC that keymgmt verifies too. The PIN is never known to QA: it checks that the
PIN try counter is at its limit (GET DATA 9F17) instead of presenting one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol
from uuid import UUID

from pydantic import ValidationError

from services.qa.emv.apdu import PPSE, KernelFailure, get_data, select
from services.qa.emv.kernel import CaKeySource, Cryptogram, Kernel, Outcome, TerminalConfig
from services.qa.emv.oda import PublicKey
from services.qa.service import QaFailure
from shared.keymgmt.contract import ArqcRequest, CaPublicKey, ReadbackRequest, Verdict
from shared.keymgmt.errors import KeymgmtBadResponse, KeymgmtRefused, field_problems
from shared.pan import redact_pans

CHECK_EMV_CONTACT: Final = "emv-contact"
CHECK_ODA: Final = "oda"
CHECK_CHIP_READBACK: Final = "chip-readback"
CHECK_ARQC: Final = "arqc"
CHECK_EMV_CONTACTLESS: Final = "emv-contactless"
SW_FILE_NOT_FOUND: Final = 0x6A82
Transmit = Callable[[bytes], Awaitable[tuple[bytes, int]]]


class PaymentOracle(Protocol):
    """keymgmt's checks of a payment chip (ChipOracle in checker.py)."""

    async def readback(self, request: ReadbackRequest) -> Verdict: ...

    async def verify_arqc(self, request: ArqcRequest) -> Verdict: ...

    async def ca_public_key(self, rid: str, ca_index: str) -> CaPublicKey: ...


@dataclass(frozen=True)
class QaPlace:
    """Which card, on which chip, at which QA station: keymgmt answers a read-back only for a
    card personalized on that chip, at the station that began its QA (issue 16)."""

    card_id: UUID
    chip_serial: str
    qa_station: str


CA_KEY_KEEP_S: Final = 60.0


def ca_key_source(
    oracle: PaymentOracle,
    keep_s: float = CA_KEY_KEEP_S,
    clock: Callable[[], float] = time.monotonic,
) -> CaKeySource:
    """The kernel's CA public keys: the ones keymgmt trusts (GET /v1/ca-keys/{rid}/{index}).
    A key keymgmt gave is kept `keep_s` seconds (every card names its CA key on both
    interfaces: asking each time was two of keymgmt's nine calls a card); a key keymgmt adds
    is used at once (an unknown key is never kept), one it replaces or withdraws within
    `keep_s`. Only keys keymgmt holds are kept, so the card cannot grow the cache. A CA
    keymgmt does not know (404) is None: the kernel fails ODA naming the RID and index."""
    kept: dict[tuple[bytes, int], tuple[float, PublicKey]] = {}

    async def fetch(rid: bytes, index: int) -> PublicKey | None:
        held = kept.get((rid, index))
        if held is not None and clock() < held[0]:
            return held[1]
        try:
            key = await oracle.ca_public_key(rid.hex().upper(), f"{index:02X}")
        except KeymgmtRefused as exc:
            if not exc.not_found:
                raise  # QA's credentials refused: the machine's fault, never the card's
            kept.pop((rid, index), None)
            return None
        public = PublicKey(bytes.fromhex(key.modulus), bytes.fromhex(key.exponent))
        kept[(rid, index)] = (clock() + keep_s, public)
        return public

    return fetch


def readback_problems(verdict: Verdict) -> list[str]:
    """keymgmt's problems with the records, as a QA failure may hold them (no PAN)."""
    problems = verdict.found("keymgmt says the records do not match")
    return [redact_pans(p)[:200] for p in problems][:10]


def readback_records(out: Outcome) -> dict[str, str]:
    """The AFL records by their DGI number SSRR (4 hex digits), as data preparation wrote them."""
    records = out.data.records.items()
    return {f"{sfi:02X}{rec:02X}": raw.hex().upper() for (sfi, rec), raw in records}


async def _readback(oracle: PaymentOracle, at: QaPlace, out: Outcome) -> None:
    records = readback_records(out)
    try:
        request = ReadbackRequest(
            card_id=at.card_id,
            chip_serial=at.chip_serial,
            qa_station=at.qa_station,
            records=records,
        )
        verdict = await oracle.readback(request)
    except ValidationError as exc:  # more or longer records than any profile keymgmt prepares
        problem = field_problems(exc)
        msg = f"{CHECK_CHIP_READBACK}: the chip's records break keymgmt's contract: {problem}"
        raise QaFailure(msg) from exc
    except (KeymgmtRefused, KeymgmtBadResponse) as exc:
        raise QaFailure(f"{CHECK_CHIP_READBACK}: {exc}") from exc
    finally:
        records.clear()  # cardholder data: held no longer than the comparison
    problems = readback_problems(verdict)
    if problems:
        raise QaFailure(f"{CHECK_CHIP_READBACK}: {'; '.join(problems)}")


async def _verify(oracle: PaymentOracle, card_id: UUID, cryptogram: Cryptogram, what: str) -> None:
    try:
        request = ArqcRequest(
            card_id=card_id,
            cdol1=cryptogram.cdol_data.hex(),
            atc=cryptogram.atc.hex(),
            arqc=cryptogram.ac.hex(),
        )
    except ValidationError as exc:
        problem = field_problems(exc)
        raise QaFailure(
            f"{CHECK_ARQC}: the {what} answer breaks keymgmt's contract: {problem}"
        ) from exc
    try:
        ok = (await oracle.verify_arqc(request)).ok
    except (KeymgmtRefused, KeymgmtBadResponse) as exc:
        raise QaFailure(f"{CHECK_ARQC}: {exc}") from exc
    if not ok:
        atc = cryptogram.atc.hex().upper()
        raise QaFailure(f"{CHECK_ARQC}: the chip's {what} ARQC (ATC {atc}) does not verify")


async def emv_chip_checks(
    transmit: Transmit, at: QaPlace, oracle: PaymentOracle, config: TerminalConfig
) -> list[str]:
    """Both interfaces' transactions; QaFailure names the step and the reason."""
    kernel = Kernel(transmit, config)
    try:
        out = await kernel.contact(pin=None, second=False)
    except KernelFailure as exc:
        raise QaFailure(f"{CHECK_EMV_CONTACT}: {exc}") from exc
    card_id = at.card_id
    assert out.first is not None
    # keymgmt's two checks of the contact transaction at once (one round trip less a card at
    # the floor's slowest stage); a failed read-back is named before a failed ARQC, as in turn.
    results = await asyncio.gather(
        _readback(oracle, at, out),
        _verify(oracle, card_id, out.first, "contact"),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    try:
        await kernel.complete(out, approved=True)
        tries, sw = await transmit(get_data(0x9F17))
        if sw != 0x9000 or tries[3:4] in (b"", b"\x00"):
            raise KernelFailure("cvm", f"the PIN try counter is blocked or absent ({sw:04X})")
    except KernelFailure as exc:
        raise QaFailure(f"{CHECK_EMV_CONTACT}: {exc}") from exc
    checks = [CHECK_EMV_CONTACT, CHECK_ODA, CHECK_CHIP_READBACK, CHECK_ARQC]
    _fci, sw = await transmit(select(PPSE))
    if sw == SW_FILE_NOT_FOUND:
        return checks  # a contact-only product: no PPSE on the chip
    try:
        tap = await Kernel(transmit, config).contactless()
    except KernelFailure as exc:
        raise QaFailure(f"{CHECK_EMV_CONTACTLESS}: {exc}") from exc
    assert tap.first is not None
    await _verify(oracle, card_id, tap.first, "contactless")
    return [*checks, CHECK_EMV_CONTACTLESS]
