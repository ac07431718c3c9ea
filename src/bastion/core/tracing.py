"""OpenTelemetry tracing (the `otel` extra): one server span per HTTP request.

Off unless `BASTION_OTEL_TRACES=true`. Then each request is a span `METHOD /route
template` of kind SERVER with `http.request.method`, `http.route`,
`http.response.status_code`, `bastion.request_id`, `bastion.principal_id` and
`bastion.org_id` (never a body, header value or secret), a child of the caller's W3C
`traceparent` when it sent one. Spans go to the OTLP exporter configured by the
standard `OTEL_EXPORTER_OTLP_*` variables, or to the provider a host application (or a
test) installed with `use_provider`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bastion.core.config import ConfigError

_provider: Any = None
INSTALL = "pip install 'bastion[otel]'"


def use_provider(provider: Any) -> None:
    """Send spans to this `TracerProvider` (None: back to the process-wide one)."""
    global _provider  # noqa: PLW0603 - one provider per process, as OpenTelemetry's own
    _provider = provider


def configure() -> None:
    """At startup with tracing on: check the extra is installed and, unless a provider
    was installed already, export over OTLP (HTTP) as the OTEL_* variables say."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(f"BASTION_OTEL_TRACES needs OpenTelemetry: {INSTALL}") from None
    if _provider is not None or isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(f"BASTION_OTEL_TRACES needs the OTLP exporter: {INSTALL}") from None
    provider = TracerProvider(resource=Resource.create({"service.name": "bastion"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def record_request(
    *,
    method: str,
    route: str | None,
    status: int,
    started_ns: int,
    request_id: str,
    principal_id: str | None,
    org_id: str | None,
    headers: Mapping[str, str],
) -> None:
    """The span of one finished request (started at `started_ns`, wall clock)."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = _provider or trace.get_tracer_provider()
    tracer = provider.get_tracer("bastion")
    parent = propagate.extract(dict(headers))
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "http.response.status_code": status,
        "bastion.request_id": request_id,
    }
    if route:
        attributes["http.route"] = route
    if principal_id:
        attributes["bastion.principal_id"] = principal_id
    if org_id:
        attributes["bastion.org_id"] = org_id
    span = tracer.start_span(
        f"{method} {route or 'unmatched'}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes=attributes,
        start_time=started_ns,
    )
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=time.time_ns())
