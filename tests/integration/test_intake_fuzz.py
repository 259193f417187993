"""A schema-driven fuzz run (schemathesis) over intake's OpenAPI, against the real app on real
Postgres and Kafka with the real keymgmt vault: no 5xx, no unhandled error, on any endpoint.

Hypothesis drives the examples in a worker thread; each request goes to the app on the test's
event loop, where its database engine, Kafka clients and the vault live. Bounded in time by
a small number of examples per operation (INTAKE_FUZZ_EXAMPLES, default 8)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from schemathesis.checks import not_a_server_error

from services.keymgmt.settings import KeymgmtSettings
from tests.support.intake import Intake, started_intake

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("INTAKE_FUZZ_EXAMPLES", "8"))


@schemathesis.serializer("text/csv", "application/x-ndjson")
def text_body(context: Any, value: Any) -> bytes:
    """Bulk files are text: send what was generated as UTF-8."""
    return str(value).encode()


@pytest.fixture
async def intake(
    settings: KeymgmtSettings,
    keymgmt: tuple[Any, httpx.AsyncClient],
    unique: str,
) -> AsyncIterator[Intake]:
    async with started_intake(settings, keymgmt[1], unique) as started:
        yield started


def credentials(intake: Intake, path: str) -> dict[str, str]:
    """Each operation is fuzzed as the role it serves, so requests get past authentication
    into validation and the domain rules."""
    if path.startswith("/v1/admin"):
        return intake.admin
    if path.startswith(("/v1/stock", "/v1/planning")):
        return intake.operator
    return intake.issuer("bank-a")


async def test_fuzzing_the_openapi_finds_no_server_error(intake: Intake) -> None:
    schema = schemathesis.openapi.from_dict(intake.app.openapi())
    loop = asyncio.get_running_loop()
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 20, "every intake operation is in the document"
    failures: list[str] = []
    statuses: dict[int, int] = {}
    bulk_refusals: list[str] = []

    def send(case: Any) -> httpx.Response:
        kwargs = case.as_transport_kwargs(base_url="http://intake")
        headers = {**(kwargs.get("headers") or {}), **credentials(intake, case.path)}
        params = kwargs.get("params")
        if case.path == "/v1/orders/bulk" and params:
            params = {**params, "product_id": "debit"}  # past the product, into the lines
        request = intake.http.request(
            kwargs["method"],
            kwargs["url"],
            params=params,
            headers=headers,
            json=kwargs.get("json"),
            content=kwargs.get("data"),
        )
        return asyncio.run_coroutine_threadsafe(request, loop).result(timeout=60)

    def fuzz(operation: Any) -> None:
        @given(case=operation.as_strategy())
        @examples(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            response = send(case)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if case.path == "/v1/orders/bulk" and response.status_code == 422:
                bulk_refusals.append(response.text)
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except Exception as exc:  # collect every operation's failure, then report
                failures.append(f"{case.method} {case.path}: {exc}")
                raise

        try:
            run()
        except Exception:
            pass  # recorded above, with the shrunk example

    for operation in operations:
        await asyncio.to_thread(fuzz, operation)
    assert not failures, "\n".join(failures[:10])
    print(f"fuzz: {sum(statuses.values())} requests, by status {sorted(statuses.items())}")  # noqa: T201
    assert any(200 <= s < 300 for s in statuses), "some requests got past validation"
    assert bulk_refusals, "bulk files were generated and judged line by line"
