"""OpenTelemetry tracing (the `otel` extra): one server span per request, with the
route template, status and who asked, a child of the caller's `traceparent`, recorded
by the OpenTelemetry SDK's own in-memory exporter."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.api.app import create_app
from bastion.core import tracing
from tests.conftest import make_settings
from tests.factories import Factory

if os.environ.get("CI") != "true":
    pytest.importorskip("opentelemetry.sdk", reason="pip install -e '.[test]' (or 'bastion[otel]')")
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use_provider(provider)
    yield memory
    tracing.use_provider(None)


@pytest.fixture
def traced(data_dir: Path, database_url: str) -> Iterator[TestClient]:
    app = create_app(make_settings(data_dir, database_url, otel_traces=True))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_a_span_per_request_with_route_status_and_principal(
    exporter: InMemorySpanExporter, traced: TestClient, factory: Factory
) -> None:
    org = factory.org()
    exporter.clear()
    response = traced.get(
        f"/v1/orgs/{org.id}/users",
        headers={**org.headers, "traceparent": f"00-{TRACE_ID}-{PARENT}-01"},
    )
    assert response.status_code == 200
    traced.get("/v1/me", headers={"authorization": "Bearer bsk_nonsense_value"})
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["GET /v1/orgs/{org}/users", "GET /v1/me"]
    users, me = spans
    attrs: dict[str, Any] = dict(users.attributes or {})
    assert attrs["http.route"] == "/v1/orgs/{org}/users"
    assert attrs["http.response.status_code"] == 200
    assert attrs["bastion.org_id"] == org.id
    assert attrs["bastion.request_id"] == response.headers["x-request-id"]
    assert format(users.context.trace_id, "032x") == TRACE_ID  # the caller's trace
    assert users.parent is not None
    assert format(users.parent.span_id, "016x") == PARENT
    assert users.end_time is not None
    assert users.start_time is not None
    assert users.end_time >= users.start_time
    assert dict(me.attributes or {})["http.response.status_code"] == 401
    assert "bastion.principal_id" not in dict(me.attributes or {})
    assert "bsk_nonsense_value" not in str([dict(s.attributes or {}) for s in spans])


def test_no_spans_when_tracing_is_off(exporter: InMemorySpanExporter, client: TestClient) -> None:
    client.get("/healthz")
    assert exporter.get_finished_spans() == ()
