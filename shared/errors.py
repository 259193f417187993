"""Domain errors as status-coded classes, rendered to HTTP in one place (create_app).

Domain code raises what went wrong in the bureau's words (`CardNotInVault`, `KeyNotActive`);
the class says which HTTP status it means and, where a caller must tell refusals apart, which
refusal code travels in the `X-Bureau-Refusal` header. Endpoints never build HTTPExceptions for
domain outcomes, and every service renders them the same way. Request validation errors are
rendered without the input values: bodies hold PANs and names (PCI DSS 3.4).
"""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from shared.outage import DATABASE_DOWN, KAFKA_DOWN, dependency_of, report_failure

REFUSAL_HEADER = "X-Bureau-Refusal"


class DomainError(Exception):
    """A refusal the caller can act on. Subclasses set the status and, optionally, a refusal
    code (a stable kebab-case word that callers compare, never the message)."""

    status_code: ClassVar[int] = 400
    refusal: ClassVar[str | None] = None
    retry_after_s: ClassVar[int | None] = None

    def __init__(self, detail: str | list[str] | dict[str, Any]) -> None:
        # A message, or what callers need itemised (the rules a request broke, bad lines).
        super().__init__(detail)
        self.detail = detail

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.refusal is not None:
            headers[REFUSAL_HEADER] = self.refusal
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


class Invalid(DomainError):
    status_code = 422


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class Unavailable(DomainError):
    """A dependency (HSM, database, printer, another service) is down: retry later."""

    status_code = 503
    retry_after_s = 5


def validation_problems(exc: RequestValidationError) -> list[dict[str, str]]:
    """Where each problem is and what it is, never the offending value."""
    return [
        {"location": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
        for err in exc.errors()
    ]


async def render_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    content: dict[str, Any] = {"detail": exc.detail}
    if exc.refusal is not None:
        content["refusal"] = exc.refusal
    return JSONResponse(status_code=exc.status_code, content=content, headers=exc.headers())


async def render_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        status_code=422,
        content={"detail": {"message": "invalid request", "errors": validation_problems(exc)}},
    )


async def render_outage(request: Request, exc: Exception) -> JSONResponse:
    """The database or Kafka away is an outage, not a fault of the request: 503 with
    Retry-After, and the outage is logged once (shared.outage), not once per request."""
    dependency = dependency_of(exc)
    if dependency is None:
        raise exc  # a DBAPIError that is no outage (a constraint): the server's fault, 500
    report_failure(exc)
    return JSONResponse(
        status_code=Unavailable.status_code,
        content={"detail": f"{dependency} unavailable; retry later", "refusal": "unavailable"},
        headers={"Retry-After": str(Unavailable.retry_after_s)},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, render_domain_error)
    app.add_exception_handler(RequestValidationError, render_validation_error)
    for outage in (*DATABASE_DOWN, *KAFKA_DOWN, sa_exc.DBAPIError, OSError):
        app.add_exception_handler(outage, render_outage)
