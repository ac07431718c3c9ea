"""Strict types at the edge (issue 12, finding 7): a boolean is not an integer, text is
not a number, a fraction is not a whole number, in bodies and in query parameters; times
are RFC 3339 text (JSON has no time type), never a bare number."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bastion.core.schemas import In
from tests.factories import Factory, Org


@pytest.fixture
def org(factory: Factory) -> Org:
    return factory.org()


def _invalid(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}, response.text


@pytest.mark.parametrize("version", [True, "1", 1.0, 1.5])
def test_reveal_version_must_be_an_integer(client: TestClient, org: Org, version: Any) -> None:
    base = f"/v1/orgs/{org.id}/secrets/db-password"
    assert client.put(base, json={"value": "hunter2"}, headers=org.headers).status_code == 200
    response = client.post(f"{base}/reveal", json={"version": version}, headers=org.headers)
    _invalid(response, "version")
    ok = client.post(f"{base}/reveal", json={"version": 1}, headers=org.headers)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("tolerance", [True, "300", 300.0])
def test_webhook_tolerance_must_be_an_integer(client: TestClient, org: Org, tolerance: Any) -> None:
    body = {"name": "gh", "provider": "github", "secret": "s" * 16, "tolerance_seconds": tolerance}
    response = client.post(f"/v1/orgs/{org.id}/webhook-endpoints", json=body, headers=org.headers)
    _invalid(response, "tolerance_seconds")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("teams", {"name": "t", "description": 5}, "description"),
        (
            "authz/rules",
            {"effect": "deny", "action": "read", "resource_type": "document", "condition": 5},
            "condition",
        ),
        ("api-keys", {"name": "k", "role": "viewer", "expires_at": 4102444800}, "expires_at"),
        ("api-keys", {"name": "k", "role": "viewer", "expires_at": "4102444800"}, "expires_at"),
        (
            "authz/list",
            {"subject": "usr_x", "action": "read", "resource_type": "document", "limit": True},
            "limit",
        ),
        (
            "authz/check",
            {"subject": "usr_x", "action": "read", "resource": "doc_x", "explain": 1},
            "explain",
        ),
        ("approval-policies", {"name": "p", "decision": "allow", "quorum": 1.0}, "quorum"),
        (
            "approval-policies",
            {"name": "p", "decision": "allow", "allow_self_approval": "true"},
            "allow_self_approval",
        ),
    ],
)
def test_bodies_take_no_type_coercion(
    client: TestClient, org: Org, path: str, body: dict[str, Any], field: str
) -> None:
    _invalid(client.post(f"/v1/orgs/{org.id}/{path}", json=body, headers=org.headers), field)


def test_times_in_bodies_are_still_rfc3339_text(client: TestClient, org: Org) -> None:
    body = {"name": "k", "role": "viewer", "expires_at": "2999-01-01T00:00:00+02:00"}
    response = client.post(f"/v1/orgs/{org.id}/api-keys", json=body, headers=org.headers)
    assert response.status_code == 201, response.text
    assert response.json()["expires_at"].startswith("2998-12-31T22:00:00")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("until=0.5", "until"),
        ("since=1700000000", "since"),
        ("since=2030-01-01T00:00:00", "since"),  # no zone: ambiguous
    ],
)
def test_audit_times_are_rfc3339(client: TestClient, org: Org, query: str, field: str) -> None:
    for path in ("audit-events", "audit-events/export"):
        _invalid(client.get(f"/v1/orgs/{org.id}/{path}?{query}", headers=org.headers), field)
    ok = client.get(
        f"/v1/orgs/{org.id}/audit-events?until=2999-01-01T00:00:00Z", headers=org.headers
    )
    assert ok.status_code == 200, ok.text


def _query_params(app: Any) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, path, name, schema) of every integer, number or boolean query parameter."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                if param["in"] != "query":
                    continue
                schema = param["schema"]
                types = {s.get("type") for s in schema.get("anyOf", [schema])}
                if types & {"integer", "number", "boolean"}:
                    found.append((method.upper(), path, param["name"], schema))
    return found


BAD = {
    "integer": ["1.0", "true", " 5", "1_0", ""],
    "number": ["true", "nan", "1_0", " 2"],
    "boolean": ["1", "yes", "on", "t", "2"],
}


def test_query_parameters_take_no_type_coercion(client: TestClient, org: Org, app: FastAPI) -> None:
    params = _query_params(app)
    assert len(params) >= 10  # limit on every list, wait, duration, mine
    for method, path, name, schema in params:
        url = path.replace("{org}", org.id)
        for part in [p for p in url.split("/") if p.startswith("{")]:
            url = url.replace(part, "x_unknown")
        types = {s.get("type") for s in schema.get("anyOf", [schema])} - {"null", None}
        for bad in BAD[types.pop()]:
            response = client.request(method, f"{url}?{name}={bad}", headers=org.headers)
            assert response.status_code == 422, (method, path, name, bad, response.text)
            assert name in {e["field"] for e in response.json()["errors"]}


def test_every_request_model_is_strict() -> None:
    seen, stack = [], [In]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        seen.append(cls)
    assert len(seen) > 30
    assert [c.__name__ for c in seen if not c.model_config.get("strict")] == []
