"""PIN mailers: printed by keymgmt itself on the separate PIN printer, the only place the clear
PIN exists outside the HSM (DOMAIN.md: "the PIN mailer is printed from the encrypted block").

POST /v1/pin-mailers (the fulfillment service): keymgmt decrypts the card's PIN block with the
issuer's PIN key in the HSM, lays the mailer out in memory, sends it to the PIN printer over
IPP and follows the job; fulfillment gets back only the mailer id and the job's status. The
PIN is never stored, logged, returned or put in an event.

SOFTHSM SHORTCUT (as in pin.py). A payment HSM prints PIN mailers from the encrypted block
inside its boundary (a "print PIN mailer" command driving an attached printer). SoftHSM has no
such command, so the PIN block is decrypted by the HSM and the PIN field is read here, in a
bytearray zeroed after use. Pillow needs the digits as a str to draw them, and the rendered
image lives until the request ends: both stay in this process and reach only the printer. The
issuer's PIN key must allow decryption (ceremony usage `encrypt`, not `encrypt-only`).

A mailer's job is recorded before it is sent; a job that may have reached the printer is looked
up there by its job name before anything is sent again, so a PIN is never printed twice.
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Request
from PIL import Image, ImageDraw, ImageFont
from pkcs11 import Mechanism
from pkcs11.exceptions import PKCS11Error
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.keymgmt.hsm import Hsm
from services.keymgmt.p11 import decrypt
from services.keymgmt.pin import MAX_PIN, MIN_PIN, iso4_pan_field
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.repository_security import SecurityRepository
from services.keymgmt.service import OpenedCard, open_card
from shared.auth import Principal, require
from shared.ipp import IppClient, IppError, IppRejected, JobState
from shared.settings import BureauSettings

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("5b0f1f0e-8f0b-4c55-a4e3-2f1a7c6d9e42")
MAILER_SIZE = (1240, 874)  # A5 landscape at 150 dpi
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


class PinMailerSettings(BureauSettings):
    pin_printer_uri: str = Field(
        default="ipp://localhost:8632/ipp/print",
        description="BUREAU_PIN_PRINTER_URI: the PIN-mailer printer (deploy/local/printers.sh)",
    )
    pin_printer_timeout_s: float = Field(default=10.0, gt=0)
    pin_mailer_wait_s: float = Field(default=10.0, gt=0, description="follow a job this long")


class PinMailerError(Exception):
    """The PIN cannot be revealed for a mailer (the message names why, never a value)."""


# -- HSM worker functions -------------------------------------------------------------------
def _digits_from_field(field: bytes, control: int, fill: int) -> bytearray:
    """The PIN digits of an ISO 9564-1 PIN field: control nibble, length, digits, fill."""
    nibbles = bytearray()
    for b in field:
        nibbles += bytes((b >> 4, b & 0xF))
    try:
        length = nibbles[1]
        if nibbles[0] != control or not MIN_PIN <= length <= MAX_PIN:
            raise PinMailerError("the decrypted PIN block is not a PIN field of its format")
        pin = nibbles[2 : 2 + length]
        if any(d > 9 for d in pin) or any(d != fill for d in nibbles[2 + length : 16]):
            raise PinMailerError("the decrypted PIN block is malformed")
        return bytearray(pin)
    finally:
        nibbles[:] = bytes(len(nibbles))


def pin_from_iso0(hsm: Hsm, key_label: str, block: bytes, pan: str) -> bytearray:
    """ISO 9564-1 format 0: 3DES-ECB decrypt, xor the PAN field, read the PIN field."""
    clear = bytearray(decrypt(hsm.key(key_label), block, Mechanism.DES3_ECB))
    try:
        pan_field = bytes.fromhex("0000" + pan[:-1][-12:].rjust(12, "0"))
        for i, b in enumerate(pan_field):
            clear[i] ^= b
        return _digits_from_field(bytes(clear), 0, 0xF)
    finally:
        clear[:] = bytes(len(clear))


def pin_from_iso4(hsm: Hsm, key_label: str, block: bytes, pan: str) -> bytearray:
    """ISO 9564-1 format 4: block = AES(K, AES(K, PIN field) xor PAN field), undone."""
    key = hsm.key(key_label)
    middle = bytearray(decrypt(key, block, Mechanism.AES_ECB))
    try:
        for i, b in enumerate(iso4_pan_field(pan)):
            middle[i] ^= b
        field = bytearray(decrypt(key, bytes(middle), Mechanism.AES_ECB))
        try:
            return _digits_from_field(bytes(field[:8]), 4, 0xA)
        finally:
            field[:] = bytes(len(field))
    finally:
        middle[:] = bytes(len(middle))


def reveal_pin(
    hsm: Hsm, vaulted: Mapping[str, Any], pin_row: Mapping[str, Any]
) -> tuple[bytearray, OpenedCard]:
    """The card's PIN digits (zero them after use) and its opened vault record."""
    card = open_card(hsm, vaulted)
    try:
        if pin_row.get("iso0_block") is not None:
            label, block = pin_row["iso0_key_label"], bytes(pin_row["iso0_block"])
            return pin_from_iso0(hsm, label, block, card.pan), card
        label, block = pin_row["iso4_key_label"], bytes(pin_row["iso4_block"])
        return pin_from_iso4(hsm, label, block, card.pan), card
    except (PKCS11Error, AttributeError) as exc:
        # python-pkcs11 gives a key without CKA_DECRYPT no decrypt() at all: AttributeError.
        raise PinMailerError(
            f"the PIN key {label} cannot decrypt ({exc.__class__.__name__}): a PIN printed"
            " from its block needs a key imported with usage 'encrypt'"
        ) from exc


# -- the mailer -----------------------------------------------------------------------------
@dataclass(frozen=True)
class MailerText:
    issuer_name: str
    cardholder_name: str
    address_lines: tuple[str, ...]
    card_last4: str


def _font(path: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(path, size)
    except OSError:
        return ImageFont.load_default(size)


def render_pin_mailer(mailer: MailerText, pin: bytearray) -> bytes:
    """The PIN mailer as a PNG: address for the envelope window, the PIN in a sealed panel."""
    image = Image.new("RGB", MAILER_SIZE, "white")
    draw = ImageDraw.Draw(image)
    draw.text((70, 50), mailer.issuer_name, font=_font(FONT_BOLD, 40), fill="#1f3a5f")
    y = 160
    for line in (mailer.cardholder_name, *mailer.address_lines):
        draw.text((70, y), line, font=_font(FONT, 28), fill="black")
        y += 38
    body = _font(FONT, 24)
    draw.text(
        (70, 470), f"The PIN of your card ending {mailer.card_last4}:", font=body, fill="black"
    )
    draw.rectangle((70, 520, 620, 680), outline="#1f3a5f", width=4, fill="#e8eef5")
    digits = "  ".join(str(d) for d in pin)  # an immutable copy Pillow needs: see the module doc
    draw.text((110, 555), digits, font=_font(FONT_BOLD, 72), fill="black")
    del digits
    draw.text((70, 720), "Learn your PIN, then destroy this letter.", font=body, fill="black")
    draw.text((70, 760), "Your card travels separately.", font=body, fill="black")
    out = io.BytesIO()
    image.save(out, format="PNG", dpi=(150, 150))
    return out.getvalue()


# -- the API --------------------------------------------------------------------------------
router = APIRouter(prefix="/v1", tags=["pin mailers"])
Service = Annotated[Principal, Depends(require("service"))]


class PinMailerRequest(BaseModel):
    card_id: UUID
    batch_id: UUID


def mailer_id_for(card_id: UUID) -> UUID:
    return uuid.uuid5(_NAMESPACE, f"pin-mailer/{card_id}")


def _fulfillment_only(who: Principal) -> None:
    if who.name != "fulfillment":
        raise HTTPException(403, f"service {who.name!r} may not print PIN mailers")


def _printer(request: Request) -> tuple[IppClient, PinMailerSettings]:
    runtime = request.app.state.runtime
    found = runtime.state.get("pin_printer")
    if found is None:
        settings = PinMailerSettings()
        client = IppClient(
            settings.pin_printer_uri, user="keymgmt", timeout_s=settings.pin_printer_timeout_s
        )
        runtime.on_stop(client.aclose)
        found = runtime.state["pin_printer"] = (client, settings)
    return found  # type: ignore[no-any-return]


_COLUMNS = "mailer_id, card_id, batch_id, status, ipp_job_id, attempts, last_problem"


async def _mailer(conn: AsyncConnection, card_id: UUID) -> dict[str, Any] | None:
    row = await conn.execute(
        text(f"SELECT {_COLUMNS}, job_name FROM pin_mailers WHERE card_id = :c"), {"c": card_id}
    )
    found = row.mappings().first()
    return None if found is None else dict(found)


async def _set(conn: AsyncConnection, card_id: UUID, **changes: Any) -> None:
    sets = ", ".join(f"{name} = :{name}" for name in changes)
    await conn.execute(
        text(f"UPDATE pin_mailers SET {sets}, updated_at = now() WHERE card_id = :card_id"),
        changes | {"card_id": card_id},
    )
    await conn.commit()


def _view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "mailer_id": str(row["mailer_id"]),
        "card_id": str(row["card_id"]),
        "status": row["status"],
        "ipp_job_id": row["ipp_job_id"],
        "attempts": row["attempts"],
        "last_problem": row["last_problem"],
    }


@router.get("/pin-mailers/{card_id}", summary="The state of a card's PIN mailer (no PIN)")
async def get_pin_mailer(card_id: UUID, who: Service, request: Request) -> Any:
    _fulfillment_only(who)
    async with request.app.state.runtime.engine.connect() as conn:
        row = await _mailer(conn, card_id)
    if row is None:
        raise HTTPException(404, "no PIN mailer for this card")
    return _view(row)


@router.post("/pin-mailers", summary="Print the card's PIN mailer on the PIN printer (once)")
async def print_pin_mailer(body: PinMailerRequest, who: Service, request: Request) -> Any:
    """Idempotent per card: answers the mailer's state (`printed`, `spoiled`, or `submitted`
    when the printer has not finished within the wait; ask again)."""
    _fulfillment_only(who)
    runtime = request.app.state.runtime
    lock_key = {"k": f"pin-mailer/{body.card_id}"}
    async with runtime.engine.connect() as conn:
        # A session lock: one request per card at a time across keymgmt replicas.
        await conn.execute(text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"), lock_key)
        await conn.commit()
        try:
            return await _print(conn, body, who, request)
        finally:
            await conn.rollback()
            await conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), lock_key)
            await conn.commit()


async def _print(
    conn: AsyncConnection, body: PinMailerRequest, who: Principal, request: Request
) -> Any:
    printer, settings = _printer(request)
    row = await _mailer(conn, body.card_id)
    if row is None:
        pin_row = await SecurityRepository(conn).card_pin(body.card_id)
        if pin_row is None:
            raise HTTPException(404, "no PIN for this card")
        mailer_id = mailer_id_for(body.card_id)
        await conn.execute(
            text(
                "INSERT INTO pin_mailers (mailer_id, card_id, batch_id, issuer_id, job_name,"
                " status, requested_by) VALUES (:m, :c, :b, :i, :j, 'queued', :by)"
            ),
            {
                "m": mailer_id,
                "c": body.card_id,
                "b": body.batch_id,
                "i": pin_row["issuer_id"],
                "j": f"pin-{mailer_id}",
                "by": f"service:{who.name}",
            },
        )
        await conn.commit()
        row = await _mailer(conn, body.card_id)
        assert row is not None
    if row["status"] == "submitting":
        try:
            found = await printer.find_job(row["job_name"])
        except IppError as exc:
            raise HTTPException(503, f"PIN printer unavailable: {exc}") from exc
        if found is not None:
            await _set(conn, body.card_id, status="submitted", ipp_job_id=found.job_id)
            row = {**row, "status": "submitted", "ipp_job_id": found.job_id}
    if row["status"] in ("queued", "submitting"):
        row = await _submit(conn, row, printer, request)
    if row["status"] == "submitted":
        row = await _follow(conn, row, printer, settings.pin_mailer_wait_s)
    return _view(row)


async def _submit(
    conn: AsyncConnection, row: dict[str, Any], printer: IppClient, request: Request
) -> dict[str, Any]:
    card_id = row["card_id"]
    vaulted = await KeymgmtRepository(conn).vault_card(card_id)
    pin_row = await SecurityRepository(conn).card_pin(card_id)
    if vaulted is None or pin_row is None:
        raise HTTPException(404, "the card is not in the vault")
    await KeymgmtRepository(conn).record_access([(card_id, "service:fulfillment", "pin-mailer")])
    # Durable BEFORE the request: from here on, a retry looks the job up first.
    await _set(conn, card_id, status="submitting", attempts=row["attempts"] + 1)
    try:
        pin, card = await request.app.state.runtime.gate.get().call(reveal_pin, vaulted, pin_row)
    except PinMailerError as exc:
        await _set(conn, card_id, status="queued", last_problem=str(exc)[:500])
        raise HTTPException(409, str(exc)) from exc
    address = card.address
    mailer = MailerText(
        issuer_name=str(pin_row["issuer_id"]),
        cardholder_name=card.cardholder_name,
        address_lines=(
            *address.get("lines", []),
            f"{address.get('postcode', '')} {address.get('city', '')}".strip(),
            address.get("country", ""),
        ),
        card_last4=card.pan[-4:],
    )
    try:
        document = await asyncio.to_thread(render_pin_mailer, mailer, pin)
    finally:
        pin[:] = bytes(len(pin))
    try:
        status = await printer.print_job(
            document, job_name=row["job_name"], document_format="image/png"
        )
    except IppRejected as exc:
        await _set(conn, card_id, status="queued", last_problem=str(exc)[:500])
        raise HTTPException(503, f"the PIN printer rejected the mailer: {exc}") from exc
    except IppError as exc:  # maybe printed: the next request looks it up first
        await _set(conn, card_id, last_problem=str(exc)[:500])
        raise HTTPException(503, f"PIN printer unavailable: {exc}") from exc
    finally:
        del document
    await _set(conn, card_id, status="submitted", ipp_job_id=status.job_id, last_problem=None)
    row = row | {"last_problem": None}
    log.info("PIN mailer sent to the PIN printer", extra={"card_id": str(card_id)})
    attempts = row["attempts"] + 1
    return row | {"status": "submitted", "ipp_job_id": status.job_id, "attempts": attempts}


async def _follow(
    conn: AsyncConnection, row: dict[str, Any], printer: IppClient, wait_s: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            job = await printer.job(row["ipp_job_id"])
        except IppRejected as exc:  # the printer forgot the job: its outcome is unknown
            lost = f"the PIN printer has no record of job {row['ipp_job_id']}: {exc}"
            await _set(conn, row["card_id"], status="spoiled", last_problem=lost[:500])
            return {**row, "status": "spoiled", "last_problem": lost}
        except IppError as exc:
            raise HTTPException(503, f"PIN printer unavailable: {exc}") from exc
        if job.state.final:
            status = "printed" if job.state is JobState.COMPLETED else "spoiled"
            problem: str | None = None
            if status != "printed":
                problem = ", ".join(job.reasons) or job.state.name
            await _set(conn, row["card_id"], status=status, last_problem=problem)
            return {**row, "status": status, "last_problem": problem}
        if loop.time() >= deadline:
            return row
        await asyncio.sleep(0.1)
