"""HTTP control API of the card feeder (127.0.0.1 only): what a machine operator or a test does.

GET  /health                       liveness
GET  /readers                      every reader: card, counters, armed faults; the hopper
GET  /readers/{reader}             one reader ({reader} = PC/SC name, URL-encoded, or port)
POST /readers/{reader}/eject       card out; hopper readers get the next blank ({"refill"})
POST /readers/{reader}/insert      {"chip_serial": "..."}: put a known card in (QA reader)
POST /readers/{reader}/faults      arm faults for the next card entering the reader
GET  /cards/{chip_serial}          a card's lifecycle, ATC and DGIs (never its keys)
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from vcard.feeder import ArmedFaults, Feeder, FeederError


class EjectRequest(BaseModel):
    refill: bool | None = None  # default: refill in hopper mode, not in manual mode


class InsertRequest(BaseModel):
    chip_serial: str = Field(pattern=r"^[0-9A-Fa-f]{12}$")


class FaultRequest(BaseModel):
    remove_after_apdus: int | None = Field(default=None, ge=1)
    store_data_memory_failure_at_block: int | None = Field(default=None, ge=0, le=255)
    wrong_kmc: bool = False  # shortcut: a factory KMC other than the bureau's
    kmc_hex: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{32}$")
    protocol: Literal["T=0", "T=1"] | None = None
    scp: Literal["02", "03"] | None = None  # the next card's secure channel protocol


# A factory KMC that is not the bureau's: cards made with it carry keys nobody else knows.
WRONG_KMC_HEX = "0F1E2D3C4B5A69788796A5B4C3D2E1F0"


def create_app(feeder: Feeder) -> FastAPI:
    app = FastAPI(title="cardbureau virtual card feeder", version="1")

    @app.exception_handler(FeederError)
    async def feeder_error(_request: Request, exc: FeederError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "readers": len(feeder.slots)}

    @app.get("/readers")
    async def readers() -> dict[str, Any]:
        return feeder.snapshot()

    @app.get("/readers/{reader}")
    async def reader(reader: str) -> dict[str, Any]:
        return feeder.slot(reader).snapshot()

    @app.post("/readers/{reader}/eject")
    async def eject(reader: str, body: EjectRequest | None = None) -> dict[str, Any]:
        return await feeder.eject(reader, refill=None if body is None else body.refill)

    @app.post("/readers/{reader}/insert")
    async def insert(reader: str, body: InsertRequest) -> dict[str, Any]:
        return await feeder.insert(reader, body.chip_serial)

    @app.post("/readers/{reader}/faults")
    async def faults(reader: str, body: FaultRequest) -> dict[str, Any]:
        kmc_hex = body.kmc_hex or (WRONG_KMC_HEX if body.wrong_kmc else None)
        armed = ArmedFaults(
            remove_after_apdus=body.remove_after_apdus,
            store_data_memory_failure_at_block=body.store_data_memory_failure_at_block,
            kmc_hex=kmc_hex,
            protocol=body.protocol,
            scp=body.scp,
        )
        return feeder.arm(reader, armed)

    @app.get("/cards/{chip_serial}")
    async def card(chip_serial: str) -> dict[str, Any]:
        return feeder.card_info(chip_serial)

    return app
