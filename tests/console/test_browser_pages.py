"""Every console page in Chromium: its heading, no serious or critical axe-core finding,
no console error, CSP violation or request elsewhere; keyboard use; "Sign in with SSO"
reaching the identity provider. The main pages' screenshots go to docs/console/ (shown
in docs/console.md) with `make screenshots`."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bastion.console.nav import ITEMS
from tests.console.browser import Watched, screenshot, sign_in, wait_for_path
from tests.console.test_browser_signin import enrol_totp, later
from tests.factories import Factory, Org

pytestmark = pytest.mark.e2e

# The pages whose screenshots docs/console.md shows.
MAIN = {"/console/users", "/console/teams", "/console/roles", "/console/api-keys",
        "/console/settings", "/console/security"}  # fmt: skip


def _shot(watched: Watched, name: str, tmp: Path) -> None:
    screenshot(watched.page, name, tmp)


def _populated(factory: Factory) -> Org:
    org = factory.org("Acme Robotics")
    member = factory.member(org, "member")
    client = factory.client
    team = client.post(f"/v1/orgs/{org.id}/teams", json={"name": "Support"}, headers=org.headers)
    client.put(
        f"/v1/orgs/{org.id}/teams/{team.json()['id']}/members/{member.user_id}",
        headers=org.headers,
    )
    client.post(
        f"/v1/orgs/{org.id}/roles",
        json={"name": "auditor", "permissions": ["audit:read"]},
        headers=org.headers,
    )
    factory.api_key(org, "member")
    return org


def test_every_page_renders_cleanly(
    watched: Watched, console_factory: Factory, axe: str, tmp_path: Path
) -> None:
    org = _populated(console_factory)
    page = watched.page
    page.set_viewport_size({"width": 1280, "height": 860})
    page.goto("/console/sign-in")
    _shot(watched, "sign-in", tmp_path)
    sign_in(watched, org.admin.email)
    wait_for_path(page, "/console/")
    pages = [(item.path, item.heading) for item in ITEMS] + [("/console/security", "Security")]
    for path, heading in pages:
        page.goto(path)
        assert page.get_by_role("heading", name=heading, exact=True).is_visible(), path
        assert watched.axe(axe) == [], path
        if path in MAIN:
            _shot(watched, path.removeprefix("/console/"), tmp_path)
    watched.clean()


def test_second_factor_page_and_keyboard_only_sign_in(
    watched: Watched, console_factory: Factory, axe: str, tmp_path: Path
) -> None:
    """Tab order reaches the skip link first, then the fields; focus is visible; the
    whole sign-in works with the keyboard alone."""
    org = console_factory.org()
    totp, _codes = enrol_totp(console_factory, org.admin.token)
    page = watched.page
    page.set_viewport_size({"width": 1280, "height": 860})
    page.goto("/console/sign-in")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    page.keyboard.press("Tab")  # the brand link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "email"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.type(org.admin.email)
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse battery staple")
    page.keyboard.press("Enter")
    wait_for_path(page, "/console/sign-in/verify")
    assert watched.axe(axe) == []
    _shot(watched, "verify", tmp_path)
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.id")
    while focused != "code":
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id")
    page.keyboard.type(later(totp))
    page.keyboard.press("Enter")
    wait_for_path(page, "/console/")
    watched.clean()


def test_sign_in_with_sso_reaches_the_identity_provider_and_comes_back_signed_in(
    watched: Watched, console_factory: Factory, console_dns: Any
) -> None:
    from tests.sso.conftest import oidc_connection, verified_domain
    from tests.sso.peers import FakeProvider

    fake = FakeProvider()
    try:
        org = console_factory.org()
        domain = verified_domain(console_factory.client, console_dns, org)
        oidc_connection(
            console_factory.client, org, fake.issuer, client_id="fake-client",
            scopes=["openid", "email"],
        )  # fmt: skip
        page = watched.page
        watched.allowed.append("status of 404")  # the fake provider's answer, see below
        page.goto("/console/sign-in")
        page.get_by_label("Email").fill(f"someone@{domain}")
        with page.expect_request(lambda r: r.url.startswith(fake.issuer)) as went:
            page.get_by_role("button", name="Sign in with SSO").click()
        url = went.value.url
        assert url.startswith(f"{fake.issuer}/authorize?")
        assert "code_challenge_method=S256" in url
        assert "redirect_uri=" in url
        # The only request that left the origin is that redirect (a hop of the SSO
        # start's redirect, which the watch sees but cannot abort: the fake provider has
        # no login page and answers 404).
        for _ in range(40):
            if watched.outside:
                break
            page.wait_for_timeout(50)
        assert watched.outside == [url]
        watched.outside.clear()
        # The provider signs the person in and sends the browser back: the console
        # exchanges the one-time code by a POST from this browser, and the person is in.
        params = parse_qs(urlsplit(url).query)
        email = f"someone@{domain}"
        fake.last_nonce = params["nonce"][0]
        fake.make_token = lambda nonce: fake.sign(fake.claims(nonce, email=email))
        page.goto(f"/v1/auth/sso/oidc/callback?code=abc&state={params['state'][0]}")
        wait_for_path(page, "/console/")
        assert page.get_by_text(f"Signed in as {email}").is_visible(), page.url
        watched.clean()
    finally:
        fake.stop()


def test_an_unknown_sso_domain_comes_back_to_sign_in(
    watched: Watched, console_factory: Factory
) -> None:
    page = watched.page
    page.goto("/console/sign-in")
    page.get_by_label("Email").fill("nobody@unknown-domain.example")
    page.get_by_role("button", name="Sign in with SSO").click()
    wait_for_path(page, "/console/sign-in")
    assert page.get_by_role("alert").filter(has_text="not set up").is_visible()
    watched.clean()
