"""Signing in to the console in Chromium with each factor: password + TOTP (codes from
pyotp), a recovery code, a passkey as second factor and a passkey alone (WebAuthn
ceremonies from Chromium's virtual authenticator, through CDP), and the enrolment an
organisation's MFA policy imposes. Issue 14's last item; issue 16's sign-in."""

from __future__ import annotations

import time
from typing import Any

import pyotp
import pytest

from tests.console.browser import Watched, sign_in, virtual_authenticator, wait_for_path
from tests.factories import Factory, Org, bearer

pytestmark = pytest.mark.e2e


def enrol_totp(factory: Factory, token: str) -> tuple[pyotp.TOTP, list[str]]:
    """A confirmed TOTP factor (through the API), confirmed with the current code: the
    sign-in then uses `later(totp)`, the next step's (accepted: ±1 step)."""
    client = factory.client
    started = client.post("/v1/me/mfa/totp", json={}, headers=bearer(token))
    assert started.status_code == 200, started.text
    totp = pyotp.TOTP(started.json()["secret"])
    confirmed = client.post(
        f"/v1/me/mfa/totp/{started.json()['factor_id']}/confirm",
        json={"code": totp.now()},
        headers=bearer(token),
    )
    assert confirmed.status_code == 200, confirmed.text
    return totp, list(confirmed.json()["recovery_codes"])


def later(totp: pyotp.TOTP) -> str:
    """The next time step's code: unused yet, and within the window whether or not the
    server's clock has moved on since the current code was used."""
    return totp.at(time.time() + 30)


def _home(watched: Watched) -> None:
    wait_for_path(watched.page, "/console/")
    assert watched.page.get_by_role("heading", name="Overview").is_visible()


def _amr(factory: Factory, org: Org) -> list[list[str]]:
    """The amr of the admin's sessions, newest first (as the API reports them)."""
    listed = factory.client.get(
        f"/v1/orgs/{org.id}/users/{org.admin.user_id}/sessions", headers=org.headers
    )
    return [s["amr"] for s in listed.json()["data"]]


def test_password_then_totp(watched: Watched, console_factory: Factory, axe: str) -> None:
    org = console_factory.org()
    totp, _codes = enrol_totp(console_factory, org.admin.token)
    sign_in(watched, org.admin.email)
    page = watched.page
    wait_for_path(page, "/console/sign-in/verify")
    assert watched.axe(axe) == []
    page.get_by_label("Code").fill(later(totp))
    page.get_by_role("button", name="Verify").click()
    _home(watched)
    assert any("otp" in amr and "pwd" in amr for amr in _amr(console_factory, org))
    watched.clean()


def test_a_wrong_code_is_refused_and_the_right_one_then_works(
    watched: Watched, console_factory: Factory
) -> None:
    org = console_factory.org()
    totp, _codes = enrol_totp(console_factory, org.admin.token)
    watched.allowed.append("status of 401")
    sign_in(watched, org.admin.email)
    page = watched.page
    wait_for_path(page, "/console/sign-in/verify")
    wrong = f"{(int(later(totp)) + 1) % 1_000_000:06d}"
    page.get_by_label("Code").fill(wrong)
    page.get_by_role("button", name="Verify").click()
    assert page.get_by_role("alert").filter(has_text="wrong").is_visible()
    page.get_by_label("Code").fill(later(totp))
    page.get_by_role("button", name="Verify").click()
    _home(watched)
    watched.clean()


def test_password_then_a_recovery_code(watched: Watched, console_factory: Factory) -> None:
    org = console_factory.org()
    _totp, codes = enrol_totp(console_factory, org.admin.token)
    sign_in(watched, org.admin.email)
    page = watched.page
    wait_for_path(page, "/console/sign-in/verify")
    page.get_by_label("Code").fill(codes[3])
    page.get_by_role("button", name="Verify").click()
    _home(watched)
    status = console_factory.client.get("/v1/me/mfa", headers=bearer(org.admin.token))
    assert status.json()["recovery_codes_remaining"] == len(codes) - 1
    watched.clean()


def _register_passkey(watched: Watched, name: str) -> None:
    page = watched.page
    page.goto("/console/security")
    page.get_by_label("Passkey name").fill(name)
    page.get_by_role("button", name="Add a passkey").click()
    page.get_by_role("cell", name=name, exact=True).wait_for()


def _sign_out(watched: Watched) -> None:
    watched.page.get_by_role("button", name="Sign out").click()
    wait_for_path(watched.page, "/console/sign-in")


def test_passkey_registered_in_the_console_then_second_factor_then_passwordless(
    watched: Watched, console_factory: Factory, axe: str
) -> None:
    org = console_factory.org()
    cdp, authenticator = virtual_authenticator(watched.page)
    sign_in(watched, org.admin.email)
    _home(watched)
    _register_passkey(watched, "Laptop")
    page = watched.page
    assert page.get_by_role("heading", name="Your recovery codes").is_visible()
    assert watched.axe(axe) == []
    stored = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    assert len(stored["credentials"]) == 1
    assert stored["credentials"][0]["isResidentCredential"] is True
    _sign_out(watched)

    # The passkey as the second factor after the password.
    sign_in(watched, org.admin.email)
    wait_for_path(page, "/console/sign-in/verify")
    page.get_by_role("button", name="Use a passkey or security key").click()
    _home(watched)
    assert any("hwk" in amr or "webauthn" in " ".join(amr) for amr in _amr(console_factory, org))
    _sign_out(watched)

    # The passkey alone (discoverable credential, user verification).
    page.get_by_role("button", name="Sign in with a passkey").click()
    _home(watched)
    after = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    assert after["credentials"][0]["signCount"] >= 2
    watched.clean()


def test_a_passkey_of_another_site_signs_nobody_in(
    watched: Watched, console_factory: Factory
) -> None:
    """Passwordless with an authenticator that holds no credential for this RP: the
    browser finds none and the console stays on the sign-in page, signed out."""
    console_factory.org()
    virtual_authenticator(watched.page)
    page = watched.page
    page.goto("/console/sign-in")
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.get_by_text("The passkey was not used").wait_for()
    assert page.url.endswith("/console/sign-in")
    watched.clean()


def _policy(factory: Factory, org: Org, **values: Any) -> None:
    from tests.factories import step_up

    step_up(factory.client, org.admin.headers)
    answer = factory.client.patch(f"/v1/orgs/{org.id}", json=values, headers=org.admin.headers)
    assert answer.status_code == 200, answer.text


def test_mandatory_enrolment_leaves_only_the_enrolment_page(
    watched: Watched, console_factory: Factory, axe: str
) -> None:
    org = console_factory.org()
    member = console_factory.member(org, "member")
    _policy(console_factory, org, mfa_policy="all")
    sign_in(watched, member.email)
    page = watched.page
    wait_for_path(page, "/console/security")
    assert page.get_by_role("navigation", name="Main").count() == 0
    assert watched.axe(axe) == []
    for elsewhere in ("/console/", "/console/users", "/console/settings"):
        page.goto(elsewhere)
        wait_for_path(page, "/console/security")
    page.get_by_role("button", name="Add an authenticator app").click()
    secret = page.locator("#totp-secret").inner_text()
    uri = page.get_by_text("otpauth://").inner_text()
    assert "secret=" in uri
    totp = pyotp.TOTP(secret)
    page.get_by_label("Authenticator code").fill(totp.now())
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("heading", name="Second factor added").wait_for()
    assert page.locator(".codes li").count() == 10
    page.get_by_role("link", name="Sign in again").click()
    sign_in(watched, member.email)
    wait_for_path(page, "/console/sign-in/verify")
    page.get_by_label("Code").fill(later(totp))
    page.get_by_role("button", name="Verify").click()
    _home(watched)
    watched.clean()
