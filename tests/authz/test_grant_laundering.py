"""Rights that end are not laundered into rights that do not: a permission the caller
holds only through a temporary grant is given away (to a user's role, an API key, a
service account or its key, a custom role, another grant) only when what is given ends
no later than the grant; otherwise 403."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import Factory, Member, Org, bearer, unique_email

HOUR = timedelta(hours=1)


class Temp:
    """An organisation with a member holding a temporary admin grant for an hour."""

    def __init__(self, client: TestClient, factory: Factory) -> None:
        self.client = client
        self.factory = factory
        self.org: Org = factory.org()
        self.user: Member = factory.member(self.org, "member")
        self.other: Member = factory.member(self.org, "member")
        self.grant_end = datetime.now(UTC).replace(microsecond=0) + HOUR
        self.call(
            "post",
            f"users/{self.user.user_id}/role-grants",
            {"role": "admin", "expires_at": self.grant_end.isoformat(), "reason": "incident"},
            self.org.headers,
            201,
        )

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str],
        status: int,
    ) -> Any:
        response = self.client.request(
            method, f"/v1/orgs/{self.org.id}/{path}", json=body, headers=headers
        )
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    def refused(self, method: str, path: str, body: dict[str, Any]) -> str:
        detail = self.call(method, path, body, self.user.headers, 403)["detail"]
        assert "temporary grant" in detail, detail
        return str(detail)


@pytest.fixture
def t(client: TestClient, factory: Factory) -> Temp:
    return Temp(client, factory)


def _at(instant: datetime) -> str:
    return instant.isoformat()


def test_no_permanent_admin_user_from_a_temporary_grant(t: Temp) -> None:
    t.refused("post", "users", {"email": unique_email(), "role": "admin"})
    t.refused("patch", f"users/{t.other.user_id}", {"role": "admin"})
    # What the caller holds for good (a member's rights) is still theirs to give.
    t.call("post", "users", {"email": unique_email(), "role": "member"}, t.user.headers, 201)
    t.call("patch", f"users/{t.other.user_id}", {"role": "viewer"}, t.user.headers, 200)


def test_an_api_key_given_temporary_rights_ends_with_the_grant(t: Temp) -> None:
    t.refused("post", "api-keys", {"name": "forever", "role": "admin"})
    later = t.grant_end + timedelta(seconds=1)
    t.refused("post", "api-keys", {"name": "later", "role": "admin", "expires_at": _at(later)})
    made = t.call(
        "post",
        "api-keys",
        {"name": "bounded", "role": "admin", "expires_at": _at(t.grant_end)},
        t.user.headers,
        201,
    )
    # That key carries the same limit: it makes no permanent admin key either.
    key = bearer(made["key"])
    refused = t.call("post", "api-keys", {"name": "via key", "role": "admin"}, key, 403)
    assert "temporary grant" in refused["detail"]
    t.call("post", "api-keys", {"name": "member", "role": "member"}, t.user.headers, 201)


def test_no_admin_service_account_nor_a_lasting_key_of_one(t: Temp) -> None:
    t.refused("post", "service-accounts", {"name": "bot", "role": "admin"})
    bot = t.call("post", "service-accounts", {"name": "bot", "role": "viewer"}, t.user.headers, 201)
    t.refused("patch", f"service-accounts/{bot['id']}", {"role": "admin"})
    admin_bot = t.call(
        "post", "service-accounts", {"name": "ops", "role": "admin"}, t.org.headers, 201
    )
    body = {"name": "ops-key", "service_account_id": admin_bot["id"]}
    t.refused("post", "api-keys", body)
    bounded = {**body, "expires_at": _at(t.grant_end - timedelta(minutes=5))}
    t.call("post", "api-keys", bounded, t.user.headers, 201)
    # Rotating a lasting key of the account would hand the caller a lasting admin key.
    lasting = t.call("post", "api-keys", body, t.org.headers, 201)
    t.refused("post", f"api-keys/{lasting['id']}/rotate", {})


def test_no_custom_role_with_temporary_permissions(t: Temp) -> None:
    t.refused("post", "roles", {"name": "revealer", "permissions": ["secrets:reveal"]})
    made = t.call(
        "post", "roles", {"name": "reader", "permissions": ["agents:read"]}, t.user.headers, 201
    )
    t.refused("patch", f"roles/{made['id']}", {"permissions": ["agents:read", "secrets:reveal"]})


def test_a_grant_given_on_ends_no_later_than_the_givers(t: Temp) -> None:
    later = t.grant_end + timedelta(minutes=1)
    path = f"users/{t.other.user_id}/role-grants"
    t.refused("post", path, {"role": "admin", "expires_at": _at(later), "reason": "x"})
    body = {"role": "admin", "expires_at": _at(t.grant_end), "reason": "pairing"}
    t.call("post", path, body, t.user.headers, 201)


def test_a_permanent_admin_is_not_limited(t: Temp) -> None:
    admin = t.org.admin.headers
    t.call("post", "users", {"email": unique_email(), "role": "admin"}, admin, 201)
    t.call("post", "api-keys", {"name": "forever", "role": "admin"}, admin, 201)
    t.call("post", "roles", {"name": "rev", "permissions": ["secrets:reveal"]}, admin, 201)
