"""POST /v1/orders/bulk: an order as a CSV or NDJSON file of up to max_cards_per_order cards,
streamed and validated line by line, accepted whole or refused whole (see bulk.py)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from services.intake.bulk import (
    MEDIA_TYPES,
    BadHeader,
    BodyMac,
    BulkFormat,
    Spool,
    check_line,
    csv_header,
    numbered_lines,
)
from services.intake.deps import IntakeDeps, IntakeDepsDep
from services.intake.orders import (
    PanVault,
    Vaulted,
    check_stock,
    emit_cards_ordered,
    forgotten_unless_committed,
    record_acceptance,
    summary,
    vault_cards,
)
from services.intake.repository import IntakeRepository
from services.intake.schemas import FileTooLarge, LineError, OrderSummary, UnsupportedMedia
from services.intake.settings import IntakeSettings
from shared.auth import Principal, require
from shared.errors import Conflict, Invalid, NotFound
from shared.limits import body_limit
from shared.outbox import UnitOfWork
from shared.service import RuntimeDep

log = logging.getLogger(__name__)

CSV_EXAMPLE = (
    "pan,psn,expiry,cardholder_name,address_line1,postcode,city,country\n"
    "4111111111111111,00,2911,ADA LOVELACE,12 St James's Square,SW1Y 4JH,London,GB\n"
)
NDJSON_EXAMPLE = (
    '{"pan":"4111111111111111","psn":"00","expiry":"2911","cardholder_name":"ADA LOVELACE",'
    '"address":{"lines":["12 St James\'s Square"],"postcode":"SW1Y 4JH","city":"London",'
    '"country":"GB"}}\n'
)
BULK_BODY = {
    "required": True,
    "description": "One card per line. CSV: a header line naming the columns (pan, expiry,"
    " cardholder_name, address_line1, postcode, city, country; optional psn, address_line2-4),"
    " then one card per line; line numbers in the error report count the header as line 1."
    " NDJSON: one JSON card object per line, as in POST /v1/orders.",
    "content": {
        "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
        "application/x-ndjson": {"schema": {"type": "string"}, "example": NDJSON_EXAMPLE},
    },
}


class Refused(Invalid):
    """A bulk file with bad lines: every problem named with its line, nothing kept."""

    def __init__(self, errors: list[LineError], total: int) -> None:
        shown = len(errors)
        message = f"{total} problem(s); nothing was accepted"
        if total - shown > 0:
            message += f" (the first {shown} are listed)"
        super().__init__(
            {
                "message": message,
                "problems": total,
                "errors": [e.model_dump() for e in errors],
            }
        )
        self.errors, self.total = errors, total


router = APIRouter(tags=["orders"])
Issuer = Annotated[Principal, Depends(require("issuer"))]


@router.post(
    "/v1/orders/bulk",
    status_code=201,
    response_model=OrderSummary,
    openapi_extra={"requestBody": BULK_BODY},
    responses={
        200: {"description": "a replay of an earlier file with the same Idempotency-Key"},
        404: {"description": "unknown product"},
        409: {"description": "not enough blank stock, or the key was used for another file"},
        413: {"description": "the file is larger than the bureau accepts"},
        415: {"description": "neither text/csv nor application/x-ndjson"},
        422: {"description": "bad lines: every problem named with its line; nothing kept"},
        503: {"description": "the PAN vault is unavailable; nothing was written"},
    },
)
@body_limit(setting="bulk_max_bytes")
async def submit_bulk_order(
    request: Request,
    idempotency_key: Annotated[str, Header(min_length=8, max_length=128)],
    product_id: Annotated[str, Query(min_length=1, max_length=64)],
    external_ref: Annotated[str, Query(min_length=1, max_length=64)],
    who: Issuer,
    runtime: RuntimeDep,
    deps: IntakeDepsDep,
    priority: Annotated[int, Query(ge=0, le=9, description="9 is produced first")] = 0,
) -> Any:
    """Submit an order as a file: streamed, validated line by line, all of it accepted or none
    of it. The clear PANs go to the vault in chunks once every line is good."""
    settings = deps.settings
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = MEDIA_TYPES.get(media)
    if fmt is None:
        raise UnsupportedMedia("send text/csv or application/x-ndjson")
    issuer_id = str(who.issuer_id)
    mac = BodyMac(settings.idempotency_secret, issuer_id, f"{product_id}\n{external_ref}")
    body = mac.tee(request.stream(), settings.bulk_max_bytes)
    order: dict[str, Any] = {
        "issuer_id": issuer_id,
        "external_ref": external_ref,
        "idempotency_key": idempotency_key,
        "product_id": product_id,
        "status": "accepted",
        "priority": priority,
        "source": fmt,
    }
    # One transaction for the request, as one connection served it before: the checks, then the
    # file validated, vaulted and written. A refused file's transaction commits (the duplicate
    # check's rows are the request's own) and is answered after it.
    async with (
        forgotten_unless_committed(
            deps.vault, issuer_id, settings.bulk_spool_dir, runtime.unit_of_work
        ) as vaulted,
        runtime.unit_of_work() as uow,
    ):
        repo: IntakeRepository = uow.repo
        earlier = await repo.order_by_key(issuer_id, idempotency_key)
        if earlier is not None:
            await _drain(body)
            if earlier["request_mac"] != mac.hexdigest():
                raise Conflict("this Idempotency-Key was already used for another file")
            return JSONResponse(summary(earlier).model_dump(mode="json"), status_code=200)
        if await repo.product_kind(issuer_id, product_id) is None:
            raise NotFound(f"unknown product {product_id!r} for this issuer")
        spool = Spool(settings.bulk_spool_dir)
        try:
            refused = await _accept(uow, deps, order, mac, body, spool, vaulted)
        finally:
            spool.close()
    if refused is not None:
        raise refused
    deps.callbacks_queued()
    return summary(order)


async def _accept(
    uow: UnitOfWork[IntakeRepository],
    deps: IntakeDeps,
    order: dict[str, Any],
    mac: BodyMac,
    body: Any,
    spool: Spool,
    vaulted: Vaulted,
) -> Refused | None:
    """Validate the file, then vault and write it; `order` gets its ids, card count and the
    file's MAC (known once the whole body was read). Returns the refusal of a bad file."""
    repo, issuer_id = uow.repo, order["issuer_id"]
    await repo.open_duplicate_check()
    started = time.perf_counter()
    try:
        count = await _validate(deps.settings, repo, order["source"], body, spool)
    except Refused as refused:
        return refused
    except OverflowError as exc:
        raise FileTooLarge(str(exc)) from exc
    await check_stock(repo, issuer_id, order["product_id"], count)
    if await repo.order_by_key(issuer_id, order["idempotency_key"]) is not None:
        raise Conflict("a concurrent request with this key won")
    order_id = uuid.uuid4()
    order.update(
        order_id=order_id,
        request_mac=mac.hexdigest(),
        card_count=count,
        batch_id=uuid.uuid4(),
    )
    await repo.add_order(order, [])
    validated = time.perf_counter()
    await _vault_and_write(deps.vault, uow, order, spool, vaulted)
    log.info(
        "bulk order accepted",
        extra={
            "order_id": str(order_id),
            "cards": count,
            "validate_s": round(validated - started, 2),
            "vault_and_write_s": round(time.perf_counter() - validated, 2),
        },
    )
    return None


async def _drain(body: Any) -> None:
    async for _ in body:
        pass


async def _validate(
    settings: IntakeSettings, repo: IntakeRepository, fmt: BulkFormat, body: Any, spool: Spool
) -> int:
    """First pass: every line checked, good cards sealed into the spool chunk by chunk, keyed
    PAN digests into the duplicate check. Raises Refused with every problem found."""
    today = datetime.now(UTC).date()
    errors: list[LineError] = []
    total_errors = count = 0
    header: list[str] | None = None
    chunk: list[dict[str, Any]] = []
    digests: list[bytes] = []
    lines: list[int] = []

    def problem(found: list[LineError]) -> None:
        nonlocal total_errors
        total_errors += len(found)
        room = settings.bulk_max_reported_errors - len(errors)
        errors.extend(found[: max(room, 0)])

    async for line, raw in numbered_lines(body, settings.bulk_max_line_bytes):
        if raw is not None and not raw.strip():
            continue
        if fmt == "csv" and header is None:
            try:
                header = csv_header(raw or b"")
            except BadHeader as exc:
                problem([LineError(line=line, field="header", problem=str(exc))])
                await _drain(body)
                raise Refused(errors, total_errors) from exc
            continue
        card, found = check_line(line, fmt, header, raw, today)
        if found or card is None:
            problem(found)
            continue
        count += 1
        if count == settings.max_cards_per_order + 1:
            problem([LineError(line=line, field="cards", problem="more cards than allowed")])
        digests.append(spool.pan_digest(card))
        lines.append(line)
        if not total_errors:  # once the file is refused, nothing more is staged
            chunk.append({"line": line, **card.model_dump(mode="json")})
        if len(digests) >= settings.bulk_chunk:
            await asyncio.sleep(0)  # a long file must not starve the consumer's heartbeats
            await repo.add_seen(digests, lines)
            digests, lines = [], []
            if chunk:
                spool.write(chunk)
                chunk = []
    await repo.add_seen(digests, lines)
    if chunk and not total_errors:
        spool.write(chunk)
    for line, first in await repo.duplicate_lines(settings.bulk_max_reported_errors):
        problem([LineError(line=line, field="pan", problem=f"same PAN and PSN as line {first}")])
    if total_errors:
        errors.sort(key=lambda e: e.line)
        raise Refused(errors, total_errors)
    if count == 0:
        raise Refused([LineError(line=0, field="cards", problem="the file holds no card")], 1)
    return count


async def _vault_and_write(
    vault: PanVault,
    uow: UnitOfWork[IntakeRepository],
    order: dict[str, Any],
    spool: Spool,
    vaulted: Vaulted,
) -> None:
    """Second pass: each staged chunk to the vault, then its cards and card.ordered events.
    Each chunk's ids join `vaulted` first, so a failed file takes every chunk back out."""
    repo = uow.repo
    actor = f"issuer:{order['issuer_id']}"
    sequence = 0
    for chunk in spool.read():
        ids = [uuid.uuid4() for _ in chunk]
        await vaulted.pledge(uow, ids)
        stored = await vault_cards(
            vault,
            order["issuer_id"],
            [
                {"card_id": str(cid), **{k: v for k, v in card.items() if k != "line"}}
                for cid, card in zip(ids, chunk, strict=True)
            ],
        )
        cards = []
        for cid, card in zip(ids, chunk, strict=True):
            cards.append(
                {
                    "card_id": cid,
                    "order_id": order["order_id"],
                    "issuer_id": order["issuer_id"],
                    "batch_id": order["batch_id"],
                    "sequence": sequence,
                    "masked_pan": stored[cid].masked_pan,
                    "pan_token": stored[cid].pan_token,
                    "expiry": card["expiry"],
                }
            )
            sequence += 1
        await repo.add_cards(cards)
        await emit_cards_ordered(uow, order, cards, actor)
        await uow.flush()
        uow.forget_emitted()  # the rows are written; a file's events need not all stay in memory
    await repo.add_stock_movement(
        issuer_id=order["issuer_id"],
        product_id=order["product_id"],
        kind="issued",
        quantity=order["card_count"],
        batch_id=order["batch_id"],
        actor=actor,
    )
    await record_acceptance(uow, order, actor)
