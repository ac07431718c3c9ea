"""Enforced SSO: users of the organisation's verified domains cannot sign in by
password; break-glass admins keep a password + second-factor sign-in when allowed."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from bastion.core.clock import clock
from tests.factories import PASSWORD, Factory, Org, bearer, step_up
from tests.identity.mfa_support import code, enrol_totp, finish, next_step
from tests.sso.conftest import new_domain, verified_domain
from tests.sso.peers import DnsServer


def _person(browser: TestClient, org: Org, domain: str, role: str) -> str:
    email = f"{role}-{uuid.uuid4().hex[:6]}@{domain}"
    made = browser.post(
        f"/v1/orgs/{org.id}/users",
        json={"email": email, "name": role, "role": role, "password": PASSWORD},
        headers=org.headers,
    )
    assert made.status_code == 201, made.text
    return email


def _login(browser: TestClient, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return browser.post("/v1/auth/login", json={"email": email, "password": password})


def _enforce(browser: TestClient, org: Org, **settings: bool) -> None:
    changed = browser.patch(f"/v1/orgs/{org.id}", json=settings, headers=org.headers)
    assert changed.status_code == 200, changed.text
    for name, value in settings.items():
        assert changed.json()[name] is value


def test_password_sign_in_is_refused_for_the_verified_domains(
    browser: TestClient, sso_factory: Factory, dns: DnsServer
) -> None:
    org = sso_factory.org()
    domain = verified_domain(browser, dns, org)
    member = _person(browser, org, domain, "member")
    assert _login(browser, member).status_code == 200  # not enforced yet
    _enforce(browser, org, sso_enforced=True)

    refused = _login(browser, member)
    assert refused.status_code == 401
    problem = refused.json()
    assert problem["code"] == "sso_required"
    assert problem["sso_start_url"].startswith("http://localhost:8400/v1/auth/sso/start?email=")
    assert "/v1/auth/sso/start" in problem["detail"]
    # The domain decides, not the account: an unknown email of it, or a wrong password,
    # get the same answer; another domain signs in as before.
    assert _login(browser, f"nobody@{domain}").json()["code"] == "sso_required"
    assert _login(browser, member, "wrong password!").json()["code"] == "sso_required"
    assert _login(browser, org.admin.email).status_code == 200
    events = browser.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "auth.login_failed"},
        headers=org.headers,
    ).json()["data"]
    assert events[0]["reason"] == "sso_required"


def test_break_glass_admins_need_a_second_factor(
    browser: TestClient, sso_factory: Factory, dns: DnsServer
) -> None:
    org = sso_factory.org()
    domain = verified_domain(browser, dns, org)
    admin = _person(browser, org, domain, "admin")
    token = _login(browser, admin).json()["token"]
    enrolled = enrol_totp(browser, bearer(token))
    _enforce(browser, org, sso_enforced=True)
    assert _login(browser, admin).json()["code"] == "sso_required"  # no break-glass yet

    _enforce(browser, org, sso_break_glass=True)
    next_step()
    owed = _login(browser, admin)
    assert owed.status_code == 200, owed.text
    assert owed.json()["mfa_required"] is True
    done = finish(browser, owed.json()["mfa_token"], "totp", code(enrolled.secret))
    assert done.status_code == 200, done.text
    # A wrong password is still refused as ever.
    assert _login(browser, admin, "wrong password!").status_code == 401


def test_break_glass_is_never_a_password_alone(
    browser: TestClient, sso_factory: Factory, dns: DnsServer
) -> None:
    org = sso_factory.org()
    domain = verified_domain(browser, dns, org)
    admin = _person(browser, org, domain, "admin")
    member = _person(browser, org, domain, "member")
    _enforce(browser, org, sso_enforced=True, sso_break_glass=True)
    refused = _login(browser, admin)  # an admin without a factor
    assert refused.status_code == 401
    assert refused.json()["code"] == "sso_required"
    assert _login(browser, member).json()["code"] == "sso_required"  # admins only


def test_users_of_another_org_with_the_domain_are_not_caught(
    browser: TestClient, sso_factory: Factory, dns: DnsServer
) -> None:
    org, other = sso_factory.org(), sso_factory.org()
    domain = verified_domain(browser, dns, org)
    outsider = _person(browser, other, domain, "member")
    _enforce(browser, org, sso_enforced=True)
    assert _login(browser, outsider).status_code == 200


def test_changing_enforcement_needs_step_up(browser: TestClient, sso_factory: Factory) -> None:
    org = sso_factory.org()
    clock.advance(601)
    refused = browser.patch(
        f"/v1/orgs/{org.id}", json={"sso_enforced": True}, headers=org.admin.headers
    )
    assert refused.status_code == 401
    assert refused.json()["code"] == "step_up_required"
    step_up(browser, org.admin.headers)
    assert (
        browser.patch(
            f"/v1/orgs/{org.id}", json={"sso_enforced": True}, headers=org.admin.headers
        ).json()["sso_enforced"]
        is True
    )
    got = browser.get(f"/v1/orgs/{org.id}", headers=org.headers).json()
    assert got["sso_enforced"] is True
    assert got["sso_break_glass"] is False


def test_an_unverified_domain_is_not_enforced(browser: TestClient, sso_factory: Factory) -> None:
    org = sso_factory.org()
    domain = new_domain()
    browser.post(f"/v1/orgs/{org.id}/domains", json={"domain": domain}, headers=org.headers)
    member = _person(browser, org, domain, "member")
    _enforce(browser, org, sso_enforced=True)
    assert _login(browser, member).status_code == 200


def test_a_burst_of_refused_sso_sign_ins_raises_an_alert(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, sso_app: object
) -> None:
    from bastion.alerts import service as alerts
    from bastion.api.app import notifier

    org = sso_factory.org()
    domain = verified_domain(browser, dns, org)
    rule = {
        "name": "sso",
        "kind": "sso_failures",
        "params": {"threshold": 3, "window_seconds": 300},
    }
    assert (
        browser.post(f"/v1/orgs/{org.id}/alert-rules", json=rule, headers=org.headers).status_code
        == 201
    )
    created = browser.post(
        f"/v1/orgs/{org.id}/sso-connections",
        json={"type": "oidc", "name": "x", "issuer": "http://127.0.0.1:9/", "client_id": "c"},
        headers=org.headers,
    )
    assert created.status_code == 201, created.text
    state = sso_factory.state

    def round_() -> list[dict[str, object]]:
        alerts.run_round(state.sessions, state.write_sessions, notifier(state), org.id)
        return list(browser.get(f"/v1/orgs/{org.id}/alerts", headers=org.headers).json()["data"])

    for _ in range(2):  # the provider is unreachable: each start is refused and audited
        answer = browser.get(
            "/v1/auth/sso/start", params={"email": f"a@{domain}"}, follow_redirects=False
        )
        assert answer.headers["location"] == "/console/?error=provider_unreachable"
    assert round_() == []
    browser.get("/v1/auth/sso/start", params={"email": f"a@{domain}"}, follow_redirects=False)
    [alert] = round_()
    assert alert["kind"] == "sso_failures"
    assert alert["key"] == "sso"
