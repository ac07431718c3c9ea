"""Introspection (RFC 7662) and revocation (RFC 7009): a client sees and revokes only
what it may; a revoked token stops working at once, on every worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.api.app import create_app
from bastion.core.clock import clock
from bastion.core.config import Settings
from tests.conftest import make_settings
from tests.factories import Factory
from tests.oauth.support import FORM, Machine, access_token, basic, bearer, machine


@pytest.fixture
def other(data_dir: Path, database_url: str) -> Iterator[TestClient]:
    """A second worker: its own app, its own credential cache, the same database."""
    app = create_app(make_settings(data_dir, database_url))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _introspect(client: TestClient, caller: Machine, token: str) -> Any:
    response = client.post(
        "/v1/oauth/introspect", data={"token": token}, headers={**FORM, **caller.basic}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _revoke(client: TestClient, caller: Machine, token: str, *, post: bool = False) -> None:
    if post:
        data = {"token": token, "client_id": caller.client_id, "client_secret": caller.secret}
        response = client.post("/v1/oauth/revoke", data=data, headers=FORM)
    else:
        response = client.post(
            "/v1/oauth/revoke",
            data={"token": token, "token_type_hint": "access_token"},
            headers={**FORM, **caller.basic},
        )
    assert response.status_code == 200, response.text


def test_introspection_shows_an_active_token_of_the_callers_organisation(
    client: TestClient, factory: Factory, settings: Settings
) -> None:
    org = factory.org()
    m = machine(client, org, role="viewer")
    token = access_token(client, m, scope="users:read")
    found = _introspect(client, m, token)
    assert found["active"] is True
    assert found["sub"] == m.account_id
    assert found["client_id"] == m.client_id
    assert found["org"] == org.id
    assert found["scope"] == "users:read"
    assert found["token_type"] == "Bearer"
    assert found["iss"] == settings.public_url
    assert found["exp"] - found["iat"] == settings.oauth_token_ttl
    # Another client of the same organisation sees it too.
    sibling = machine(client, org)
    assert _introspect(client, sibling, token)["active"] is True


def test_introspection_says_inactive_for_anything_the_caller_may_not_see(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    m = machine(client, org)
    token = access_token(client, m)
    stranger = machine(client, factory.org())
    assert _introspect(client, stranger, token) == {"active": False}  # another organisation
    for garbage in ("", "x", "eyJhbGciOiJub25lIn0.e30.", token + "x"):
        if garbage:
            assert _introspect(client, m, garbage) == {"active": False}
    revoked = access_token(client, m)
    _revoke(client, m, revoked)
    assert _introspect(client, m, revoked) == {"active": False}
    clock.advance(901)
    assert _introspect(client, m, token) == {"active": False}  # expired


def test_introspection_needs_an_authenticated_client(client: TestClient, factory: Factory) -> None:
    m = machine(client, factory.org())
    token = access_token(client, m)
    for headers in ({**FORM}, {**FORM, **basic(m.client_id, "wrong")}, {**FORM, **bearer(token)}):
        response = client.post("/v1/oauth/introspect", data={"token": token}, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
    missing = client.post("/v1/oauth/introspect", data={}, headers={**FORM, **m.basic})
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")


def test_revocation_is_immediate_on_every_worker(
    client: TestClient, other: TestClient, factory: Factory
) -> None:
    org = factory.org()
    m = machine(client, org)
    token = access_token(client, m)
    cache = other.app.state.bastion.auth_cache  # type: ignore[attr-defined]
    before = cache.hits
    for _ in range(3):
        assert other.get("/v1/me", headers=bearer(token)).status_code == 200
    assert cache.hits >= before + 2  # the other worker serves it from its cache
    _revoke(client, m, token, post=True)
    assert other.get("/v1/me", headers=bearer(token)).status_code == 401
    assert client.get("/v1/me", headers=bearer(token)).status_code == 401
    # Revoking again, or a token that is already gone, is still a 200.
    _revoke(client, m, token)
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "oauth_token.revoked"},
        headers=org.headers,
    ).json()["data"]
    assert len(events) == 1
    assert events[0]["resource"]["id"] == m.client_id
    # The client's other tokens still work.
    assert client.get("/v1/me", headers=bearer(access_token(client, m))).status_code == 200


def test_revocation_answers_200_and_changes_nothing_for_what_is_not_the_callers(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    m = machine(client, org)
    token = access_token(client, m)
    stranger = machine(client, factory.org())
    sibling = machine(client, org)
    for caller in (stranger, sibling):
        _revoke(client, caller, token)
        assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    for garbage in ("unknown", "eyJhbGciOiJub25lIn0.e30.", "a.b.c"):
        _revoke(client, m, garbage)
    wrong = client.post(
        "/v1/oauth/revoke",
        data={"token": token},
        headers={**FORM, **basic(m.client_id, "wrong")},
    )
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    assert client.get("/v1/me", headers=bearer(token)).status_code == 200
