"""The one way to wire a service: handler tables bound to deps, domain errors rendered in one
place, typed deps for endpoints (shared/bus.py, shared/errors.py, shared/service.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import uuid4

import httpx
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from shared.errors import REFUSAL_HEADER, Conflict, Unavailable, install_error_handlers
from shared.events import CardCancelled
from shared.handlers import Batch, BatchHandler, bind_handlers
from shared.service import deps_of


@dataclass(frozen=True)
class Deps:
    seen: list[str]


async def note_cancel(uow: Any, event: CardCancelled, deps: Deps) -> None:
    deps.seen.append(f"one:{event.card_id}")


async def note_cancels(uow: Any, events: Sequence[CardCancelled], deps: Deps) -> None:
    deps.seen.extend(f"batch:{e.card_id}" for e in events)


def cancelled() -> CardCancelled:
    return CardCancelled(
        issuer_id="bank",
        actor="t",
        card_id=uuid4(),
        batch_id=uuid4(),
        order_id=uuid4(),
        reason="test",
    )


async def test_bound_handlers_receive_the_deps_and_batches_stay_batches() -> None:
    deps = Deps(seen=[])
    table = bind_handlers({CardCancelled: [note_cancel, Batch(note_cancels)]}, deps)
    one, batch = table[CardCancelled]
    assert isinstance(batch, BatchHandler)
    assert batch.__name__ == "note_cancels"
    event = cancelled()
    await one(None, event)  # type: ignore[arg-type]
    await batch.fn(None, [event, event])  # type: ignore[arg-type]
    assert deps.seen == [f"one:{event.card_id}", *[f"batch:{event.card_id}"] * 2]


DepsDep = Annotated[Deps, Depends(deps_of(Deps))]


class CardCancelledTooLate(Conflict):
    refusal = "card-cancelled"


class Body(BaseModel):
    pan: str
    count: int


def error_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/refuse")
    async def refuse(body: Body) -> None:
        raise CardCancelledTooLate("card 1 was cancelled by its issuer")

    @app.get("/down")
    async def down() -> None:
        raise Unavailable("HSM unavailable")

    return app


async def test_domain_errors_render_status_refusal_and_retry_after() -> None:
    transport = httpx.ASGITransport(app=error_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        refused = await client.post("/refuse", json={"pan": "4761739001010119", "count": 1})
        down = await client.get("/down")
    assert refused.status_code == 409
    assert refused.headers[REFUSAL_HEADER] == "card-cancelled"
    assert refused.json() == {
        "detail": "card 1 was cancelled by its issuer",
        "refusal": "card-cancelled",
    }
    assert down.status_code == 503
    assert down.headers["Retry-After"] == "5"
    assert REFUSAL_HEADER not in down.headers


async def test_validation_errors_name_the_field_and_never_echo_the_value() -> None:
    transport = httpx.ASGITransport(app=error_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.post("/refuse", json={"pan": "4761739001010119", "count": "x"})
    assert answer.status_code == 422
    assert "4761739001010119" not in answer.text
    errors = answer.json()["detail"]["errors"]
    assert [e["location"] for e in errors] == ["body.count"]


async def test_deps_of_gives_the_typed_deps() -> None:
    app = FastAPI()

    class Runtime:
        deps: Any = Deps(seen=["x"])

    app.state.runtime = Runtime()

    @app.get("/seen")
    async def seen(deps: DepsDep) -> list[str]:
        return deps.seen

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/seen")).json() == ["x"]
