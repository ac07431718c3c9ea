"""No error echoes what the caller submitted (issue 12, finding 6): a value, an unknown
field's name, an id or a name comes back neither in a problem document's `detail` nor in
its `errors`; the field is still named. The threat model's reason: an error page is
rendered by consoles and logged by proxies, and a submitted value may be a secret or
markup (`<script>`)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import Factory, Org

MARK = "zq9<script>alert(1)</script>"


def _refused(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert MARK not in response.text
    assert "<script>" not in response.text
    body: dict[str, Any] = response.json()
    if field is not None:
        assert field in {e["field"] for e in body["errors"]}, body
    return body


@pytest.fixture
def org(factory: Factory) -> Org:
    return factory.org()


def test_an_unknown_field_is_refused_without_its_name(client: TestClient, org: Org) -> None:
    response = client.post(
        f"/v1/orgs/{org.id}/teams", json={"name": "t", MARK: 1}, headers=org.headers
    )
    body = _refused(response, 422)
    assert body["errors"]
    assert all(e["message"] for e in body["errors"])


def test_a_key_inside_a_nested_object_is_not_echoed(client: TestClient, org: Org) -> None:
    body = {"name": "p", "decision": "allow", "match": {MARK: 1}}
    response = client.post(f"/v1/orgs/{org.id}/approval-policies", json=body, headers=org.headers)
    _refused(response, 422)


def test_an_invalid_email_is_not_echoed(client: TestClient, org: Org) -> None:
    body = {"email": f"{MARK}@example.com", "name": "x", "role": "member", "password": "p" * 12}
    response = client.post(f"/v1/orgs/{org.id}/users", json=body, headers=org.headers)
    _refused(response, 422, "email")


def test_an_unknown_role_is_not_echoed(client: TestClient, org: Org) -> None:
    body = {"email": "someone@example.com", "name": "x", "role": MARK, "password": "p" * 12}
    response = client.post(f"/v1/orgs/{org.id}/users", json=body, headers=org.headers)
    _refused(response, 422, "role")


def test_unknown_permissions_are_not_echoed(client: TestClient, org: Org) -> None:
    body = {"name": "r", "permissions": ["teams:read", MARK]}
    response = client.post(f"/v1/orgs/{org.id}/roles", json=body, headers=org.headers)
    _refused(response, 422, "permissions")


def test_a_duplicate_team_name_is_not_echoed(client: TestClient, org: Org) -> None:
    name = "team zq9 secret-looking-name"
    assert (
        client.post(
            f"/v1/orgs/{org.id}/teams", json={"name": name}, headers=org.headers
        ).status_code
        == 201
    )
    response = client.post(f"/v1/orgs/{org.id}/teams", json={"name": name}, headers=org.headers)
    assert response.status_code == 409, response.text
    assert name not in response.text


def test_a_duplicate_role_name_is_not_echoed(client: TestClient, org: Org) -> None:
    body = {"name": "zq9 auditors", "permissions": ["teams:read"]}
    first = client.post(f"/v1/orgs/{org.id}/roles", json=body, headers=org.headers)
    assert first.status_code == 201, first.text
    again = client.post(f"/v1/orgs/{org.id}/roles", json=body, headers=org.headers)
    assert again.status_code == 409, again.text
    assert "zq9 auditors" not in again.text
    other = client.post(
        f"/v1/orgs/{org.id}/roles", json={**body, "name": "zq9 other"}, headers=org.headers
    )
    renamed = client.patch(
        f"/v1/orgs/{org.id}/roles/{other.json()['id']}",
        json={"name": "zq9 auditors"},
        headers=org.headers,
    )
    assert renamed.status_code == 409, renamed.text
    assert "zq9 auditors" not in renamed.text


def test_a_condition_that_does_not_compile_is_not_echoed(client: TestClient, org: Org) -> None:
    body = {
        "effect": "deny",
        "action": "read",
        "resource_type": "document",
        "condition": f'resource.metadata.x == "{MARK}" &&',
    }
    response = client.post(f"/v1/orgs/{org.id}/authz/rules", json=body, headers=org.headers)
    error = _refused(response, 422, "condition")["errors"][0]["message"]
    assert "line 1" in error  # still says where


def test_unknown_alert_params_are_not_echoed(client: TestClient, org: Org) -> None:
    body = {"name": "a", "kind": "data_export", "params": {MARK: 1}}
    response = client.post(f"/v1/orgs/{org.id}/alert-rules", json=body, headers=org.headers)
    _refused(response, 422, "params")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "webhook-endpoints",
            {"name": "w", "provider": "github", "secret": "s" * 16},
            "forward_url",
        ),
        ("audit-sinks", {"name": "s", "type": "https", "format": "json"}, "url"),
    ],
)
def test_a_refused_destination_does_not_echo_its_host(
    client: TestClient, org: Org, path: str, body: dict[str, Any], field: str
) -> None:
    host = "zq9-secret-host.invalid"
    response = client.post(
        f"/v1/orgs/{org.id}/{path}",
        json={**body, field: f"https://{host}/x"},
        headers=org.headers,
    )
    _refused(response, 422, field)
    assert host not in response.text


def test_an_unknown_id_in_the_path_is_not_echoed(client: TestClient, org: Org) -> None:
    for path in ("teams", "users", "roles", "agents", "secrets", "webhook-endpoints"):
        response = client.get(f"/v1/orgs/{org.id}/{path}/zq9secretvalue", headers=org.headers)
        assert response.status_code in (404, 422), response.text
        assert "zq9secretvalue" not in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a", "team_ids": ["team_" + MARK[:30]]}, "team_ids"),
        (
            {"name": "a", "tools": [{"name": "t"}, {"name": "t"}]},
            "tools[1].name",
        ),
        ({"name": "a", "tools": [{"name": "t", "input_schema": {"type": MARK}}]}, None),
        (
            {"name": "a", "tools": [{"name": "t", "input_schema": {"pattern": "(?<" + MARK}}]},
            "tools[0].input_schema",
        ),
    ],
)
def test_agent_definitions_are_refused_without_echo(
    client: TestClient, org: Org, body: dict[str, Any], field: str | None
) -> None:
    response = client.post(f"/v1/orgs/{org.id}/agents", json=body, headers=org.headers)
    _refused(response, 422, field)


@pytest.mark.parametrize(
    ("match", "approvers", "field"),
    [
        ({"condition": f'arguments.x == "{MARK}" &&'}, {}, "match.condition"),
        ({}, {"teams": ["team_" + MARK[:30]]}, "approvers.teams"),
        ({}, {"users": ["usr_" + MARK[:30]]}, "approvers.users"),
    ],
)
def test_approval_policies_are_refused_without_echo(
    client: TestClient, org: Org, match: dict[str, Any], approvers: dict[str, Any], field: str
) -> None:
    body = {"name": "p", "decision": "require_approval", "match": match, "approvers": approvers}
    response = client.post(f"/v1/orgs/{org.id}/approval-policies", json=body, headers=org.headers)
    _refused(response, 422, field)
