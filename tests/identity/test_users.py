"""Users: invitations, suspension and deletion end access at once, management rules."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from bastion.core.clock import clock
from tests.factories import PASSWORD, Factory, bearer, unique_email
from tests.races import second_while_first_is_open


def test_invite_then_setup_then_login(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    email = unique_email("invitee")
    created = client.post(
        f"/v1/orgs/{org.id}/users", json={"email": email, "role": "member"}, headers=org.headers
    )
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "invited"
    token = body["setup_token"]
    assert token.startswith("bsu_inv_")
    assert (
        client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code
        == 401
    )
    done = client.post("/v1/auth/setup", json={"token": token, "password": PASSWORD})
    assert done.status_code == 200
    assert done.json() == {"user_id": body["id"]}
    assert factory.login(email)
    again = client.post("/v1/auth/setup", json={"token": token, "password": PASSWORD + "x"})
    assert again.status_code == 401  # single use
    listed = client.get(f"/v1/orgs/{org.id}/users/{body['id']}", headers=org.headers).json()
    assert "setup_token" not in listed
    assert listed["status"] == "active"


def test_setup_token_expires_after_72_hours(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    body = client.post(
        f"/v1/orgs/{org.id}/users",
        json={"email": unique_email(), "role": "viewer"},
        headers=org.headers,
    ).json()
    clock.advance(72 * 3600 + 1)
    response = client.post(
        "/v1/auth/setup", json={"token": body["setup_token"], "password": PASSWORD}
    )
    assert response.status_code == 401


def test_setup_rejects_a_weak_password(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    body = client.post(
        f"/v1/orgs/{org.id}/users",
        json={"email": unique_email(), "role": "viewer"},
        headers=org.headers,
    ).json()
    response = client.post(
        "/v1/auth/setup", json={"token": body["setup_token"], "password": "short"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "password"


def test_emails_are_unique_across_the_instance_case_insensitively(
    client: TestClient, factory: Factory
) -> None:
    a, b = factory.org(), factory.org()
    email = unique_email("dup")
    first = client.post(
        f"/v1/orgs/{a.id}/users", json={"email": email, "role": "viewer"}, headers=a.headers
    )
    assert first.status_code == 201
    again = client.post(
        f"/v1/orgs/{b.id}/users", json={"email": email.upper(), "role": "viewer"}, headers=b.headers
    )
    assert again.status_code == 409


def test_suspension_ends_sessions_and_keys_on_the_next_request(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    user = factory.member(org, "admin")
    key = factory.api_key(org, "member", headers=user.headers)
    assert client.get("/v1/me", headers=bearer(key["key"])).status_code == 200
    response = client.patch(
        f"/v1/orgs/{org.id}/users/{user.user_id}", json={"status": "suspended"}, headers=org.headers
    )
    assert response.status_code == 200
    assert client.get("/v1/me", headers=user.headers).status_code == 401
    assert client.get("/v1/me", headers=bearer(key["key"])).status_code == 401
    assert (
        client.post("/v1/auth/login", json={"email": user.email, "password": PASSWORD}).status_code
        == 401
    )
    client.patch(
        f"/v1/orgs/{org.id}/users/{user.user_id}", json={"status": "active"}, headers=org.headers
    )
    assert client.get("/v1/me", headers=user.headers).status_code == 401  # sessions stay ended
    assert client.get("/v1/me", headers=bearer(key["key"])).status_code == 200  # keys were disabled


def test_deletion_ends_everything(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    user = factory.member(org, "admin")
    key = factory.api_key(org, "viewer", headers=user.headers)
    assert (
        client.delete(f"/v1/orgs/{org.id}/users/{user.user_id}", headers=org.headers).status_code
        == 204
    )
    assert client.get("/v1/me", headers=user.headers).status_code == 401
    assert client.get("/v1/me", headers=bearer(key["key"])).status_code == 401
    assert (
        client.get(f"/v1/orgs/{org.id}/users/{user.user_id}", headers=org.headers).status_code
        == 404
    )


def test_manager_cannot_create_or_touch_admins(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    manager = factory.member(org, "manager")
    made_admin = client.post(
        f"/v1/orgs/{org.id}/users",
        json={"email": unique_email(), "role": "admin"},
        headers=manager.headers,
    )
    assert made_admin.status_code == 403
    suspend_admin = client.patch(
        f"/v1/orgs/{org.id}/users/{org.admin.user_id}",
        json={"status": "suspended"},
        headers=manager.headers,
    )
    assert suspend_admin.status_code == 403
    member = factory.member(org, "member")
    promote = client.patch(
        f"/v1/orgs/{org.id}/users/{member.user_id}", json={"role": "admin"}, headers=manager.headers
    )
    assert promote.status_code == 403
    ok = client.patch(
        f"/v1/orgs/{org.id}/users/{member.user_id}",
        json={"role": "viewer"},
        headers=manager.headers,
    )
    assert ok.status_code == 200
    assert ok.json()["role"] == "viewer"


def test_nobody_changes_their_own_role_or_deletes_themselves(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    me = org.admin
    assert (
        client.patch(
            f"/v1/orgs/{org.id}/users/{me.user_id}", json={"role": "viewer"}, headers=me.headers
        ).status_code
        == 409
    )
    assert (
        client.delete(f"/v1/orgs/{org.id}/users/{me.user_id}", headers=me.headers).status_code
        == 409
    )
    renamed = client.patch(
        f"/v1/orgs/{org.id}/users/{me.user_id}", json={"name": "Me"}, headers=me.headers
    )
    assert renamed.status_code == 200


def test_role_change_takes_effect_on_the_next_request(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    user = factory.member(org, "viewer")
    body = {"email": unique_email(), "role": "viewer"}
    assert (
        client.post(f"/v1/orgs/{org.id}/users", json=body, headers=user.headers).status_code == 403
    )
    client.patch(
        f"/v1/orgs/{org.id}/users/{user.user_id}", json={"role": "manager"}, headers=org.headers
    )
    assert (
        client.post(f"/v1/orgs/{org.id}/users", json=body, headers=user.headers).status_code == 201
    )


def test_users_list_paginates_without_gaps(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    made = {factory.member(org, "viewer").user_id for _ in range(5)} | {org.admin.user_id}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"/v1/orgs/{org.id}/users", params=params, headers=org.headers).json()
        seen += [u["id"] for u in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert set(seen) == made
    assert seen == sorted(seen, reverse=True)  # newest first
    bad = client.get(f"/v1/orgs/{org.id}/users", params={"cursor": "%%%"}, headers=org.headers)
    assert bad.status_code == 422


def test_a_setup_token_used_twice_at_once_sets_one_password(
    client: TestClient, factory: Factory
) -> None:
    """The first use holds its transaction open while the second starts; on PostgreSQL
    both used to succeed (the last password won, two events)."""
    from bastion.core.context import Actor
    from bastion.identity import service as users

    state = factory.state
    org = factory.org()
    invited = client.post(
        f"/v1/orgs/{org.id}/users",
        json={"email": unique_email("invited"), "role": "member"},
        headers=org.headers,
    ).json()
    anonymous = Actor("anonymous", None, "127.0.0.1")

    def set_password(password: str) -> Callable[[Session], object]:
        return lambda db: users.complete_setup(
            db, anonymous, token=invited["setup_token"], password=password, hasher=state.hasher
        )

    error = second_while_first_is_open(
        state.write_sessions,
        set_password("first password 123"),
        set_password("second password 456"),
    )
    assert error is not None  # refused: the token was spent
    login = "/v1/auth/login"
    email = invited["email"]
    assert client.post(login, json={"email": email, "password": "first password 123"}).is_success
    second_try = client.post(login, json={"email": email, "password": "second password 456"})
    assert second_try.status_code == 401


def test_the_last_active_admin_stays(client: TestClient, factory: Factory) -> None:
    """Two admins demoted at once (the first change's transaction still open when the
    second starts): on PostgreSQL both went through, leaving no admin."""
    from bastion.core.context import Actor
    from bastion.core.errors import Conflict
    from bastion.identity import service as users
    from bastion.identity.authenticate import authenticate

    state = factory.state
    org = factory.org()
    second_admin = factory.member(org, "admin")
    with state.sessions() as db:
        key = authenticate(db, org.admin_key, Actor("api_key", None), state.hasher).principal

    def demote(user_id: str) -> Callable[[Session], object]:
        return lambda db: users.update_user(db, key, org.id, user_id, role="member")

    error = second_while_first_is_open(
        state.write_sessions, demote(org.admin.user_id), demote(second_admin.user_id)
    )
    assert isinstance(error, Conflict)
    url = f"/v1/orgs/{org.id}/users/{second_admin.user_id}"
    for change in ({"role": "member"}, {"status": "suspended"}):
        refused = client.patch(url, json=change, headers=org.headers)
        assert refused.status_code == 409, refused.text
    assert client.delete(url, headers=org.headers).status_code == 409
    assert client.get(url, headers=org.headers).json()["role"] == "admin"
