"""Prometheus metrics (prometheus-client), served at `/metrics` (`bastion.api.metrics`).

Several worker processes (`bastion serve --workers N`) use prometheus-client's
multiprocess mode: `serve` points PROMETHEUS_MULTIPROC_DIR at an empty directory before
the workers start, each worker writes its samples there, and `/metrics` (in whichever
worker answers) adds up every worker's. Only counters and histograms are used, which
that mode sums exactly. docs/observability.md lists the metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LAG = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
_WAIT = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)

HTTP_REQUESTS = Counter(
    "bastion_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "bastion_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=_LATENCY,
)
AUTH_FAILURES = Counter(
    "bastion_auth_failures",
    "Bearer credentials refused, by reason (as audited in auth.credential_rejected).",
    ["reason"],
)
GATE_DECISIONS = Counter(
    "bastion_gate_decisions", "Tool-call gate decisions, by decision.", ["decision"]
)
# Found once: the gate is a hot path, and `labels()` costs more than the increment.
GATE_DECISION = {d: GATE_DECISIONS.labels(d) for d in ("allow", "deny", "pending")}
APPROVAL_WAIT = Histogram(
    "bastion_approval_wait_seconds",
    "Time from an approval's request to its final state, by outcome.",
    ["outcome"],
    buckets=_WAIT,
)
AUDIT_APPEND_LAG = Histogram(
    "bastion_audit_append_lag_seconds",
    "Time from a write unit (a change and its audit events) joining the group commit to"
    " its commit.",
    buckets=_LATENCY,
)
WEBHOOK_DELIVERY_LAG = Histogram(
    "bastion_webhook_delivery_lag_seconds",
    "Time from an outbound webhook delivery's creation to its successful attempt.",
    buckets=_LAG,
)
SINK_DELIVERY_LAG = Histogram(
    "bastion_audit_sink_delivery_lag_seconds",
    "Time from an audit event to its delivery to an audit sink.",
    buckets=_LAG,
)
AUTHZ_INDEX_BUILDS = Histogram(
    "bastion_authz_index_build_seconds",
    "Authorization index builds (one per organisation and revision) and their time.",
    buckets=_LATENCY,
)
