"""Prometheus `/metrics` (issue 20): off without a token, protected by it, and counting
requests by route template, auth failures, gate decisions and authorization index
builds."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bastion.api.app import create_app
from bastion.api.state import AppState
from tests.conftest import make_settings
from tests.factories import Factory, bearer

TOKEN = "m" * 40


@pytest.fixture(scope="module")
def metered(data_dir: Path, database_url: str) -> Iterator[tuple[TestClient, AppState]]:
    app = create_app(make_settings(data_dir, database_url, metrics_token=TOKEN))
    with TestClient(app) as client:
        yield client, app.state.bastion


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(client: TestClient) -> Samples:
    response = client.get("/metrics", headers=bearer(TOKEN))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_off_without_a_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers=bearer(TOKEN)).status_code == 404


def test_metrics_need_the_token(metered: tuple[TestClient, AppState]) -> None:
    client, _ = metered
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer("x" * 40)).status_code == 401
    assert client.get("/metrics", headers={"authorization": TOKEN}).status_code == 401
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_requests_auth_failures_gate_and_index_builds_are_counted(
    metered: tuple[TestClient, AppState], factory: Factory
) -> None:
    client, state = metered
    factory = Factory(state, client)
    org = factory.org()
    before = _scrape(client)
    for _ in range(3):
        assert client.get("/v1/me", headers=org.headers).status_code == 200
    assert client.get(f"/v1/orgs/{org.id}/teams", headers=org.headers).status_code == 200
    assert client.get("/v1/me", headers=bearer("bsk_key_nope_nope")).status_code == 401
    checked = client.post(
        f"/v1/orgs/{org.id}/authz/check",
        json={"subject": org.admin.user_id, "action": "read", "resource": "document:doc_x"},
        headers=org.headers,
    )
    assert checked.status_code == 200, checked.text
    factory.pending_tool_call(org)  # a run asks the gate: pending
    after = _scrape(client)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    me = {"method": "GET", "route": "/v1/me", "status": "200"}
    assert delta("bastion_http_requests_total", **me) == 3
    teams = {"method": "GET", "route": "/v1/orgs/{org}/teams", "status": "200"}
    assert delta("bastion_http_requests_total", **teams) == 1
    assert delta("bastion_http_request_duration_seconds_count", method="GET", route="/v1/me") == 4
    assert (
        delta("bastion_auth_failures_total", reason="unknown_credential_kind")
        + delta("bastion_auth_failures_total", reason="unknown_or_wrong_secret")
        == 1
    )
    assert delta("bastion_gate_decisions_total", decision="pending") == 1
    assert delta("bastion_authz_index_build_seconds_count") >= 1  # a new org: a new index
    assert _value(after, "bastion_audit_append_lag_seconds_count") > 0
    # No raw path (ids) in any label.
    text = client.get("/metrics", headers=bearer(TOKEN)).text
    assert org.id not in text
    assert not re.search(r'route="/v1/orgs/org_', text)
