"""Names (issue 12, finding 8): the built-in role names are reserved whatever their case;
no name carries control or Unicode format characters (zero-width, bidi overrides: they
make two different names look alike); a secret's name follows one rule in a body and in a
path."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import Factory, Org

INVISIBLE = ["a\u200bb", "a\u202eb", "a\u2066b", "a\ufeffb", "a\u00adb", "a\x07b", "a\nb", "a\tb"]


@pytest.fixture(scope="module")
def org(app, client: TestClient) -> Org:  # type: ignore[no-untyped-def]
    return Factory(app.state.bastion, client).org("Names")


def _invalid(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}, response.text


@pytest.mark.parametrize("name", ["Admin", "MANAGER", "Member", "vIeWeR", "admin"])
def test_builtin_role_names_are_reserved_in_any_case(
    client: TestClient, org: Org, name: str
) -> None:
    base = f"/v1/orgs/{org.id}/roles"
    body = {"name": name, "permissions": ["teams:read"]}
    _invalid(client.post(base, json=body, headers=org.headers), "name")
    role = client.post(base, json={**body, "name": f"r-{name}"}, headers=org.headers)
    assert role.status_code == 201, role.text
    renamed = client.patch(f"{base}/{role.json()['id']}", json={"name": name}, headers=org.headers)
    _invalid(renamed, "name")


def _bodies(org: Org, name: str) -> list[tuple[str, str, dict[str, Any], str]]:
    return [
        ("POST", "teams", {"name": name}, "name"),
        ("POST", "roles", {"name": name, "permissions": []}, "name"),
        ("POST", "agents", {"name": name}, "name"),
        (
            "POST",
            "webhook-endpoints",
            {"name": name, "provider": "github", "secret": "s" * 16},
            "name",
        ),
        ("POST", "approval-policies", {"name": name, "decision": "allow"}, "name"),
        ("POST", "sources", {"name": name}, "name"),
        ("POST", "api-keys", {"name": name, "role": "viewer"}, "name"),
        ("POST", "service-accounts", {"name": name, "role": "viewer"}, "name"),
        (
            "POST",
            "audit-sinks",
            {"name": name, "type": "https", "format": "json", "url": "https://127.0.0.1/x"},
            "name",
        ),
        ("POST", "alert-rules", {"name": name, "kind": "data_export"}, "name"),
        (
            "POST",
            "users",
            {"email": "n@example.com", "name": name, "role": "viewer", "password": "p" * 12},
            "name",
        ),
        ("PATCH", "", {"name": name}, "name"),
    ]


@pytest.mark.parametrize("name", INVISIBLE)
def test_names_refuse_control_and_format_characters(
    client: TestClient, org: Org, name: str
) -> None:
    for method, path, body, field in _bodies(org, name):
        url = f"/v1/orgs/{org.id}/{path}".rstrip("/")
        response = client.request(method, url, json=body, headers=org.headers)
        assert response.status_code == 422, (path, response.text)
        assert field in {e["field"] for e in response.json()["errors"]}, (path, response.text)


@pytest.mark.parametrize("name", ["a b", "a\u200bb", "a%23b", "a%3Cb%3E", "é", "x" * 201])
def test_secret_names_follow_one_rule_in_paths(client: TestClient, org: Org, name: str) -> None:
    base = f"/v1/orgs/{org.id}/secrets/{name}"
    _invalid(client.put(base, json={"value": "v"}, headers=org.headers), "name")
    _invalid(client.get(base, headers=org.headers), "name")
    _invalid(client.delete(base, headers=org.headers), "name")


def test_agents_name_secrets_by_the_same_rule(client: TestClient, org: Org) -> None:
    response = client.post(
        f"/v1/orgs/{org.id}/agents", json={"name": "a", "secrets": ["a b"]}, headers=org.headers
    )
    _invalid(response, "secrets.0")
    from bastion.agents import schemas as agents
    from bastion.core import schemas as core

    assert agents.SecretName is core.SecretName


def test_ordinary_names_still_work(client: TestClient, org: Org) -> None:
    for name in ("Équipe données", "日本チーム", "ops-team_2.0", "Team 🚀"):
        response = client.post(f"/v1/orgs/{org.id}/teams", json={"name": name}, headers=org.headers)
        assert response.status_code == 201, response.text
