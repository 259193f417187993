"""Settings shared by the property-based parser tests (issue 16): every example has a deadline,
so a parser that loops or goes quadratic fails its test instead of hanging the run, and the
number of examples is bounded so the unit tier stays quick on a shared machine."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, settings

BOUNDED = settings(
    deadline=timedelta(milliseconds=500),
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
