"""Custom roles and temporary grants, decided at request time with no job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from bastion.core.clock import clock
from tests.factories import Factory, unique_email


def _can_create_user(
    client: TestClient, org_id: str, headers: dict[str, str], role: str = "viewer"
) -> bool:
    response = client.post(
        f"/v1/orgs/{org_id}/users", json={"email": unique_email(), "role": role}, headers=headers
    )
    assert response.status_code in (201, 403), response.text
    return response.status_code == 201


def test_grant_counts_until_expiry_to_the_second(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    user = factory.member(org, "member")
    assert not _can_create_user(client, org.id, user.headers)
    expires = datetime.now(UTC) + timedelta(seconds=60)
    grant = client.post(
        f"/v1/orgs/{org.id}/users/{user.user_id}/role-grants",
        json={"role": "manager", "expires_at": expires.isoformat(), "reason": "on-call"},
        headers=org.headers,
    )
    assert grant.status_code == 201
    assert grant.json()["active"] is True
    assert _can_create_user(client, org.id, user.headers)
    clock.advance(55)
    assert _can_create_user(client, org.id, user.headers)
    clock.advance(6)
    assert not _can_create_user(client, org.id, user.headers)
    listed = client.get(
        f"/v1/orgs/{org.id}/users/{user.user_id}/role-grants", headers=org.headers
    ).json()
    assert listed["data"][0]["active"] is False


def test_grant_revocation_is_immediate(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    user = factory.member(org, "viewer")
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    grant = client.post(
        f"/v1/orgs/{org.id}/users/{user.user_id}/role-grants",
        json={"role": "manager", "expires_at": expires, "reason": "incident"},
        headers=org.headers,
    ).json()
    assert _can_create_user(client, org.id, user.headers)
    revoked = client.delete(
        f"/v1/orgs/{org.id}/users/{user.user_id}/role-grants/{grant['id']}", headers=org.headers
    )
    assert revoked.status_code == 204
    assert not _can_create_user(client, org.id, user.headers)


def test_nobody_grants_more_than_they_hold(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    manager = factory.member(org, "manager")
    user = factory.member(org, "viewer")
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = client.post(
        f"/v1/orgs/{org.id}/users/{user.user_id}/role-grants",
        json={"role": "admin", "expires_at": expires, "reason": "please"},
        headers=manager.headers,
    )
    assert response.status_code == 403
    past = client.post(
        f"/v1/orgs/{org.id}/users/{user.user_id}/role-grants",
        json={"role": "member", "expires_at": "2000-01-01T00:00:00Z", "reason": "x"},
        headers=manager.headers,
    )
    assert past.status_code == 422


def test_custom_role_lifecycle(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    bad = client.post(
        f"/v1/orgs/{org.id}/roles",
        json={"name": "oops", "permissions": ["users:read", "users:fly"]},
        headers=org.headers,
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "permissions"
    assert "users:fly" not in bad.text  # errors echo no input (issue 12)
    role = client.post(
        f"/v1/orgs/{org.id}/roles",
        json={"name": "directory", "permissions": ["users:read"]},
        headers=org.headers,
    ).json()
    assert role["id"].startswith("role_")
    user = factory.member(org, "viewer")
    client.patch(
        f"/v1/orgs/{org.id}/users/{user.user_id}", json={"role": "directory"}, headers=org.headers
    )
    assert client.get("/v1/me", headers=user.headers).json()["permissions"] == ["users:read"]
    assert not _can_create_user(client, org.id, user.headers, role="directory")
    client.patch(
        f"/v1/orgs/{org.id}/roles/{role['id']}",
        json={"permissions": ["users:read", "users:manage"]},
        headers=org.headers,
    )
    # The next request sees the change; and the holder may confer only what it holds.
    assert _can_create_user(client, org.id, user.headers, role="directory")
    assert not _can_create_user(client, org.id, user.headers, role="viewer")
    in_use = client.delete(f"/v1/orgs/{org.id}/roles/{role['id']}", headers=org.headers)
    assert in_use.status_code == 409
    holders = [
        u["id"]
        for u in client.get(f"/v1/orgs/{org.id}/users", headers=org.headers).json()["data"]
        if u["role"] == role["id"]
    ]
    assert len(holders) == 2  # the member and the user it created
    for holder in holders:
        client.patch(
            f"/v1/orgs/{org.id}/users/{holder}", json={"role": "viewer"}, headers=org.headers
        )
    assert (
        client.delete(f"/v1/orgs/{org.id}/roles/{role['id']}", headers=org.headers).status_code
        == 204
    )
    roles = client.get(f"/v1/orgs/{org.id}/roles", headers=org.headers).json()["data"]
    assert [r["name"] for r in roles if r["builtin"]] == ["admin", "manager", "member", "viewer"]
    assert all(r["id"] != role["id"] for r in roles)


def test_builtin_role_names_are_reserved(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    response = client.post(
        f"/v1/orgs/{org.id}/roles", json={"name": "admin", "permissions": []}, headers=org.headers
    )
    assert response.status_code == 422


def test_a_manager_neither_ends_an_admin_grant_nor_strips_a_role_above_theirs(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    manager, user = factory.member(org, "manager"), factory.member(org, "member")
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    grant = client.post(
        f"/v1/orgs/{org.id}/users/{user.user_id}/role-grants",
        json={"role": "admin", "expires_at": expires, "reason": "migration"},
        headers=org.headers,
    ).json()
    url = f"/v1/orgs/{org.id}/users/{user.user_id}/role-grants/{grant['id']}"
    assert client.delete(url, headers=manager.headers).status_code == 403
    assert client.delete(url, headers=org.headers).status_code == 204  # an admin may
    role = client.post(
        f"/v1/orgs/{org.id}/roles",
        json={"name": "auditor", "permissions": ["audit:export", "audit:read"]},
        headers=org.headers,
    ).json()
    keeper = client.post(
        f"/v1/orgs/{org.id}/roles",
        json={"name": "role-keeper", "permissions": ["roles:manage", "roles:read", "audit:read"]},
        headers=org.headers,
    )
    assert keeper.status_code == 201, keeper.text
    steward = factory.member(org, "role-keeper")
    stripped = client.patch(
        f"/v1/orgs/{org.id}/roles/{role['id']}",
        json={"permissions": ["audit:read"]},  # takes away audit:export, which they lack
        headers=steward.headers,
    )
    assert stripped.status_code == 403, stripped.text
    renamed = client.patch(
        f"/v1/orgs/{org.id}/roles/{role['id']}", json={"name": "auditors"}, headers=steward.headers
    )
    assert renamed.status_code == 200, renamed.text  # what they may do, they still can
