"""Sessions: listing, revocation, logout, idle and absolute timeouts, per-org settings."""

from __future__ import annotations

from fastapi.testclient import TestClient

from bastion.core.clock import clock
from tests.factories import Factory, bearer


def _me(client: TestClient, token: str) -> int:
    return client.get("/v1/me", headers=bearer(token)).status_code


def test_logout_ends_the_session_at_once(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    token = factory.login(org.admin.email)
    assert _me(client, token) == 200
    assert client.post("/v1/auth/logout", headers=bearer(token)).status_code == 204
    assert _me(client, token) == 401
    assert _me(client, org.admin.token) == 200  # other sessions are untouched


def test_list_and_revoke_sessions(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    second = factory.login(org.admin.email)
    listed = client.get("/v1/me/sessions", headers=org.admin.headers).json()["data"]
    assert len(listed) == 2
    assert [s["current"] for s in listed].count(True) == 1
    other = next(s for s in listed if not s["current"])
    assert (
        client.delete(f"/v1/me/sessions/{other['id']}", headers=org.admin.headers).status_code
        == 204
    )
    assert _me(client, second) == 401
    assert _me(client, org.admin.token) == 200


def test_revoke_all_but_current(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    others = [factory.login(org.admin.email) for _ in range(3)]
    assert client.delete("/v1/me/sessions", headers=org.admin.headers).status_code == 204
    assert all(_me(client, t) == 401 for t in others)
    assert _me(client, org.admin.token) == 200


def test_cannot_revoke_someone_elses_session(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    theirs = client.get("/v1/me/sessions", headers=member.headers).json()["data"][0]["id"]
    response = client.delete(f"/v1/me/sessions/{theirs}", headers=org.admin.headers)
    assert response.status_code == 404
    assert _me(client, member.token) == 200


def test_idle_timeout(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    token = factory.login(org.admin.email)
    clock.advance(29 * 60)
    assert _me(client, token) == 200  # activity resets the idle timer
    clock.advance(29 * 60)
    assert _me(client, token) == 200
    clock.advance(31 * 60)
    assert _me(client, token) == 401


def test_absolute_timeout(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    token = factory.login(org.admin.email)
    for _ in range(12 * 3):  # stay active every 20 minutes for 12 hours
        clock.advance(20 * 60)
        if _me(client, token) != 200:
            break
    assert clock.now()  # the loop ran
    assert _me(client, token) == 401


def test_org_overrides_session_timeouts(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    response = client.patch(
        f"/v1/orgs/{org.id}", json={"session_idle_timeout": 120}, headers=org.headers
    )
    assert response.status_code == 200
    assert response.json()["session_idle_timeout"] == 120
    token = factory.login(org.admin.email)
    clock.advance(100)
    assert _me(client, token) == 200
    clock.advance(121)
    assert _me(client, token) == 401


def test_session_token_with_wrong_secret_is_rejected(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    forged = org.admin.token[:-4] + ("AAAA" if not org.admin.token.endswith("AAAA") else "BBBB")
    assert _me(client, forged) == 401
    assert _me(client, "bss_garbage") == 401
    assert _me(client, "bat_run_token_not_accepted_here") == 401
    assert _me(client, "Basic something") == 401
