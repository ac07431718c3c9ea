"""The whole OpenID Connect code flow against a real provider (`oidc-provider`),
driven headless: start → provider → callback → one-time code → session."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from tests.factories import Factory, bearer
from tests.sso.conftest import oidc_connection, query, sign_in, verified_domain
from tests.sso.peers import DnsServer, NodeProvider


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
