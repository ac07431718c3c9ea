"""Helpers for the MFA tests: codes come from `pyotp` (an implementation independent
of the server's use of it: the server only compares), at the suite's clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyotp
from fastapi.testclient import TestClient

from bastion.core.clock import clock, utcnow
from tests.factories import PASSWORD, bearer


def code(secret: str, offset: int = 0) -> str:
    """The TOTP code for the test clock's now (+ offset seconds)."""
    return str(pyotp.TOTP(secret).at(utcnow().timestamp() + offset))


def next_step() -> None:
    """Move the clock to the next 30-second step (a new code, never a replay)."""
    clock.advance(30)


@dataclass
class Enrolled:
    factor_id: str
    secret: str = field(repr=False)
    recovery_codes: list[str] = field(repr=False)


def enrol_totp(client: TestClient, headers: dict[str, str]) -> Enrolled:
    started = client.post("/v1/me/mfa/totp", headers=headers)
    assert started.status_code == 200, started.text
    body = started.json()
    confirmed = client.post(
        f"/v1/me/mfa/totp/{body['factor_id']}/confirm",
        json={"code": code(body["secret"])},
        headers=headers,
    )
    assert confirmed.status_code == 200, confirmed.text
    return Enrolled(body["factor_id"], body["secret"], confirmed.json()["recovery_codes"])


def login(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return dict(response.json())


def finish(client: TestClient, mfa_token: str, method: str, value: str) -> Any:
    return client.post(
        "/v1/auth/mfa", json={"mfa_token": mfa_token, "method": method, "code": value}
    )


def sign_in_with_totp(client: TestClient, email: str, secret: str) -> dict[str, str]:
    """A full sign-in with password and TOTP (on a fresh step): the session's headers."""
    next_step()
    owed = login(client, email)
    assert owed["mfa_required"] is True, owed
    done = finish(client, owed["mfa_token"], "totp", code(secret))
    assert done.status_code == 200, done.text
    return bearer(done.json()["token"])
