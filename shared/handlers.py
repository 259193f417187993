"""A service's handler table: the handler kinds the consumer applies (one event, or a run of
events of one type at once), the poison verdict, and the binding of a module-level HANDLERS table
to the service's deps (shared/bus.py applies the bound table to what it consumes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from shared.events import Event
from shared.outbox import UnitOfWork

Handler = Callable[[UnitOfWork[Any], Any], Awaitable[None]]
HandlerTable = Mapping[type[Event], Sequence[Handler]]
BatchFunction = Callable[[UnitOfWork[Any], Sequence[Any]], Awaitable[None]]
DepsT = TypeVar("DepsT")


class PoisonEvent(Exception):
    """A handler's verdict that this event can never be processed; it goes to the DLQ."""


class BatchHandler:
    """A handler that takes several events of one type at once: ``fn(uow, events)``.

    It sits in a HANDLERS table like any handler. On the consumer's batch path, each run of
    consecutive fresh events of a type whose handlers are all BatchHandlers is given to each
    of them in ONE call (so a handler can read, compute and write for the whole run with one
    statement each); everywhere else (the record-by-record replay, direct calls) it is called
    with a one-event list. The run is inside the batch's transaction, after the inbox dedup:
    it never holds an event seen before or the same event twice. A raised exception rolls the
    whole batch back and the consumer replays it record by record, where retries and
    dead-lettering decide each event on its own, so ``fn`` may raise PoisonEvent for a run
    that holds one bad event.
    """

    def __init__(self, fn: BatchFunction) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(self).__name__)
        self.__doc__ = fn.__doc__

    async def __call__(self, uow: UnitOfWork[Any], event: Any) -> None:
        await self.fn(uow, [event])

    def __repr__(self) -> str:
        return f"BatchHandler({self.__name__})"


# A service's HANDLERS table is module-level: `{CardQaPassed: [pack_card]}`, each handler a
# module function `async def pack_card(uow, event, deps)`. bootstrap() binds the table to the
# service's deps once (cosmicpython's bootstrap injecting dependencies into handlers).
DepsHandler = Callable[[UnitOfWork[Any], Any, DepsT], Awaitable[None]]
DepsBatchFunction = Callable[[UnitOfWork[Any], Sequence[Any], DepsT], Awaitable[None]]


class Batch(Generic[DepsT]):
    """Marks a module-level batch function `fn(uow, events, deps)` in a HANDLERS table; bound,
    it becomes a BatchHandler."""

    def __init__(self, fn: DepsBatchFunction[DepsT]) -> None:
        self.fn = fn


HandlerSpec = Mapping[type[Event], Sequence[DepsHandler[DepsT] | Batch[DepsT]]]


def bind_handlers(spec: HandlerSpec[DepsT], deps: DepsT) -> dict[type[Event], list[Handler]]:
    """The consumer's table: each module-level handler of `spec` with `deps` bound to it."""
    table: dict[type[Event], list[Handler]] = {}
    for event_type, handlers in spec.items():
        table[event_type] = [_bind(handler, deps) for handler in handlers]
    return table


def _bind(handler: DepsHandler[DepsT] | Batch[DepsT], deps: DepsT) -> Handler:
    if isinstance(handler, Batch):
        fn = handler.fn

        async def run_batch(uow: UnitOfWork[Any], events: Sequence[Any]) -> None:
            await fn(uow, events, deps)

        run_batch.__name__ = getattr(fn, "__name__", "batch")
        run_batch.__doc__ = fn.__doc__
        return BatchHandler(run_batch)
    one = handler

    async def run_one(uow: UnitOfWork[Any], event: Any) -> None:
        await one(uow, event, deps)

    run_one.__name__ = getattr(one, "__name__", "handler")
    run_one.__doc__ = one.__doc__
    return run_one
