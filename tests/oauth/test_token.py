"""The token endpoint (RFC 6749 §4.4): both client authentication methods, the error
responses of §5.2, scopes, and the access token as an independent library sees it."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from bastion.core.config import Settings
from tests.factories import Factory
from tests.oauth.support import (
    FORM,
    access_token,
    basic,
    bearer,
    machine,
    request_token,
    verify_independently,
)


@pytest.mark.parametrize("method", ["basic", "post"])
def test_a_client_gets_a_token_that_the_published_keys_verify(
    client: TestClient, factory: Factory, settings: Settings, method: str
) -> None:
    org = factory.org()
    m = machine(client, org)
    response = request_token(client, m, method=method)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.oauth_token_ttl == 900
    assert set(body) == {"access_token", "token_type", "expires_in"}
    claims = verify_independently(client, body["access_token"], settings.public_url)
    assert claims["iss"] == settings.public_url
    assert claims["aud"] == f"{settings.public_url}/v1"
    assert claims["sub"] == m.account_id
    assert claims["org"] == org.id
    assert claims["client_id"] == m.client_id
    assert claims["exp"] - claims["iat"] == 900
    assert claims["jti"].startswith("oat_")
    header = base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "==")
    assert b'"alg":"EdDSA"' in header
    assert b'"typ":"at+jwt"' in header


def test_the_token_works_on_the_api_as_its_service_account(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    m = machine(client, org, role="viewer")
    headers = bearer(access_token(client, m))
    me = client.get("/v1/me", headers=headers)  # a lean (fast-path) route
    assert me.status_code == 200, me.text
    assert me.json()["principal_type"] == "service_account"
    assert me.json()["id"] == m.account_id
    assert me.json()["role"] == "viewer"
    assert client.get(f"/v1/orgs/{org.id}/users", headers=headers).status_code == 200
    # A viewer reads but does not manage; another organisation does not exist for it.
    created = client.post(f"/v1/orgs/{org.id}/teams", json={"name": "t"}, headers=headers)
    assert created.status_code == 403
    other = factory.org()
    assert client.get(f"/v1/orgs/{other.id}/users", headers=headers).status_code == 404
    # A lean POST route: the authorization question of a manager's token.
    n = machine(client, org, role="manager")
    source = client.post(f"/v1/orgs/{org.id}/sources", json={"name": "s"}, headers=org.headers)
    check = client.post(
        f"/v1/orgs/{org.id}/authz/check",
        json={"subject": org.admin.user_id, "action": "read", "resource": source.json()["id"]},
        headers=bearer(access_token(client, n)),
    )
    assert check.status_code == 200, check.text
    assert check.json()["allowed"] is True
    denied = client.post(
        f"/v1/orgs/{org.id}/authz/check",
        json={"subject": org.admin.user_id, "action": "read", "resource": source.json()["id"]},
        headers=headers,
    )
    assert denied.status_code == 403  # a viewer may not ask about others


def test_wrong_secret_unknown_client_and_none_are_invalid_client(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    m = machine(client, org)
    grant = {"grant_type": "client_credentials"}
    wrong = client.post(
        "/v1/oauth/token", data=grant, headers={**FORM, **basic(m.client_id, m.secret + "x")}
    )
    unknown_id = "oac_" + "0" * 26
    unknown = client.post(
        "/v1/oauth/token", data=grant, headers={**FORM, **basic(unknown_id, m.secret)}
    )
    posted = client.post(
        "/v1/oauth/token",
        data={**grant, "client_id": m.client_id, "client_secret": "nope"},
        headers=FORM,
    )
    nothing = client.post("/v1/oauth/token", data=grant, headers=FORM)
    for response in (wrong, unknown, posted, nothing):
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.headers["cache-control"] == "no-store"
        assert m.secret not in response.text
    assert wrong.json() == unknown.json()
    # Another client's secret is no secret of this client.
    n = machine(client, org)
    swapped = client.post(
        "/v1/oauth/token", data=grant, headers={**FORM, **basic(m.client_id, n.secret)}
    )
    assert swapped.status_code == 401


def test_refused_requests_are_audited_without_the_secret(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    m = machine(client, org)
    client.post(
        "/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={**FORM, **basic(m.client_id, "wrong-secret")},
    )
    assert request_token(client, m).status_code == 200
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"resource": m.client_id},
        headers=org.headers,
    ).json()["data"]
    types = [e["type"] for e in events]
    assert "oauth_token.issued" in types
    assert "oauth_token.refused" in types
    assert "oauth_client.created" in types
    assert m.secret not in str(events)
    issued = next(e for e in events if e["type"] == "oauth_token.issued")
    assert issued["metadata"]["jti"].startswith("oat_")
    assert issued["metadata"]["method"] == "client_secret_basic"


def test_malformed_requests(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    m = machine(client, org)
    url = "/v1/oauth/token"
    both = client.post(
        url,
        data={"grant_type": "client_credentials", "client_id": m.client_id, "client_secret": "x"},
        headers={**FORM, **m.basic},
    )
    assert (both.status_code, both.json()["error"]) == (400, "invalid_request")
    missing = client.post(url, data={}, headers={**FORM, **m.basic})
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    other_grant = client.post(url, data={"grant_type": "password"}, headers={**FORM, **m.basic})
    assert (other_grant.status_code, other_grant.json()["error"]) == (
        400,
        "unsupported_grant_type",
    )
    as_json = client.post(url, json={"grant_type": "client_credentials"}, headers=m.basic)
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    repeated = client.post(
        url,
        content="grant_type=client_credentials&grant_type=client_credentials",
        headers={**FORM, **m.basic},
    )
    assert (repeated.status_code, repeated.json()["error"]) == (400, "invalid_request")
    bad_basic = client.post(
        url,
        data={"grant_type": "client_credentials"},
        headers={**FORM, "Authorization": "Basic !!!"},
    )
    assert (bad_basic.status_code, bad_basic.json()["error"]) == (401, "invalid_client")


def test_scopes(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    m = machine(client, org, role="manager")
    unknown = request_token(client, m, scope="users:read no:such")
    assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_scope")
    beyond = request_token(client, m, scope="org:manage")  # not a manager's
    assert (beyond.status_code, beyond.json()["error"]) == (400, "invalid_scope")
    assert request_token(client, m, scope="").status_code == 200  # empty: none asked
    narrowed = request_token(client, m, scope="users:read")
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "users:read"
    headers = bearer(narrowed.json()["access_token"])
    me = client.get("/v1/me", headers=headers).json()
    assert me["permissions"] == ["users:read"]
    assert client.get(f"/v1/orgs/{org.id}/users", headers=headers).status_code == 200
    assert client.get(f"/v1/orgs/{org.id}/teams", headers=headers).status_code == 403

    # A client made with scopes: its tokens carry at most those.
    limited = machine(client, org, role="manager", scopes=["teams:read"])
    token = request_token(client, limited)
    assert token.json()["scope"] == "teams:read"
    assert request_token(client, limited, scope="users:read").json()["error"] == "invalid_scope"


def test_a_suspended_or_deleted_account_and_a_deleted_client_stop_at_once(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    m = machine(client, org)
    headers = bearer(access_token(client, m))
    for _ in range(2):  # warm the credential cache
        assert client.get("/v1/me", headers=headers).status_code == 200
    account = f"/v1/orgs/{org.id}/service-accounts/{m.account_id}"
    assert (
        client.patch(account, json={"status": "suspended"}, headers=org.headers).status_code == 200
    )
    assert client.get("/v1/me", headers=headers).status_code == 401
    refused = request_token(client, m)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    assert client.patch(account, json={"status": "active"}, headers=org.headers).status_code == 200
    assert client.get("/v1/me", headers=headers).status_code == 200

    gone = client.delete(f"{account}/oauth-clients/{m.client_id}", headers=org.headers)
    assert gone.status_code == 204
    assert client.get("/v1/me", headers=headers).status_code == 401
    assert request_token(client, m).status_code == 401

    n = machine(client, org)
    headers = bearer(access_token(client, n))
    assert client.get("/v1/me", headers=headers).status_code == 200
    account = f"/v1/orgs/{org.id}/service-accounts/{n.account_id}"
    assert client.delete(account, headers=org.headers).status_code == 204
    assert client.get("/v1/me", headers=headers).status_code == 401


def test_the_token_follows_the_service_accounts_role(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    m = machine(client, org, role="manager")
    headers = bearer(access_token(client, m))
    teams = f"/v1/orgs/{org.id}/teams"
    assert client.post(teams, json={"name": "a"}, headers=headers).status_code == 201
    account = f"/v1/orgs/{org.id}/service-accounts/{m.account_id}"
    assert client.patch(account, json={"role": "viewer"}, headers=org.headers).status_code == 200
    assert client.post(teams, json={"name": "b"}, headers=headers).status_code == 403
    assert client.get("/v1/me", headers=headers).json()["role"] == "viewer"


def test_a_token_expires(client: TestClient, factory: Factory) -> None:
    from bastion.core.clock import clock

    org = factory.org()
    m = machine(client, org)
    headers = bearer(access_token(client, m))
    assert client.get("/v1/me", headers=headers).status_code == 200
    # The clock moves on in real time too: leave a loaded machine's seconds of slack.
    clock.advance(870)
    assert client.get("/v1/me", headers=headers).status_code == 200
    clock.advance(31)
    assert client.get("/v1/me", headers=headers).status_code == 401


def test_failures_are_throttled_per_client(
    client: TestClient, factory: Factory, settings: Settings
) -> None:
    org = factory.org()
    m = machine(client, org)
    wrong = {**FORM, **basic(m.client_id, "wrong")}
    for _ in range(settings.login_failures_per_account):
        response = client.post(
            "/v1/oauth/token", data={"grant_type": "client_credentials"}, headers=wrong
        )
        assert response.status_code == 401
    throttled = request_token(client, m)  # even the right secret waits now
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
