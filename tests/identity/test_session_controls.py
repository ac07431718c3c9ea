"""Session controls: an admin sees and ends one user's sessions (at once, on the next
request, cache or not), the per-organisation cap on parallel sessions (the oldest end
first), and the refusals (other organisation 404, no permission 403, outranked 403)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from bastion.core.clock import clock
from tests.factories import PASSWORD, Factory, Org, bearer
from tests.identity.mfa_support import enrol_totp, sign_in_with_totp


def _sessions(client: TestClient, org: Org, user: str, headers: dict[str, str]) -> Any:
    return client.get(f"/v1/orgs/{org.id}/users/{user}/sessions", headers=headers)


def _end(client: TestClient, org: Org, user: str, headers: dict[str, str]) -> Any:
    return client.delete(f"/v1/orgs/{org.id}/users/{user}/sessions", headers=headers)


def test_admin_lists_and_ends_a_users_sessions(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    second = factory.login(member.email)
    for token in (member.token, second):  # both cached by a first use
        assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    listed = _sessions(client, org, member.user_id, org.headers)
    assert listed.status_code == 200
    assert len(listed.json()["data"]) == 2
    assert {"id", "ip", "user_agent", "created_at", "expires_at"} <= set(listed.json()["data"][0])

    assert _end(client, org, member.user_id, org.headers).status_code == 204
    for token in (member.token, second):
        assert client.get("/v1/me", headers=bearer(token)).status_code == 401
    assert _sessions(client, org, member.user_id, org.headers).json()["data"] == []
    # The admin's own session is untouched.
    assert client.get("/v1/me", headers=org.admin.headers).status_code == 200
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "session.revoked"},
        headers=org.headers,
    ).json()["data"]
    assert events[0]["metadata"] == {
        "count": 2,
        "ended_by_admin": True,
        "user_id": member.user_id,
    }
    assert events[0]["resource"]["id"] == member.user_id


def test_admin_ends_one_session_of_a_user(client: TestClient, factory: Factory) -> None:
    org, other = factory.org(), factory.org("Other")
    member = factory.member(org)
    second = factory.login(member.email)
    for token in (member.token, second):
        assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    listed = _sessions(client, org, member.user_id, org.headers).json()["data"]
    newest = listed[0]["id"]  # the second sign-in's
    base = f"/v1/orgs/{org.id}/users/{member.user_id}/sessions"
    assert client.delete(f"{base}/{newest}", headers=org.headers).status_code == 204
    assert client.get("/v1/me", headers=bearer(second)).status_code == 401
    assert client.get("/v1/me", headers=bearer(member.token)).status_code == 200
    # Unknown, mistyped, another user's and another organisation's sessions are 404.
    admins = _sessions(client, org, org.admin.user_id, org.headers).json()["data"]
    theirs = _sessions(client, other, other.admin.user_id, other.headers).json()["data"]
    for missing in ("ses_01ARZ3NDEKTSV4RRFFQ69G5FAV", "usr_x", admins[0]["id"]):
        assert client.delete(f"{base}/{missing}", headers=org.headers).status_code == 404
    foreign = f"/v1/orgs/{other.id}/users/{other.admin.user_id}/sessions/{theirs[0]['id']}"
    assert client.delete(foreign, headers=org.headers).status_code == 404
    assert client.get("/v1/me", headers=other.admin.headers).status_code == 200
    event = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "session.revoked"},
        headers=org.headers,
    ).json()["data"][0]
    assert event["resource"] == {"type": "session", "id": newest}
    assert event["metadata"]["user_id"] == member.user_id


def test_an_admin_ends_everyones_sessions_but_their_own(
    client: TestClient, factory: Factory
) -> None:
    org, other = factory.org(), factory.org("Other")
    member, manager = factory.member(org), factory.member(org, "manager")
    others = [member.token, manager.token, factory.login(org.admin.email)]
    for token in [*others, org.admin.token, other.admin.token]:
        assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    url = f"/v1/orgs/{org.id}/sessions"
    assert client.delete(url, headers=manager.headers).status_code == 403  # not org:manage
    assert client.delete(f"/v1/orgs/{other.id}/sessions", headers=org.headers).status_code == 404
    assert client.delete(url, headers=org.admin.headers).status_code == 204
    for token in others:  # the admin's other session too
        assert client.get("/v1/me", headers=bearer(token)).status_code == 401
    assert client.get("/v1/me", headers=org.admin.headers).status_code == 200  # the caller's
    assert client.get("/v1/me", headers=other.admin.headers).status_code == 200
    assert client.get("/v1/me", headers=org.headers).status_code == 200  # keys stay
    event = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "session.revoked"},
        headers=org.headers,
    ).json()["data"][0]
    assert event["metadata"] == {"count": 3, "ended_by_admin": True, "everyone": True}


def test_a_user_may_see_their_own_sessions_but_not_anothers(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    viewer = factory.member(org, "viewer")
    member = factory.member(org)
    own = _sessions(client, org, member.user_id, member.headers)
    assert own.status_code == 200
    assert [s["current"] for s in own.json()["data"]] == [True]
    assert _sessions(client, org, org.admin.user_id, member.headers).status_code == 403
    assert _end(client, org, member.user_id, viewer.headers).status_code == 403
    assert _end(client, org, org.admin.user_id, member.headers).status_code == 403
    assert client.get("/v1/me", headers=member.headers).status_code == 200


def test_a_manager_cannot_end_an_admins_sessions(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    manager = factory.member(org, "manager")
    answer = _end(client, org, org.admin.user_id, manager.headers)
    assert answer.status_code in (403, 404)  # never allowed
    assert client.get("/v1/me", headers=org.admin.headers).status_code == 200


def test_another_organisations_user_is_404(client: TestClient, factory: Factory) -> None:
    org, other = factory.org(), factory.org("Other")
    stranger = other.admin.user_id
    assert _sessions(client, org, stranger, org.headers).status_code == 404
    assert _end(client, org, stranger, org.headers).status_code == 404
    assert _sessions(client, other, other.admin.user_id, org.headers).status_code == 404
    assert _end(client, other, other.admin.user_id, org.headers).status_code == 404
    assert _end(client, org, "usr_01ZZZZZZZZZZZZZZZZZZZZZZZZ", org.headers).status_code == 404
    assert _end(client, org, "key_01ZZZZZZZZZZZZZZZZZZZZZZZZ", org.headers).status_code == 404
    assert client.get("/v1/me", headers=other.admin.headers).status_code == 200
    assert _sessions(client, org, stranger, {}).status_code == 401


def test_cap_on_parallel_sessions_ends_the_oldest(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    shown = client.get(f"/v1/orgs/{org.id}", headers=org.headers).json()
    assert shown["max_sessions_per_user"] is None  # unlimited by default
    answer = client.patch(
        f"/v1/orgs/{org.id}", json={"max_sessions_per_user": 2}, headers=org.headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["max_sessions_per_user"] == 2
    first = member.token
    assert client.get("/v1/me", headers=bearer(first)).status_code == 200  # cached
    clock.advance(1)
    second = factory.login(member.email)
    clock.advance(1)
    third = factory.login(member.email)
    assert client.get("/v1/me", headers=bearer(first)).status_code == 401
    for token in (second, third):
        assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    clock.advance(1)
    fourth = factory.login(member.email)
    assert client.get("/v1/me", headers=bearer(second)).status_code == 401
    for token in (third, fourth):
        assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "session.revoked"},
        headers=org.headers,
    ).json()["data"]
    assert events[0]["reason"] == "session_limit"
    assert events[0]["metadata"]["count"] == 1

    lifted = client.patch(
        f"/v1/orgs/{org.id}", json={"max_sessions_per_user": None}, headers=org.headers
    )
    assert lifted.json()["max_sessions_per_user"] is None
    fifth = factory.login(member.email)
    for token in (third, fourth, fifth):
        assert client.get("/v1/me", headers=bearer(token)).status_code == 200


def test_bad_caps_are_refused(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    for cap in (0, -1, "2", 1001):
        answer = client.patch(
            f"/v1/orgs/{org.id}", json={"max_sessions_per_user": cap}, headers=org.headers
        )
        assert answer.status_code == 422
        assert answer.json()["errors"][0]["field"] == "max_sessions_per_user"


def test_the_cap_counts_sessions_made_with_a_second_factor(
    client: TestClient, factory: Factory
) -> None:
    """The cap applies wherever a session is born: after the second factor too (and an
    mfa token, which is no session, does not count)."""
    org = factory.org()
    member = factory.member(org)
    enrolled = enrol_totp(client, member.headers)
    answer = client.patch(
        f"/v1/orgs/{org.id}", json={"max_sessions_per_user": 1}, headers=org.headers
    )
    assert answer.status_code == 200, answer.text
    first = member.headers
    assert client.get("/v1/me", headers=first).status_code == 200  # cached
    clock.advance(1)
    pending = client.post("/v1/auth/login", json={"email": member.email, "password": PASSWORD})
    assert pending.json()["mfa_required"] is True
    assert client.get("/v1/me", headers=first).status_code == 200  # no session yet
    second = sign_in_with_totp(client, member.email, enrolled.secret)
    assert client.get("/v1/me", headers=first).status_code == 401
    assert client.get("/v1/me", headers=second).json()["amr"] == ["pwd", "otp", "mfa"]
    clock.advance(1)
    third = sign_in_with_totp(client, member.email, enrolled.secret)
    assert client.get("/v1/me", headers=second).status_code == 401
    assert client.get("/v1/me", headers=third).status_code == 200
    listed = _sessions(client, org, member.user_id, org.headers).json()["data"]
    assert len(listed) == 1
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "session.revoked"},
        headers=org.headers,
    ).json()["data"]
    assert [e["reason"] for e in events] == ["session_limit", "session_limit"]
