"""The console in Chromium: password sign-in, the Users page, CSRF refusals; each page
without console errors, CSP violations or requests to another origin, and without
serious or critical axe-core findings."""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.browser import Watched, sign_in, wait_for_path
from tests.factories import Factory, Org, unique_email

pytestmark = pytest.mark.e2e


def test_password_sign_in_reaches_the_page_asked_for(
    watched: Watched, console_factory: Factory, axe: str
) -> None:
    org = console_factory.org()
    page = watched.page
    sign_in(watched, org.admin.email, start="/console/users")
    wait_for_path(page, "/console/users")
    assert page.get_by_role("heading", name="Users", exact=True).is_visible()
    assert page.get_by_role("cell", name=org.admin.email, exact=True).is_visible()
    assert watched.axe(axe) == []
    watched.clean()


def test_wrong_password_is_refused_on_the_page(watched: Watched, console_factory: Factory) -> None:
    org = console_factory.org()
    watched.allowed.append("status of 401")
    sign_in(watched, org.admin.email, password="not the password at all")
    page = watched.page
    assert page.get_by_role("alert").is_visible()
    assert page.get_by_role("heading", name="Sign in").is_visible()
    watched.clean()


def _users(factory: Factory, org: Org) -> list[str]:
    answer = factory.client.get(f"/v1/orgs/{org.id}/users", headers=org.headers)
    return [u["email"] for u in answer.json()["data"]]


@pytest.mark.parametrize("token", [None, "1.0000", "wrong"])
def test_a_post_without_the_right_csrf_token_is_refused(
    watched: Watched, console_factory: Factory, token: Any
) -> None:
    org = console_factory.org()
    sign_in(watched, org.admin.email)
    wait_for_path(watched.page, "/console/")
    email = unique_email("csrf")
    form = {"email": email, "name": "Mallory", "role": "admin"}
    if token is not None:
        form["csrf"] = token
    answer = watched.page.request.post("/console/users", form=form)  # the session cookie rides
    assert answer.status == 403
    assert email not in _users(console_factory, org)
    # The same form with the page's own token goes through.
    watched.page.goto("/console/users")
    watched.page.get_by_label("Email address").fill(email)
    watched.page.get_by_role("button", name="Invite").click()
    watched.page.get_by_text("one-time setup token").wait_for()
    assert email in _users(console_factory, org)
    watched.clean()


def test_the_watch_and_axe_catch_what_they_look_for(
    watched: Watched, console_factory: Factory, axe: str
) -> None:
    """The checks every browser test relies on can fail: an inline script (refused by
    the CSP), a request to another origin and an unlabelled field are all caught."""
    page = watched.page
    page.goto("/console/sign-in")
    assert watched.axe(axe) == []
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = '1';"
        " document.body.append(s);"
        " const i = document.createElement('input'); document.body.append(i); }"
    )
    page.evaluate("() => fetch('http://example.org/x').catch(() => null)")
    page.wait_for_timeout(300)
    assert any("CSP violation: script-src" in e for e in watched.errors), watched.errors
    assert any("CSP violation: connect-src" in e for e in watched.errors), watched.errors
    assert "label" in {v["id"] for v in watched.axe(axe)}
    # A navigation is not the CSP's to stop: the route interception sees it.
    page.evaluate("() => window.location.assign('http://example.org/y')")
    page.wait_for_timeout(500)
    assert watched.outside == ["http://example.org/y"]
