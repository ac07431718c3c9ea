"""The console over HTTP, in process: its headers, cookies, CSRF and redirects."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from bastion.api.app import create_app
from bastion.console.security import CSP
from tests.conftest import make_settings
from tests.console.helpers import csrf_of, sign_in
from tests.factories import PASSWORD, Factory, unique_email

PAGES = [
    "/console/",
    "/console/users",
    "/console/approvals",
    "/console/agents",
    "/console/audit",
    "/console/alerts",
    "/console/secrets",
    "/console/webhooks",
    "/console/compliance",
    "/console/access-reviews",
]


def _client(factory: Factory) -> TestClient:
    """A client of its own (its own cookie jar) on the shared app."""
    return TestClient(factory.client.app, raise_server_exceptions=False)


def test_signed_out_pages_send_the_browser_to_sign_in(factory: Factory) -> None:
    client = _client(factory)
    answer = client.get("/console/users", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=/console/users"


def test_every_console_answer_has_the_strict_csp(factory: Factory) -> None:
    org = factory.org()
    client = _client(factory)
    for path in ("/console/sign-in", "/console/static/console.js"):
        assert client.get(path).headers["content-security-policy"] == CSP
    sign_in(client, org.admin.email)
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == CSP
        assert "default-src 'none'" in CSP
        assert "script-src 'self'" in CSP
        assert "<script>" not in answer.text
        assert " style=" not in answer.text
        assert answer.headers["x-frame-options"] == "DENY"
    # The API keeps its own, stricter one.
    api = client.get("/v1/me", headers=org.headers).headers["content-security-policy"]
    assert api == "default-src 'none'; frame-ancestors 'none'"


def test_the_session_cookie_is_httponly_and_lax(factory: Factory) -> None:
    org = factory.org()
    client = _client(factory)
    page = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(page.text), "email": org.admin.email, "password": PASSWORD},
        follow_redirects=False,
    )
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "session=" in c)
    assert cookie.startswith("bastion-session=bss_")  # plain http: no __Host- prefix
    attributes = cookie.lower()
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert "secure" not in attributes
    assert "domain=" not in attributes
    assert org.admin.email not in answer.text


def test_under_https_the_cookies_are_host_prefixed_and_secure(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    settings = make_settings(data_dir, database_url, public_url="https://bastion.example")
    with TestClient(create_app(settings), base_url="https://bastion.example") as client:
        answer = client.get("/console/sign-in")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-bastion-browser=")
    assert "secure" in cookie.lower()
    assert "path=/" in cookie.lower()
    assert "domain=" not in cookie.lower()


def test_csrf_refused_without_with_wrong_or_with_another_session_token(factory: Factory) -> None:
    org = factory.org()
    client = _client(factory)
    sign_in(client, org.admin.email)
    other = _client(factory)
    sign_in(other, org.admin.email)  # the same person, another session: another token
    foreign = csrf_of(other.get("/console/users").text)
    for token in (None, "", "1.deadbeef", foreign):
        email = unique_email("csrf")
        data = {"email": email, "name": "M", "role": "admin"}
        if token is not None:
            data["csrf"] = token
        answer = client.post("/console/users", data=data, follow_redirects=False)
        assert answer.status_code == 403, token
        listed = client.get(f"/v1/orgs/{org.id}/users", headers=org.headers).json()["data"]
        assert email not in [u["email"] for u in listed]
    # JSON (or any other type) is no form: refused too, before anything runs.
    answer = client.post("/console/users", json={"email": unique_email(), "role": "admin"})
    assert answer.status_code == 403


def test_sign_in_csrf_is_bound_to_the_browser(factory: Factory) -> None:
    """Login CSRF: a sign-in form posted with a token of another browser is refused."""
    org = factory.org()
    victim, attacker = _client(factory), _client(factory)
    victim.get("/console/sign-in")  # the victim's browser value
    token = csrf_of(attacker.get("/console/sign-in").text)
    answer = victim.post(
        "/console/sign-in",
        data={"csrf": token, "email": org.admin.email, "password": PASSWORD},
        follow_redirects=False,
    )
    assert answer.status_code == 403


def test_sign_out_ends_the_session(factory: Factory) -> None:
    org = factory.org()
    client = _client(factory)
    sign_in(client, org.admin.email)
    token = client.cookies.get("bastion-session")
    answer = client.post(
        "/console/sign-out",
        data={"csrf": csrf_of(client.get("/console/").text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/console/users", follow_redirects=False).status_code == 303


def test_a_member_is_refused_what_the_api_refuses(factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "member")
    client = _client(factory)
    sign_in(client, member.email)
    api = client.get(f"/v1/orgs/{org.id}/users", headers=member.headers)
    assert client.get("/console/users").status_code == api.status_code
    token = csrf_of(client.get("/console/").text)
    answer = client.post(f"/console/users/{org.admin.user_id}/suspend", data={"csrf": token})
    refused = client.patch(
        f"/v1/orgs/{org.id}/users/{org.admin.user_id}",
        json={"status": "suspended"},
        headers=member.headers,
    )
    assert refused.status_code == 403
    assert answer.status_code == 403
    assert "Forbidden" in answer.text
    admin = client.get(f"/v1/orgs/{org.id}/users/{org.admin.user_id}", headers=org.headers)
    assert admin.json()["status"] == "active"


def test_next_never_leads_to_another_origin(factory: Factory) -> None:
    org = factory.org()
    for target in ("//evil.example/x", "https://evil.example/", "/v1/me", "/console/\\evil"):
        client = _client(factory)
        page = client.get("/console/sign-in", params={"next": target})
        answer = client.post(
            "/console/sign-in",
            data={
                "csrf": csrf_of(page.text),
                "email": org.admin.email,
                "password": PASSWORD,
                "next": target,
            },
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/", target


def test_the_sso_return_page_exchanges_nothing_by_get(factory: Factory) -> None:
    """The one-time code comes back in a GET; only the POST from the page (with this
    browser's CSRF token) spends it."""
    client = _client(factory)
    page = client.get("/console/sso/done", params={"code": "not-a-real-code"})
    assert page.status_code == 200
    assert 'action="/console/sso/done"' in page.text
    assert "bastion-session" not in client.cookies
    spent = client.post(
        "/console/sso/done",
        data={"csrf": csrf_of(page.text), "code": "not-a-real-code"},
        follow_redirects=False,
    )
    assert spent.status_code == 401
    assert "bastion-session" not in client.cookies
