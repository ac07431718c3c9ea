"""Sign-in throttling behind a shared address (a NAT, an office proxy): one attacker's
failures must not lock everyone out, while a credential-stuffing run from one address
is still stopped, and a guessing run on one account from many addresses still slowed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bastion.alerts import service as alerts
from bastion.api.app import create_app, notifier
from tests.conftest import make_settings
from tests.factories import PASSWORD, Factory, unique_email

WRONG = "not the password at all"


@pytest.fixture
def strict(data_dir: Path, database_url: str) -> Iterator[FastAPI]:
    settings = make_settings(
        data_dir,
        database_url,
        login_failures_per_account=3,
        login_failures_per_ip=5,
        login_failure_window=600,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False):  # the app starts (and stops)
        yield app


def _from(app: FastAPI, address: str) -> TestClient:
    """A client whose requests come from `address` (the socket peer Bastion keys on)."""
    return TestClient(app, raise_server_exceptions=False, client=(address, 50000))


def _login(client: TestClient, email: str, password: str) -> int:
    response = client.post("/v1/auth/login", json={"email": email, "password": password})
    return response.status_code


def test_shared_address_does_not_lock_out_a_user_who_signs_in_from_it(
    strict: FastAPI, factory: Factory
) -> None:
    office = _from(strict, "198.51.100.10")
    org = factory.org()
    colleague = factory.member(org)
    assert _login(office, org.admin.email, PASSWORD) == 200  # the admin works here
    for i in range(60):  # someone in the same office sprays other accounts
        email = colleague.email if i % 2 else unique_email(f"spray{i}")
        assert _login(office, email, WRONG) in (401, 429)
    assert _login(office, org.admin.email, PASSWORD) == 200
    # The accounts attacked from this address stay shut to it.
    assert _login(office, colleague.email, PASSWORD) == 429


def test_stuffing_from_one_address_is_stopped_and_alerted(
    strict: FastAPI, factory: Factory
) -> None:
    state = strict.state.bastion
    org = factory.org()
    users = [factory.member(org, "viewer") for _ in range(6)]
    rule = {"name": "stuffing", "kind": "failed_signins_ip", "params": {"threshold": 5}}
    assert factory.client.post(
        f"/v1/orgs/{org.id}/alert-rules", json=rule, headers=org.headers
    ).is_success
    attacker = _from(strict, "203.0.113.66")
    for user in users[:5]:  # one leaked password per account, all wrong
        assert _login(attacker, user.email, WRONG) == 401
    # The sixth is right, but this address never signed in to that account: refused.
    assert _login(attacker, users[5].email, PASSWORD) == 429
    alerts.run_round(state.sessions, state.write_sessions, notifier(state), org.id)
    found: list[dict[str, Any]] = factory.client.get(
        f"/v1/orgs/{org.id}/alerts", headers=org.headers
    ).json()["data"]
    assert [a["key"] for a in found] == ["ip:203.0.113.66"]


def test_guessing_one_account_from_many_addresses_is_slowed_not_at_its_home(
    strict: FastAPI, factory: Factory
) -> None:
    org = factory.org()
    home = _from(strict, "198.51.100.20")
    assert _login(home, org.admin.email, PASSWORD) == 200
    for i in range(3):  # three addresses, one failure each: no pair reaches its limit
        assert _login(_from(strict, f"203.0.113.{i + 1}"), org.admin.email, WRONG) == 401
    # The account refuses addresses it does not know, even with the right password...
    assert _login(_from(strict, "203.0.113.9"), org.admin.email, PASSWORD) == 429
    # ...but its user still gets in from where they signed in before.
    assert _login(home, org.admin.email, PASSWORD) == 200


def test_one_address_guessing_one_account_is_refused_there(
    strict: FastAPI, factory: Factory
) -> None:
    org = factory.org()
    desk = _from(strict, "198.51.100.30")
    assert _login(desk, org.admin.email, PASSWORD) == 200
    for _ in range(3):
        assert _login(desk, org.admin.email, WRONG) == 401
    assert _login(desk, org.admin.email, PASSWORD) == 429  # even a familiar address


def test_stuffing_past_the_address_limit_still_counts_toward_the_alert(
    strict: FastAPI, factory: Factory
) -> None:
    """Once the address is refused, later attempts are `auth.login_throttled`, not failed:
    an organisation reached only then must still see the run."""
    state = strict.state.bastion
    org = factory.org()
    users = [factory.member(org, "viewer") for _ in range(3)]
    rule = {"name": "stuffing", "kind": "failed_signins_ip", "params": {"threshold": 3}}
    assert factory.client.post(
        f"/v1/orgs/{org.id}/alert-rules", json=rule, headers=org.headers
    ).is_success
    attacker = _from(strict, "203.0.113.67")
    for i in range(5):  # the run starts on accounts elsewhere
        assert _login(attacker, unique_email(f"list{i}"), WRONG) == 401
    for user in users:
        assert _login(attacker, user.email, WRONG) == 429
    alerts.run_round(state.sessions, state.write_sessions, notifier(state), org.id)
    found: list[dict[str, Any]] = factory.client.get(
        f"/v1/orgs/{org.id}/alerts", headers=org.headers
    ).json()["data"]
    assert [a["key"] for a in found] == ["ip:203.0.113.67"]
