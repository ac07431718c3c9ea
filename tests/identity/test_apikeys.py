"""API keys: shown once, keyed hash at rest, rotation with overlap, revocation, expiry,
never more than their owner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from bastion.core.clock import clock
from bastion.identity.models import ApiKey
from tests.factories import Factory, bearer, home_factory, unique_email


@pytest.fixture
def factory(app, client: TestClient) -> Factory:  # type: ignore[no-untyped-def]
    """Organisations in the home region: these tests read and change rows directly."""
    return home_factory(app.state.bastion, client)


def _me(client: TestClient, key: str) -> int:
    return client.get("/v1/me", headers=bearer(key)).status_code


def test_key_is_shown_once_and_stored_as_a_keyed_hash(
    client: TestClient, factory: Factory, app
) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    created = factory.api_key(org, "viewer")
    assert created["key"].startswith(f"bsk_{created['id']}_")
    assert created["prefix"] == f"bsk_{created['id']}"
    listed = client.get(f"/v1/orgs/{org.id}/api-keys", headers=org.headers).json()["data"]
    assert all("key" not in k for k in listed)
    assert created["key"] not in str(listed)
    secret = created["key"].split("_", 3)[3]
    with app.state.bastion.sessions() as db:
        row = db.get(ApiKey, created["id"])
        assert secret not in row.secret_hash
        assert len(row.secret_hash) == 64
        assert row.pepper_version == 1


def test_wrong_secret_and_unknown_id_answer_the_same(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    key = factory.api_key(org, "viewer")["key"]
    wrong_secret = key[:-3] + ("abc" if not key.endswith("abc") else "xyz")
    _head, _, secret = key.rpartition("_")
    unknown_id = "bsk_key_" + "0" * 26 + "_" + secret
    a = client.get("/v1/me", headers=bearer(wrong_secret))
    b = client.get("/v1/me", headers=bearer(unknown_id))
    assert a.status_code == b.status_code == 401
    assert {**a.json(), "request_id": None} == {**b.json(), "request_id": None}


def test_last_used_at_is_recorded(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    created = factory.api_key(org, "viewer")
    assert created["last_used_at"] is None
    assert _me(client, created["key"]) == 200
    got = client.get(f"/v1/orgs/{org.id}/api-keys/{created['id']}", headers=org.headers).json()
    assert got["last_used_at"] is not None


def test_revocation_is_immediate(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    created = factory.api_key(org, "viewer")
    assert _me(client, created["key"]) == 200
    assert (
        client.delete(
            f"/v1/orgs/{org.id}/api-keys/{created['id']}", headers=org.headers
        ).status_code
        == 204
    )
    assert _me(client, created["key"]) == 401
    got = client.get(f"/v1/orgs/{org.id}/api-keys/{created['id']}", headers=org.headers).json()
    assert got["status"] == "revoked"


def test_rotation_with_overlap(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    old = factory.api_key(org, "viewer")
    rotated = client.post(
        f"/v1/orgs/{org.id}/api-keys/{old['id']}/rotate",
        json={"overlap_seconds": 300},
        headers=org.headers,
    )
    assert rotated.status_code == 201
    new = rotated.json()
    assert new["id"] != old["id"]
    assert new["role"] == old["role"]
    assert _me(client, old["key"]) == 200
    assert _me(client, new["key"]) == 200
    clock.advance(301)
    assert _me(client, old["key"]) == 401
    assert _me(client, new["key"]) == 200
    again = client.post(
        f"/v1/orgs/{org.id}/api-keys/{old['id']}/rotate", json={}, headers=org.headers
    )
    assert again.status_code == 409


def test_rotation_without_overlap_stops_the_old_key_now(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    old = factory.api_key(org, "viewer")
    new = client.post(f"/v1/orgs/{org.id}/api-keys/{old['id']}/rotate", headers=org.headers).json()
    assert _me(client, old["key"]) == 401
    assert _me(client, new["key"]) == 200


def test_expiry(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    expires = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    created = client.post(
        f"/v1/orgs/{org.id}/api-keys",
        json={"name": "short", "role": "viewer", "expires_at": expires},
        headers=org.headers,
    ).json()
    assert _me(client, created["key"]) == 200
    clock.advance(601)
    assert _me(client, created["key"]) == 401
    past = client.post(
        f"/v1/orgs/{org.id}/api-keys",
        json={"name": "past", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"},
        headers=org.headers,
    )
    assert past.status_code == 422
    assert past.json()["errors"][0]["field"] == "expires_at"


def test_key_never_exceeds_its_owner(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    owner = factory.member(org, "admin")
    key = factory.api_key(org, "admin", headers=owner.headers)["key"]
    body = {"email": unique_email(), "role": "viewer"}
    assert (
        client.post(f"/v1/orgs/{org.id}/users", json=body, headers=bearer(key)).status_code == 201
    )
    client.patch(
        f"/v1/orgs/{org.id}/users/{owner.user_id}", json={"role": "viewer"}, headers=org.headers
    )
    me = client.get("/v1/me", headers=bearer(key)).json()
    assert "users:manage" not in me["permissions"]
    body = {"email": unique_email(), "role": "viewer"}
    assert (
        client.post(f"/v1/orgs/{org.id}/users", json=body, headers=bearer(key)).status_code == 403
    )


def test_cannot_create_a_key_stronger_than_yourself(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    custom = client.post(
        f"/v1/orgs/{org.id}/roles",
        json={"name": "key-minter", "permissions": ["apikeys:manage", "apikeys:read"]},
        headers=org.headers,
    ).json()
    minter = factory.member(org, "viewer")
    client.patch(
        f"/v1/orgs/{org.id}/users/{minter.user_id}",
        json={"role": custom["id"]},
        headers=org.headers,
    )
    denied = client.post(
        f"/v1/orgs/{org.id}/api-keys", json={"name": "x", "role": "admin"}, headers=minter.headers
    )
    assert denied.status_code == 403
    allowed = client.post(
        f"/v1/orgs/{org.id}/api-keys",
        json={"name": "x", "role": "key-minter"},
        headers=minter.headers,
    )
    assert allowed.status_code == 201


def test_service_account_keys(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    account = client.post(
        f"/v1/orgs/{org.id}/service-accounts",
        json={"name": "ci", "role": "viewer"},
        headers=org.headers,
    ).json()
    key = client.post(
        f"/v1/orgs/{org.id}/api-keys",
        json={"name": "ci-key", "service_account_id": account["id"]},
        headers=org.headers,
    ).json()
    me = client.get("/v1/me", headers=bearer(key["key"])).json()
    assert me["principal_type"] == "service_account"
    assert me["id"] == account["id"]
    client.patch(
        f"/v1/orgs/{org.id}/service-accounts/{account['id']}",
        json={"status": "suspended"},
        headers=org.headers,
    )
    assert _me(client, key["key"]) == 401
    client.patch(
        f"/v1/orgs/{org.id}/service-accounts/{account['id']}",
        json={"status": "active"},
        headers=org.headers,
    )
    assert _me(client, key["key"]) == 200
    assert (
        client.delete(
            f"/v1/orgs/{org.id}/service-accounts/{account['id']}", headers=org.headers
        ).status_code
        == 204
    )
    assert _me(client, key["key"]) == 401


@pytest.mark.parametrize(
    ("expires_at", "problem"),
    [("2099-01-01T00:00:00", "time zone"), ("9999-12-31T23:59:59-14:00", "out of range")],
)
def test_a_time_without_a_zone_or_out_of_range_is_a_422_naming_it(
    client: TestClient, factory: Factory, expires_at: str, problem: str
) -> None:
    org = factory.org()
    member = factory.member(org, "member")
    for path, body in (
        ("api-keys", {"name": "k", "role": "member", "expires_at": expires_at}),
        (
            f"users/{member.user_id}/role-grants",
            {"role": "manager", "reason": "x", "expires_at": expires_at},
        ),
    ):
        refused = client.post(f"/v1/orgs/{org.id}/{path}", json=body, headers=org.headers)
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert error["field"] == "expires_at"
        assert problem in error["message"]


def test_only_its_owner_may_rotate_a_persons_key(client: TestClient, factory: Factory) -> None:
    """A rotation returns a key that acts as the old key's owner: handed to someone else,
    it let them read the owner's private agents and start runs for them."""
    org = factory.org()
    made = client.post(
        f"/v1/orgs/{org.id}/roles",
        json={"name": "keys", "permissions": ["apikeys:manage", "apikeys:read"]},
        headers=org.headers,
    )
    assert made.status_code == 201, made.text
    owner, other = factory.member(org, "keys"), factory.member(org, "keys")
    key = factory.api_key(org, "keys", headers=owner.headers)
    url = f"/v1/orgs/{org.id}/api-keys/{key['id']}/rotate"
    for someone in (other.headers, org.headers):  # another holder, or an admin
        refused = client.post(url, json={"overlap_seconds": 0}, headers=someone)
        assert refused.status_code == 403, refused.text
    assert _me(client, key["key"]) == 200  # untouched
    assert client.post(url, json={"overlap_seconds": 0}, headers=owner.headers).status_code == 201
    account = client.post(
        f"/v1/orgs/{org.id}/service-accounts", json={"name": "ci", "role": "viewer"},
        headers=org.headers,
    )  # fmt: skip
    assert account.status_code == 201, account.text
    minted = client.post(
        f"/v1/orgs/{org.id}/api-keys",
        json={"name": "as-ci", "service_account_id": account.json()["id"]},
        headers=owner.headers,
    )
    assert minted.status_code == 403, minted.text  # acting as the account needs its permission
