"""The witness's HTTP interface: POST /add-checkpoint (c2sp.org/tlog-witness), its vkey, the
latest checkpoint it cosigned per origin (for monitors), and /ready."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse

from services.audit.witness.core import Witness, WitnessRefusal
from services.audit.witness.settings import WitnessSettings
from services.audit.witness.store import WitnessStore


def build_witness(settings: WitnessSettings) -> Witness:
    store = WitnessStore(settings.dir)
    return Witness(settings.name, store.key(), settings.logs(), store)


def build_app(witness: Witness) -> FastAPI:
    app = FastAPI(title="cardbureau witness", docs_url=None, redoc_url=None)

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        body = await request.body()
        try:
            signature = await witness.add_checkpoint(body)
        except WitnessRefusal as exc:
            if exc.size is not None:
                return Response(f"{exc.size}\n", 409, media_type="text/x.tlog.size")
            return PlainTextResponse(f"{exc}\n", exc.status)
        return PlainTextResponse(signature.line())

    @app.get("/vkey")
    async def vkey() -> Response:
        return PlainTextResponse(witness.vkey.render() + "\n")

    @app.get("/latest/{origin:path}")
    async def latest(origin: str) -> Response:
        note = witness.latest(origin)
        if note is None:
            return PlainTextResponse("nothing cosigned for this origin\n", 404)
        return PlainTextResponse(note)

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready", "vkey": witness.vkey.render()}

    return app
