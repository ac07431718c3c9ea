"""Driving the console over HTTP in process (no browser): read a form's CSRF token,
sign in with the session cookie."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.factories import PASSWORD

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> None:
    """A password-only sign-in through the console's form; the client keeps the cookie."""
    page = client.get("/console/sign-in")
    assert page.status_code == 200, page.text
    answer = client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(page.text), "email": email, "password": password},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/"


def post(client: TestClient, page: str, action: str, data: dict[str, str]) -> object:
    """Post a form of `page` (its CSRF token read from it) to `action`."""
    html = client.get(page).text
    return client.post(action, data={"csrf": csrf_of(html), **data}, follow_redirects=False)
