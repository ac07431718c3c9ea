"""The whole OpenID Connect code flow against a real provider (`oidc-provider`),
driven headless: start → provider → callback → one-time code → session."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from bastion.core.clock import clock
from tests.factories import PASSWORD, Factory, Org, bearer
from tests.sso.conftest import (
    CONSOLE_ORIGIN,
    follow_callback,
    new_domain,
    oidc_connection,
    query,
    sign_in,
    start,
    verified_domain,
)
from tests.sso.peers import CLIENTS, DnsServer, NodeProvider
from tests.sso.saml.conftest import IDP_SSO_URL, Idp


def test_sign_in_end_to_end_creates_the_user_and_a_session(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    org = sso_factory.org()
    domain = verified_domain(browser, dns, org)
    oidc_connection(browser, org, oidc_provider.issuer)
    sub, email = f"sub-{uuid.uuid4().hex[:8]}", f"ada@{domain}"
    oidc_provider.add_account(sub, email=email, email_verified=True, name="Ada", groups=[])

    done = sign_in(browser, oidc_provider, sub, email=email, return_to="/console/")

    assert done.status_code == 302, done.text
    assert done.headers["location"].startswith("/console/?code=")
    code = query(done.headers["location"])["code"]
    exchanged = browser.post("/v1/auth/sso/exchange", json={"code": code})
    assert exchanged.status_code == 200, exchanged.text
    token = exchanged.json()["token"]
    me = browser.get("/v1/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["org_id"] == org.id
    assert me.json()["role"] == "member"
    assert "ext" in me.json()["amr"]


def _org_with_sso(
    browser: TestClient, factory: Factory, dns: DnsServer, provider: NodeProvider, **extra: object
) -> tuple[Org, str, dict[str, object]]:
    org = factory.org()
    domain = verified_domain(browser, dns, org)
    conn = oidc_connection(browser, org, provider.issuer, **extra)
    return org, domain, conn


def _account(provider: NodeProvider, domain: str, **claims: object) -> tuple[str, str]:
    sub = f"sub-{uuid.uuid4().hex[:8]}"
    email = str(claims.pop("email", f"p{uuid.uuid4().hex[:6]}@{domain}"))
    claims.setdefault("email_verified", True)
    claims.setdefault("groups", [])
    provider.add_account(sub, email=email, name="Person", **claims)
    return sub, email


def _events(browser: TestClient, org: Org, type_: str) -> list[dict[str, object]]:
    response = browser.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": type_}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def _user(browser: TestClient, org: Org, email: str) -> dict[str, object]:
    users = browser.get(f"/v1/orgs/{org.id}/users", params={"limit": 200}, headers=org.headers)
    return next(u for u in users.json()["data"] if u["email"] == email)


def _team(browser: TestClient, org: Org, name: str) -> str:
    created = browser.post(f"/v1/orgs/{org.id}/teams", json={"name": name}, headers=org.headers)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _members(browser: TestClient, org: Org, team: str) -> list[str]:
    found = browser.get(f"/v1/orgs/{org.id}/teams/{team}", headers=org.headers)
    return list(found.json()["member_ids"])


def test_jit_maps_groups_to_role_and_teams_and_reapplies_them_each_sign_in(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    org = sso_factory.org()
    domain = verified_domain(browser, dns, org)
    ops, eng = _team(browser, org, "ops"), _team(browser, org, "eng")
    oidc_connection(
        browser,
        org,
        oidc_provider.issuer,
        role_mapping=[{"group": "bastion-managers", "role": "manager"}],
        team_mapping=[{"group": "ops", "team_id": ops}, {"group": "eng", "team_id": eng}],
        default_role="viewer",
    )
    sub, email = _account(oidc_provider, domain, groups=["bastion-managers", "ops"])

    first = sign_in(browser, oidc_provider, sub, email=email)
    assert "code=" in first.headers["location"], first.headers["location"]
    user = _user(browser, org, email)
    assert user["role"] == "manager"
    assert _members(browser, org, ops) == [user["id"]]
    assert _members(browser, org, eng) == []
    provisioned = _events(browser, org, "sso.user_provisioned")
    assert provisioned[0]["resource"]["id"] == user["id"]  # type: ignore[index]

    # The provider now says otherwise: the mapping follows at the next sign-in.
    oidc_provider.add_account(sub, email=email, email_verified=True, name="Person", groups=["eng"])
    browser.cookies.clear()
    again = sign_in(browser, oidc_provider, sub, email=email)
    assert "code=" in again.headers["location"], again.headers["location"]
    assert _user(browser, org, email)["role"] == "viewer"
    assert _members(browser, org, ops) == []
    assert _members(browser, org, eng) == [user["id"]]
    applied = _events(browser, org, "sso.mapping_applied")[0]["metadata"]
    assert applied["role"] == {"from": "manager", "to": "viewer"}  # type: ignore[index]
    assert applied["teams_added"] == [eng]
    assert applied["teams_removed"] == [ops]  # type: ignore[index]


def test_the_code_is_single_use(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    _, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    sub, email = _account(oidc_provider, domain)
    done = sign_in(browser, oidc_provider, sub, email=email)
    code = query(done.headers["location"])["code"]
    assert browser.post("/v1/auth/sso/exchange", json={"code": code}).status_code == 200
    replay = browser.post("/v1/auth/sso/exchange", json={"code": code})
    assert replay.status_code == 401
    assert replay.headers["content-type"] == "application/problem+json"
    assert code not in replay.text


def test_a_code_expires_after_sixty_seconds(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    _, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    sub, email = _account(oidc_provider, domain)
    code = query(sign_in(browser, oidc_provider, sub, email=email).headers["location"])["code"]
    clock.advance(61)
    assert browser.post("/v1/auth/sso/exchange", json={"code": code}).status_code == 401


def test_a_replayed_state_is_refused(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    org, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    sub, email = _account(oidc_provider, domain)
    started = start(browser, email=email)
    callback = oidc_provider.authenticate(started.headers["location"], sub)
    assert "code=" in follow_callback(browser, callback).headers["location"]
    replay = follow_callback(browser, callback)
    assert replay.status_code == 302
    assert replay.headers["location"] == "/console/?error=state_replayed"
    failed = _events(browser, org, "sso.signin_failed")
    assert failed[0]["reason"] == "state_replayed"
    assert failed[0]["outcome"] == "failure"


def test_a_tampered_state_is_a_problem_not_a_redirect(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    _, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    sub, email = _account(oidc_provider, domain)
    started = start(browser, email=email)
    callback = oidc_provider.authenticate(started.headers["location"], sub)
    params = query(callback)
    params["state"] = params["state"][:-2] + ("AA" if not params["state"].endswith("AA") else "BB")
    tampered = browser.get("/v1/auth/sso/oidc/callback", params=params, follow_redirects=False)
    assert tampered.status_code == 400
    assert tampered.json()["code"] == "sso_state_invalid"
    assert "location" not in tampered.headers


def test_a_state_from_another_browser_is_refused(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    """Login CSRF: an attacker's own sign-in, finished in the victim's browser."""
    _, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    sub, email = _account(oidc_provider, domain)
    started = start(browser, email=email)
    callback = oidc_provider.authenticate(started.headers["location"], sub)
    browser.cookies.clear()  # the victim's browser has no (or another) binding cookie
    refused = follow_callback(browser, callback)
    assert refused.headers["location"] == "/console/?error=browser_mismatch"


def test_a_state_expires_after_ten_minutes(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    _, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    sub, email = _account(oidc_provider, domain)
    started = start(browser, email=email)
    callback = oidc_provider.authenticate(started.headers["location"], sub)
    clock.advance(601)
    assert follow_callback(browser, callback).headers["location"] == (
        "/console/?error=state_expired"
    )


def test_open_redirects_are_refused_and_listed_origins_allowed(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    _, domain, conn = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    for bad in (
        "https://evil.example/console/",
        "//evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "https://console.example.com.evil.example/",
        "https://user@console.example.com/",
    ):
        refused = start(browser, email=f"a@{domain}", return_to=bad)
        assert refused.status_code == 400, bad
        assert refused.json()["code"] == "invalid_return_to"
        assert refused.json()["errors"][0]["field"] == "return_to"
        assert "location" not in refused.headers
    sub, _ = _account(oidc_provider, domain)
    done = sign_in(
        browser, oidc_provider, sub, connection=str(conn["id"]),
        return_to=f"{CONSOLE_ORIGIN}/console/?tab=1",
    )  # fmt: skip
    assert done.headers["location"].startswith(f"{CONSOLE_ORIGIN}/console/?tab=1&code=")


def test_an_email_outside_the_verified_domains_is_refused(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    org, domain, conn = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    sub, _ = _account(oidc_provider, domain, email=f"x@{new_domain()}")
    done = sign_in(browser, oidc_provider, sub, connection=str(conn["id"]))
    assert done.headers["location"] == "/console/?error=domain_not_verified"
    assert _events(browser, org, "sso.signin_failed")[0]["reason"] == "domain_not_verified"


def test_suspended_users_and_users_of_another_org_are_refused(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    org, domain, conn = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    sub, email = _account(oidc_provider, domain)
    assert "code=" in sign_in(browser, oidc_provider, sub, email=email).headers["location"]
    user = _user(browser, org, email)
    suspended = browser.patch(
        f"/v1/orgs/{org.id}/users/{user['id']}", json={"status": "suspended"}, headers=org.headers
    )
    assert suspended.status_code == 200, suspended.text
    browser.cookies.clear()
    refused = sign_in(browser, oidc_provider, sub, email=email)
    assert refused.headers["location"] == "/console/?error=user_suspended"

    # A user of another organisation whose email is in this org's verified domain.
    other = sso_factory.org()
    email2 = f"elsewhere-{uuid.uuid4().hex[:6]}@{domain}"
    made = browser.post(
        f"/v1/orgs/{other.id}/users",
        json={"email": email2, "name": "O", "role": "member", "password": PASSWORD},
        headers=other.headers,
    )
    assert made.status_code == 201, made.text
    sub2, _ = _account(oidc_provider, domain, email=email2)
    browser.cookies.clear()
    refused = sign_in(browser, oidc_provider, sub2, connection=str(conn["id"]))
    assert refused.headers["location"] == "/console/?error=user_in_other_org"


def test_without_jit_an_unknown_person_is_refused(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    _, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider, jit=False)
    sub, email = _account(oidc_provider, domain)
    assert sign_in(browser, oidc_provider, sub, email=email).headers["location"] == (
        "/console/?error=user_unknown"
    )


def test_an_existing_user_signs_in_and_keeps_their_account(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    org, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    email = f"existing-{uuid.uuid4().hex[:6]}@{domain}"
    created = browser.post(
        f"/v1/orgs/{org.id}/users",
        json={"email": email, "name": "E", "role": "viewer"},
        headers=org.headers,
    )
    assert created.status_code == 201, created.text
    sub, _ = _account(oidc_provider, domain, email=email)
    done = sign_in(browser, oidc_provider, sub, email=email)
    exchanged = browser.post(
        "/v1/auth/sso/exchange", json={"code": query(done.headers["location"])["code"]}
    )
    assert exchanged.json()["user_id"] == created.json()["id"]
    assert _user(browser, org, email)["status"] == "active"  # the invitation is fulfilled
    assert _user(browser, org, email)["role"] == "member"  # the connection's default


def test_the_provider_refusing_comes_back_as_an_error(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    org, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    started = start(browser, email=f"a@{domain}")
    state = query(started.headers["location"])["state"]
    answer = browser.get(
        "/v1/auth/sso/oidc/callback",
        params={"state": state, "error": "access_denied", "error_description": "<script>"},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/console/?error=idp_error"
    assert _events(browser, org, "sso.signin_failed")[0]["reason"] == "idp_error"


def test_an_unknown_email_domain_goes_back_with_an_error(browser: TestClient) -> None:
    answer = start(browser, email=f"a@{new_domain()}")
    assert answer.status_code == 302
    assert answer.headers["location"] == "/console/?error=no_connection"


def test_the_authorization_request_uses_pkce_s256_state_and_nonce(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    _, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    started = start(browser, email=f"a@{domain}")
    params = query(started.headers["location"])
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 43
    assert len(params["nonce"]) >= 43
    assert params["redirect_uri"] == "http://localhost:8400/v1/auth/sso/oidc/callback"
    cookie = started.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=lax", "path=/", "max-age=600"):
        assert attribute in cookie


def test_a_user_stays_bound_to_the_provider_account_that_first_signed_in(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    """An email handed to another account at the provider takes over nobody."""
    org, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    first, email = _account(oidc_provider, domain)
    assert "code=" in sign_in(browser, oidc_provider, first, email=email).headers["location"]
    second, _ = _account(oidc_provider, domain, email=email)  # the address, reassigned
    browser.cookies.clear()
    taken = sign_in(browser, oidc_provider, second, email=email)
    assert taken.headers["location"] == "/console/?error=subject_mismatch"
    # The first account, renamed at the provider, is not someone else either.
    oidc_provider.add_account(
        first, email=f"renamed-{uuid.uuid4().hex[:4]}@{domain}", email_verified=True, groups=[]
    )
    browser.cookies.clear()
    renamed = sign_in(browser, oidc_provider, first, email=email)
    assert renamed.headers["location"] == "/console/?error=subject_mismatch"
    assert _events(browser, org, "sso.signin_failed")[0]["reason"] == "subject_mismatch"


def test_a_browser_exchanges_only_codes_of_its_own_sign_ins(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    """Login CSRF at the last step: an attacker's code planted in a victim's page."""
    _, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    sub, email = _account(oidc_provider, domain)
    code = query(sign_in(browser, oidc_provider, sub, email=email).headers["location"])["code"]
    attackers_cookies = dict(browser.cookies)
    browser.cookies.clear()  # the victim's browser: another cookie, or none
    planted = browser.post(
        "/v1/auth/sso/exchange", json={"code": code}, headers={"Origin": "http://localhost:8400"}
    )
    assert planted.status_code == 401
    # The code is burnt by the attempt: not even its own browser can use it now.
    browser.cookies.update(attackers_cookies)
    assert browser.post("/v1/auth/sso/exchange", json={"code": code}).status_code == 401


def test_the_client_secret_is_sealed_and_no_token_reaches_the_logs(
    browser: TestClient,
    sso_factory: Factory,
    dns: DnsServer,
    oidc_provider: NodeProvider,
    sso_app: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _, domain, _ = _org_with_sso(browser, sso_factory, dns, oidc_provider)
    secret = CLIENTS[0]["client_secret"]
    with sso_app.state.bastion.sessions() as db:
        for table in ("sso_connections", "secrets", "secret_versions"):
            rows = db.execute(text(f"SELECT * FROM {table}")).all()  # noqa: S608 - fixed names
            assert secret not in repr(rows), table
    sub, email = _account(oidc_provider, domain)
    done = sign_in(browser, oidc_provider, sub, email=email)
    code = query(done.headers["location"])["code"]
    token = browser.post("/v1/auth/sso/exchange", json={"code": code}).json()["token"]
    out, err = capfd.readouterr()
    for value in ("eyJ", code, token, secret):
        assert value not in out
        assert value not in err


def test_the_start_dispatches_a_saml_connection_to_its_idp(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, idp: Idp
) -> None:
    org = sso_factory.org()
    domain = verified_domain(browser, dns, org)
    created = browser.post(
        f"/v1/orgs/{org.id}/sso-connections",
        json={
            "type": "saml",
            "name": "saml",
            "idp_metadata_xml": idp.metadata((idp.keys.primary,)),
        },
        headers=org.headers,
    )
    assert created.status_code == 201, created.text
    answer = start(browser, email=f"a@{domain}")
    assert answer.status_code == 302
    assert answer.headers["location"].startswith(IDP_SSO_URL + "?SAMLRequest="), answer.headers
