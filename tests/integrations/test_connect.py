"""Registering and connecting an integration against a real OAuth server: the code flow
with PKCE, the state's single use, expiry and binding, return_to, sealing."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi.testclient import TestClient
from sqlalchemy import Text, select, type_coerce

from bastion.core.clock import clock
from bastion.registry import metadata
from tests.factories import Factory
from tests.integrations.conftest import (
    connect,
    events,
    follow,
    query,
    register,
    start,
    tokens_of,
)
from tests.integrations.peers import CLIENT, REDIRECT_URI, OAuthServer


def test_connect_end_to_end_with_pkce(
    browser: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    created = register(browser, org, oauth_server)
    assert created["status"] == "pending"
    assert created["id"].startswith("int_")
    assert created["redirect_uri"] == REDIRECT_URI
    started = start(browser, org, org.admin, created["id"], return_to="/console/x?tab=1")
    assert started.status_code == 302, started.text
    location = started.headers["location"]
    assert location.startswith(oauth_server.endpoints["authorize_url"] + "?")
    params = query(location)
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 40
    assert params["redirect_uri"] == REDIRECT_URI
    assert params["scope"] == "read"
    assert "bastion-int" in started.headers["set-cookie"]
    assert "httponly" in started.headers["set-cookie"].lower()

    done = follow(browser, oauth_server.authorize(location, "acct-1"))

    assert done.status_code == 302, done.text
    back = urlsplit(done.headers["location"])
    assert back.path == "/console/x"
    assert query(done.headers["location"]) == {
        "tab": "1",
        "integration": created["id"],
        "status": "connected",
    }
    got = browser.get(f"/v1/orgs/{org.id}/integrations/{created['id']}", headers=org.headers)
    assert got.json()["status"] == "connected"
    assert got.json()["connected_by"] == org.admin.user_id
    assert got.json()["expires_at"] is not None
    [event] = events(browser, org, "integration.connected")
    assert event["actor"]["id"] == org.admin.user_id


def test_tokens_and_client_secret_are_sealed(
    browser: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    integration = connect(browser, org, oauth_server)
    tokens = tokens_of(factory, integration["id"])
    assert tokens.refresh_token
    assert oauth_server.introspect(tokens.access_token)["active"]
    needles = [tokens.access_token, tokens.refresh_token, CLIENT["client_secret"]]
    # Every row of every table, as text: none holds a token or the client secret.
    with factory.state.sessions() as db:
        # Raw values (no type processing: other tests store deliberately broken JSON).
        dump = "\n".join(
            repr(row)
            for table in metadata.sorted_tables
            for row in db.execute(select(*(type_coerce(c, Text) for c in table.c)))
        )
    assert integration["id"] in dump  # the dump is real
    for needle in needles:
        assert needle not in dump
    # … nor any answer: listing, reading, the audit trail.
    listed = browser.get(f"/v1/orgs/{org.id}/integrations", headers=org.headers).text
    audit = browser.get(f"/v1/orgs/{org.id}/audit-events", headers=org.headers).text
    for needle in needles:
        assert needle not in listed
        assert needle not in audit
    assert "client_secret" not in listed


def test_state_is_single_use(
    browser: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    created = register(browser, org, oauth_server)
    started = start(browser, org, org.admin, created["id"])
    callback = oauth_server.authorize(started.headers["location"], "acct-1")
    assert follow(browser, callback).status_code == 302
    again = follow(browser, callback)
    assert again.status_code == 400
    assert again.json()["code"] == "integration_state_invalid"
    refused = events(browser, org, "integration.connect_failed")
    assert [e["reason"] for e in refused] == ["state_replayed"]


def test_expired_state_is_refused(
    browser: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    created = register(browser, org, oauth_server)
    started = start(browser, org, org.admin, created["id"])
    callback = oauth_server.authorize(started.headers["location"], "acct-1")
    clock.advance(601)
    refused = follow(browser, callback)
    assert refused.status_code == 400
    got = browser.get(f"/v1/orgs/{org.id}/integrations/{created['id']}", headers=org.headers)
    assert got.json()["status"] == "pending"


def test_another_users_state_is_refused(
    browser: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    """Someone who started a connect sends the provider's answer to another person: that
    person's browser does not carry the binding cookie, so nothing is connected."""
    org = factory.org()
    other = factory.member(org, role="admin")
    created = register(browser, org, oauth_server)
    started = start(browser, org, org.admin, created["id"])
    callback = oauth_server.authorize(started.headers["location"], "attacker")
    browser.cookies.clear()
    own = start(browser, org, other, created["id"])  # the other person's own cookie
    assert own.status_code == 302
    refused = follow(browser, callback)
    assert refused.status_code == 400
    assert refused.json()["code"] == "integration_state_invalid"
    got = browser.get(f"/v1/orgs/{org.id}/integrations/{created['id']}", headers=org.headers)
    assert got.json()["status"] == "pending"
    reasons = [e["reason"] for e in events(browser, org, "integration.connect_failed")]
    assert reasons == ["browser_mismatch"]


def test_a_user_who_lost_the_right_meanwhile_connects_nothing(
    browser: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    person = factory.member(org, role="admin")
    created = register(browser, org, oauth_server)
    started = start(browser, org, person, created["id"])
    callback = oauth_server.authorize(started.headers["location"], "acct-1")
    demoted = browser.patch(
        f"/v1/orgs/{org.id}/users/{person.user_id}", json={"role": "member"}, headers=org.headers
    )
    assert demoted.status_code == 200, demoted.text
    done = follow(browser, callback)
    assert done.status_code == 302
    assert query(done.headers["location"]) == {"error": "not_allowed"}
    got = browser.get(f"/v1/orgs/{org.id}/integrations/{created['id']}", headers=org.headers)
    assert got.json()["status"] == "pending"


def test_return_to_must_stay_on_this_origin(
    browser: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    created = register(browser, org, oauth_server)
    for bad in (
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
        "http://localhost:8400@evil.example/",
        "console",
    ):
        refused = start(browser, org, org.admin, created["id"], return_to=bad)
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["code"] == "invalid_return_to"
        assert "evil" not in refused.text
    same_origin = start(
        browser, org, org.admin, created["id"], return_to="http://localhost:8400/console/"
    )
    assert same_origin.status_code == 302


def test_unknown_state_and_provider_errors(
    browser: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    missing = browser.get("/v1/integrations/oauth/callback", params={"code": "x"})
    assert missing.status_code == 400
    unknown = browser.get(
        "/v1/integrations/oauth/callback", params={"code": "x", "state": "y" * 43}
    )
    assert unknown.status_code == 400
    org = factory.org()
    created = register(browser, org, oauth_server)
    started = start(browser, org, org.admin, created["id"])
    state = query(started.headers["location"])["state"]
    denied = browser.get(
        "/v1/integrations/oauth/callback",
        params={"state": state, "error": "access_denied"},
        follow_redirects=False,
    )
    assert denied.status_code == 302
    assert query(denied.headers["location"]) == {"error": "access_denied"}


def test_a_code_without_the_pkce_verifier_is_refused_by_the_provider(
    browser: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    """The code is bound to the challenge: a code presented on another connect's state
    (so with another verifier) is refused by the provider, and nothing is connected."""
    org = factory.org()
    created = register(browser, org, oauth_server)
    first = start(browser, org, org.admin, created["id"])
    callback = oauth_server.authorize(first.headers["location"], "acct-1")
    second = start(browser, org, org.admin, created["id"])
    swapped = {"code": query(callback)["code"], "state": query(second.headers["location"])["state"]}
    done = browser.get("/v1/integrations/oauth/callback", params=swapped, follow_redirects=False)
    assert done.status_code == 302
    assert query(done.headers["location"]) == {"error": "invalid_grant"}
    with factory.state.sessions() as db:
        from bastion.integrations.models import Integration

        row = db.execute(select(Integration).where(Integration.id == created["id"])).scalar_one()
        assert row.tokens_secret_id is None
