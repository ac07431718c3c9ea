"""`GET /metrics`: Prometheus's text format, for a scraper holding the metrics token.

Off unless BASTION_METRICS_TOKEN is set (404 then, as for any unknown path); with it,
the scraper sends `Authorization: Bearer <token>` (compared in constant time) and any
other request is 401. In multiprocess mode (`bastion serve --workers N`) the answer
adds up every worker's samples (`bastion.core.metrics`). Not in the OpenAPI document."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from bastion.api.context import RequestContext
from bastion.api.state import AppState
from bastion.core import metrics
from bastion.core.crypto import constant_time_equals

_UNMATCHED = "unmatched"


# The labelled children, found once each (`labels()` costs more than the update). Keys
# are bounded: route templates (or "unmatched"), methods and statuses.
_counters: dict[tuple[str, str | None, int], Any] = {}
_timers: dict[tuple[str, str | None], Any] = {}


def observe(ctx: RequestContext, route: str | None, status: int, started: float) -> None:
    """One answered request: counted by method, route template and status, timed."""
    method = ctx.method
    counter = _counters.get((method, route, status))
    if counter is None:
        label = route or _UNMATCHED  # raw paths would make a series per id
        counter = _counters[(method, route, status)] = metrics.HTTP_REQUESTS.labels(
            method, label, str(status)
        )
    timer = _timers.get((method, route))
    if timer is None:
        timer = _timers[(method, route)] = metrics.HTTP_DURATION.labels(method, route or _UNMATCHED)
    counter.inc()
    timer.observe(time.perf_counter() - started)


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def install(state: AppState) -> APIRouter:
    token = state.settings.metrics_token
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    def scrape(authorization: Annotated[str | None, Header()] = None) -> Response:
        if token is None:
            raise HTTPException(404, "not found")
        expected = f"Bearer {token.get_secret_value()}".encode()
        if authorization is None or not constant_time_equals(authorization.encode(), expected):
            raise HTTPException(
                401, "metrics need the metrics token", headers={"www-authenticate": "Bearer"}
            )
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    return router
