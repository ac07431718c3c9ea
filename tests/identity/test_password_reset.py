"""Password reset by email, against a real SMTP server (aiosmtpd) on a free port: the
link arrives, works once, within 30 minutes, ends every session, creates none; the
request answers the same 202 for an unknown email; requests are limited; neither the
token nor the password reaches the audit trail."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from bastion.api.app import create_app
from bastion.core.clock import clock
from bastion.identity.tokens import parse
from tests.conftest import make_settings
from tests.factories import PASSWORD, Factory, Org, bearer, unique_email
from tests.identity.mfa_support import code, enrol_totp, finish, next_step
from tests.receivers import free_port

NEW_PASSWORD = "a fresh and lengthy passphrase"
PUBLIC_URL = "https://bastion.example.test:8443"


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"

    def wait_for(self, to: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """The bodies of the messages to `to`, once there are `count` (polled)."""
        deadline = time.monotonic() + timeout
        while True:
            bodies = [
                email.message_from_bytes(raw, policy=email.policy.default).get_body().get_content()  # type: ignore[union-attr]
                for rcpt, raw in self.messages
                if to in rcpt
            ]
            if len(bodies) >= count or time.monotonic() > deadline:
                return bodies
            time.sleep(0.02)


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture  # an app per test: its own rate-limit counters
def world(
    data_dir: Path, database_url: str, smtp: tuple[Mailbox, int]
) -> Iterator[tuple[TestClient, Any]]:
    settings = make_settings(
        data_dir,
        database_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp[1],
        smtp_starttls=False,  # plain SMTP: 127.0.0.0/8 is in the plaintext allowance
        public_url=PUBLIC_URL + "/",
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, app.state.bastion


@pytest.fixture
def client(world: tuple[TestClient, Any]) -> TestClient:
    return world[0]


@pytest.fixture
def factory(world: tuple[TestClient, Any]) -> Factory:
    return Factory(world[1], world[0])


def _token_from(body: str) -> str:
    link = re.search(r"https?://\S+", body)
    assert link is not None, body
    parts = urlsplit(link.group(0))
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL
    assert parts.path == "/reset-password"
    return parse_qs(parts.query)["token"][0]


def _request(client: TestClient, address: str) -> Any:
    return client.post("/v1/auth/password-reset", json={"email": address})


def _confirm(client: TestClient, token: str, password: str = NEW_PASSWORD) -> Any:
    return client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "password": password}
    )


def _login(client: TestClient, address: str, password: str) -> Any:
    return client.post("/v1/auth/login", json={"email": address, "password": password})


def _events(client: TestClient, org: Org, type_: str) -> list[dict[str, Any]]:
    found = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": type_}, headers=org.headers
    )
    assert found.status_code == 200, found.text
    return list(found.json()["data"])


def test_reset_by_emailed_link_ends_every_session_and_creates_none(
    client: TestClient, factory: Factory, smtp: tuple[Mailbox, int]
) -> None:
    org = factory.org()
    member = factory.member(org)
    second = factory.login(member.email)
    response = _request(client, member.email.upper())  # emails compare case-insensitively
    assert response.status_code == 202
    assert response.content == b""
    (body,) = smtp[0].wait_for(member.email)
    token = _token_from(body)
    assert token.startswith("bsr_pwr_")

    done = _confirm(client, token)
    assert done.status_code == 204, done.text
    assert done.content == b""  # no session: the next sign-in asks for every factor
    for session in (member.token, second):
        assert client.get("/v1/me", headers=bearer(session)).status_code == 401
    assert _login(client, member.email, PASSWORD).status_code == 401
    assert _login(client, member.email, NEW_PASSWORD).status_code == 200

    again = _confirm(client, token, "yet another long passphrase")
    assert again.status_code == 401  # one use
    assert _login(client, member.email, NEW_PASSWORD).status_code == 200

    requested = _events(client, org, "auth.password_reset_requested")
    completed = _events(client, org, "auth.password_reset_completed")
    assert [e["outcome"] for e in requested] == ["success"]
    assert [e["outcome"] for e in completed] == ["failure", "success"]  # newest first
    trail = str(requested) + str(completed)
    assert token not in trail
    parsed = parse(token)  # the secret may itself hold "_": split as the server does
    assert parsed is not None
    assert parsed.secret not in trail
    assert NEW_PASSWORD not in trail


def test_unknown_email_gets_the_same_answer_and_no_mail(
    client: TestClient, factory: Factory, smtp: tuple[Mailbox, int]
) -> None:
    org = factory.org()
    known, unknown, later = org.admin.email, unique_email("ghost"), factory.member(org).email
    answers = [_request(client, known), _request(client, unknown), _request(client, later)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert answers[0].content == answers[1].content == b""
    assert {k: v for k, v in answers[0].headers.items() if k.startswith("content")} == {
        k: v for k, v in answers[1].headers.items() if k.startswith("content")
    }
    # One thread sends in order: once the later message is there, an earlier one would be.
    assert smtp[0].wait_for(known)
    assert smtp[0].wait_for(later)
    assert smtp[0].wait_for(unknown, timeout=0) == []


def test_unknown_email_takes_about_as_long_as_a_known_one(
    client: TestClient, factory: Factory
) -> None:
    """The send happens on the mailer's thread, after the answer: a known email's
    request does a little more database work, not an SMTP round trip."""
    org = factory.org()

    def timed(address: str) -> float:
        start = time.perf_counter()
        assert _request(client, address).status_code == 202
        return time.perf_counter() - start

    known = sorted(timed(org.admin.email) for _ in range(3))[1]
    unknown = sorted(timed(unique_email("ghost")) for _ in range(3))[1]
    assert known < unknown * 3 + 0.05
    assert unknown < known * 3 + 0.05


def test_link_expires_after_30_minutes(
    client: TestClient, factory: Factory, smtp: tuple[Mailbox, int]
) -> None:
    org = factory.org()
    member = factory.member(org)
    assert _request(client, member.email).status_code == 202
    token = _token_from(smtp[0].wait_for(member.email)[0])
    clock.advance(30 * 60 + 1)
    assert _confirm(client, token).status_code == 401
    clock.reset()
    assert _login(client, member.email, PASSWORD).status_code == 200


def test_forged_or_wrong_kind_tokens_are_refused(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    for token in ("bsr_pwr_01ZZZZZZZZZZZZZZZZZZZZZZZZ_nope", member.token, "garbage"):
        response = _confirm(client, token)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"


def test_the_new_password_obeys_the_policy_and_the_link_survives_a_refusal(
    client: TestClient, factory: Factory, smtp: tuple[Mailbox, int]
) -> None:
    org = factory.org()
    member = factory.member(org)
    assert _request(client, member.email).status_code == 202
    token = _token_from(smtp[0].wait_for(member.email)[0])
    weak = _confirm(client, token, "short")
    assert weak.status_code == 422
    assert weak.json()["code"] == "password_too_weak"
    assert weak.json()["errors"][0]["field"] == "password"
    breached = _confirm(client, token, "qwerty123456")
    assert breached.status_code == 422
    assert breached.json()["code"] == "password_breached"
    assert _confirm(client, token).status_code == 204


def test_requests_are_limited_per_email(client: TestClient, factory: Factory) -> None:
    address = unique_email("ghost")  # unknown or not, the same limit: it tells nothing
    answers = [_request(client, address).status_code for _ in range(4)]
    assert answers == [202, 202, 202, 429]
    limited = _request(client, address)
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1


def test_requests_are_limited_per_address(client: TestClient) -> None:
    answers = [_request(client, unique_email("spray")).status_code for _ in range(40)]
    assert 429 in answers
    assert answers.index(429) >= 1


def test_a_failed_send_is_logged_without_the_link(
    data_dir: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        data_dir, database_url, smtp_host="127.0.0.1", smtp_port=free_port(), smtp_starttls=False
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        state = app.state.bastion
        org = Factory(state, c).org()
        assert _request(c, org.admin.email).status_code == 202
        deadline = time.monotonic() + 10
        while state.mailer.failed == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state.mailer.failed == 1
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert "mail not sent" in text
    assert "bsr_" not in text
    assert "reset-password" not in text


def test_a_reset_never_bypasses_mfa(
    client: TestClient, factory: Factory, smtp: tuple[Mailbox, int]
) -> None:
    """A person with a factor is asked for it at the next sign-in after a reset; the
    factor and recovery codes survive; an mfa token earned with the old password is
    spent by the reset."""
    org = factory.org()
    member = factory.member(org)
    enrolled = enrol_totp(client, member.headers)
    next_step()
    before = _login(client, member.email, PASSWORD).json()
    assert before["mfa_required"] is True
    assert _request(client, member.email).status_code == 202
    (body,) = smtp[0].wait_for(member.email)
    assert _confirm(client, _token_from(body)).status_code == 204

    after = _login(client, member.email, NEW_PASSWORD)
    assert after.status_code == 200, after.text
    owed = after.json()
    assert owed["mfa_required"] is True
    assert "token" not in owed
    assert owed["methods"] == ["totp", "recovery_code"]
    value = code(enrolled.secret)
    stale = finish(client, before["mfa_token"], "totp", value)
    assert stale.status_code == 401  # earned with the old password: spent by the reset
    done = finish(client, owed["mfa_token"], "totp", value)
    assert done.status_code == 200, done.text
    session = bearer(done.json()["token"])
    assert client.get("/v1/me", headers=session).json()["amr"] == ["pwd", "otp", "mfa"]
    factors = client.get("/v1/me/mfa", headers=session).json()
    assert enrolled.factor_id in str(factors)


def test_a_password_change_spends_pending_mfa_tokens(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    enrolled = enrol_totp(client, member.headers)
    next_step()
    pending = _login(client, member.email, PASSWORD).json()["mfa_token"]
    changed = client.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=member.headers,
    )
    assert changed.status_code == 204, changed.text
    assert finish(client, pending, "totp", code(enrolled.secret)).status_code == 401
    owed = _login(client, member.email, NEW_PASSWORD).json()
    assert owed["mfa_required"] is True
    assert finish(client, owed["mfa_token"], "totp", code(enrolled.secret)).status_code == 200
