"""Sign-in: same answer for unknown email and wrong password, throttling, rehash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import argon2
import pytest
from fastapi.testclient import TestClient

from bastion.api.app import create_app
from bastion.identity import passwords
from bastion.identity.models import User
from tests.conftest import make_settings
from tests.factories import PASSWORD, Factory, home_factory, unique_email


@pytest.fixture
def factory(app, client: TestClient) -> Factory:  # type: ignore[no-untyped-def]
    """Organisations in the home region: these tests read and change rows directly."""
    return home_factory(app.state.bastion, client)


def _login(client: TestClient, email: str, password: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/auth/login", json={"email": email, "password": password})


def _comparable(body: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k != "request_id"}


def test_login_returns_a_session_token(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    response = _login(client, org.admin.email.upper(), PASSWORD)  # emails are case-insensitive
    assert response.status_code == 200
    body = response.json()
    assert body["token"].startswith("bss_ses_")
    assert body["user_id"] == org.admin.user_id
    assert body["expires_at"].endswith("Z")


def test_unknown_email_and_wrong_password_give_the_same_401(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    wrong = _login(client, org.admin.email, "not the password at all")
    unknown = _login(client, unique_email("ghost"), "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert _comparable(wrong.json()) == _comparable(unknown.json())
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"]


def test_failed_login_is_audited_even_though_the_request_failed(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    assert _login(client, org.admin.email, "definitely wrong!").status_code == 401
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": "auth.login_failed"}, headers=org.headers
    ).json()["data"]
    assert len(events) == 1
    assert events[0]["outcome"] == "failure"
    assert events[0]["resource"] == {"type": "user", "id": org.admin.user_id}
    assert "definitely wrong" not in str(events[0])


@pytest.fixture
def strict_app(data_dir: Path, database_url: str) -> Iterator[TestClient]:
    settings = make_settings(
        data_dir,
        database_url,
        login_failures_per_account=3,
        login_failures_per_ip=5,
        login_failure_window=600,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_account_throttling_returns_429_with_retry_after(
    strict_app: TestClient, factory: Factory
) -> None:
    org = factory.org()
    for _ in range(3):
        assert _login(strict_app, org.admin.email, "wrong password!!").status_code == 401
    throttled = _login(strict_app, org.admin.email, PASSWORD)  # even the right password
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert throttled.headers["content-type"] == "application/problem+json"
    events = strict_app.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "auth.login_throttled"},
        headers=org.headers,
    ).json()["data"]
    assert events
    assert events[0]["outcome"] == "denied"


def test_address_throttling_spans_accounts(strict_app: TestClient, factory: Factory) -> None:
    org = factory.org()
    # An address of its own, one the admin never signed in from (see test_login_throttle).
    sprayer = TestClient(strict_app.app, raise_server_exceptions=False, client=("192.0.2.5", 1))
    headers = {"x-forwarded-for": "ignored"}  # not trusted: throttling keys on the socket address
    for i in range(5):
        response = sprayer.post(
            "/v1/auth/login",
            json={"email": unique_email(f"spray{i}"), "password": "x" * 12},
            headers=headers,
        )
        assert response.status_code in (401, 429)
    assert _login(sprayer, org.admin.email, PASSWORD).status_code == 429


def test_hash_is_upgraded_when_parameters_change(client: TestClient, factory: Factory, app) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    state = app.state.bastion
    with state.sessions() as db:
        before = db.get(User, org.admin.user_id).password_hash
    assert "t=1" in before
    passwords.configure(time_cost=2, memory_kib=8, parallelism=1)
    try:
        assert _login(client, org.admin.email, PASSWORD).status_code == 200
        with state.sessions() as db:
            after = db.get(User, org.admin.user_id).password_hash
        assert after != before
        assert "t=2" in after
        assert _login(client, org.admin.email, PASSWORD).status_code == 200
    finally:
        passwords.configure(time_cost=1, memory_kib=8, parallelism=1)


def test_unknown_email_costs_the_same_time_as_a_wrong_password(
    client: TestClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both failures do the same hashing work: exactly one Argon2 verification, with the
    same parameters (time, memory, parallelism) as the user's stored hash. Asserted as
    work done, not wall-clock time, which a loaded machine makes noisy (issue 20)."""
    passwords.configure(time_cost=2, memory_kib=64, parallelism=1)  # not the test default
    verified: list[argon2.Parameters] = []
    real_verify = argon2.PasswordHasher.verify

    def counting(self: argon2.PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        text = hash.decode() if isinstance(hash, bytes) else hash
        verified.append(argon2.extract_parameters(text))
        return real_verify(self, hash, password)

    try:
        org = factory.org()  # the user's hash uses the same parameters
        monkeypatch.setattr(argon2.PasswordHasher, "verify", counting)
        assert _login(client, org.admin.email, "wrong password!!").status_code == 401
        known = list(verified)
        verified.clear()
        assert _login(client, unique_email("nobody"), "wrong password!!").status_code == 401
        unknown = list(verified)
    finally:
        monkeypatch.undo()
        passwords.configure(time_cost=1, memory_kib=8, parallelism=1)
    assert len(known) == 1
    assert known[0].time_cost == 2
    assert known[0].memory_cost == 64
    assert unknown == known
