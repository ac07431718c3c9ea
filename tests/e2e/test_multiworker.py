"""Revocation is effective on the very next request, on every worker: a real
`bastion serve --workers 2` sharing the suite's database (SQLite or PostgreSQL)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from tests.e2e.server import Server, server_env
from tests.factories import PASSWORD, Factory, Org, bearer
from tests.identity.mfa_support import enrol_totp

pytestmark = pytest.mark.e2e

TRIES = 12  # fresh connections per check, spread over the workers by the kernel


@pytest.fixture(scope="module")
def server(data_dir: Path, database_url: str) -> Iterator[Server]:
    extra = {}
    if os.environ.get("BASTION_TEST_REDIS_URL"):
        extra["BASTION_REDIS_URL"] = os.environ["BASTION_TEST_REDIS_URL"]
    with Server(server_env(data_dir, database_url, **extra), workers=2) as running:
        yield running


def statuses(server: Server, method: str, path: str, headers: dict[str, str], **kw) -> set[int]:  # type: ignore[no-untyped-def]
    seen = set()
    for _ in range(TRIES):
        with httpx.Client(base_url=server.url, timeout=10) as c:  # a new connection each time
            seen.add(c.request(method, path, headers=headers, **kw).status_code)
    return seen


def test_suspending_a_user_ends_sessions_and_keys(server: Server, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "admin")  # admins may create keys
    key = factory.api_key(org, "viewer", headers=member.headers)["key"]
    assert statuses(server, "GET", "/v1/me", member.headers) == {200}
    assert statuses(server, "GET", "/v1/me", bearer(key)) == {200}
    changed = httpx.patch(
        f"{server.url}/v1/orgs/{org.id}/users/{member.user_id}",
        json={"status": "suspended"},
        headers=org.headers,
    )
    assert changed.status_code == 200, changed.text
    assert statuses(server, "GET", "/v1/me", member.headers) == {401}
    assert statuses(server, "GET", "/v1/me", bearer(key)) == {401}


def test_deleting_a_user_ends_sessions_and_keys(server: Server, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "admin")  # admins may create keys
    key = factory.api_key(org, "viewer", headers=member.headers)["key"]
    assert statuses(server, "GET", "/v1/me", bearer(key)) == {200}
    deleted = httpx.delete(
        f"{server.url}/v1/orgs/{org.id}/users/{member.user_id}", headers=org.headers
    )
    assert deleted.status_code == 204, deleted.text
    assert statuses(server, "GET", "/v1/me", member.headers) == {401}
    assert statuses(server, "GET", "/v1/me", bearer(key)) == {401}


def test_revoking_a_key_and_logging_out(server: Server, factory: Factory) -> None:
    org = factory.org()
    created = factory.api_key(org, "viewer")
    assert statuses(server, "GET", "/v1/me", bearer(created["key"])) == {200}
    revoked = httpx.delete(
        f"{server.url}/v1/orgs/{org.id}/api-keys/{created['id']}", headers=org.headers
    )
    assert revoked.status_code == 204, revoked.text
    assert statuses(server, "GET", "/v1/me", bearer(created["key"])) == {401}

    member = factory.member(org, "viewer")
    assert statuses(server, "GET", "/v1/me", member.headers) == {200}
    assert httpx.post(f"{server.url}/v1/auth/logout", headers=member.headers).status_code == 204
    assert statuses(server, "GET", "/v1/me", member.headers) == {401}


def test_an_admin_ending_a_users_sessions_and_a_password_change(
    server: Server, factory: Factory
) -> None:
    org = factory.org()
    member = factory.member(org, "viewer")
    other = bearer(factory.login(member.email))
    assert statuses(server, "GET", "/v1/me", member.headers) == {200}
    assert statuses(server, "GET", "/v1/me", other) == {200}
    changed = httpx.post(
        f"{server.url}/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        headers=member.headers,
    )
    assert changed.status_code == 204, changed.text
    assert statuses(server, "GET", "/v1/me", other) == {401}
    assert statuses(server, "GET", "/v1/me", member.headers) == {200}
    ended = httpx.delete(
        f"{server.url}/v1/orgs/{org.id}/users/{member.user_id}/sessions", headers=org.headers
    )
    assert ended.status_code == 204, ended.text
    assert statuses(server, "GET", "/v1/me", member.headers) == {401}


def test_an_ip_allowlist_applies_on_every_worker(server: Server, factory: Factory) -> None:
    org = factory.org()
    url = f"{server.url}/v1/orgs/{org.id}"
    here = httpx.patch(url, json={"ip_allowlist": ["127.0.0.1/32"]}, headers=org.headers)
    assert here.status_code == 200, here.text
    assert statuses(server, "GET", "/v1/me", org.headers) == {200}
    assert statuses(server, "GET", "/v1/me", org.admin.headers) == {200}
    elsewhere = {"ip_allowlist": ["10.0.0.0/8"]}
    assert httpx.patch(url, json=elsewhere, headers=org.headers).status_code == 422
    away = httpx.patch(url, json={**elsewhere, "confirm_lockout": True}, headers=org.headers)
    assert away.status_code == 200, away.text
    assert statuses(server, "GET", "/v1/me", org.headers) == {403}
    assert statuses(server, "GET", "/v1/me", org.admin.headers) == {403}


def test_key_expiry_is_checked_at_request_time(server: Server, factory: Factory) -> None:
    org = factory.org()
    expires = datetime.now(UTC) + timedelta(seconds=6)  # room for a loaded machine
    response = httpx.post(
        f"{server.url}/v1/orgs/{org.id}/api-keys",
        json={"name": "short", "role": "viewer", "expires_at": expires.isoformat()},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    key = response.json()["key"]
    assert statuses(server, "GET", "/v1/me", bearer(key)) == {200}
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    assert statuses(server, "GET", "/v1/me", bearer(key)) == {401}


def test_role_change_applies_to_the_next_request(server: Server, factory: Factory) -> None:
    org: Org = factory.org()
    member = factory.member(org, "manager")
    teams = f"/v1/orgs/{org.id}/teams"
    made = statuses(server, "GET", teams, member.headers)
    assert made == {200}
    changed = httpx.patch(
        f"{server.url}/v1/orgs/{org.id}/users/{member.user_id}",
        json={"role": "viewer"},
        headers=org.headers,
    )
    assert changed.status_code == 200, changed.text
    refused = set()
    for i in range(TRIES):
        with httpx.Client(base_url=server.url, timeout=10) as c:
            refused.add(c.post(teams, json={"name": f"t{i}"}, headers=member.headers).status_code)
    assert refused == {403}
    assert statuses(server, "GET", teams, member.headers) == {200}  # viewers still read


def _agent_run(server: Server, org: Org, member_headers: dict[str, str], **limits: int) -> Any:
    base = f"{server.url}/v1/orgs/{org.id}"
    tools = [{"name": "lookup_order", "input_schema": {"type": "object"}, "risk": "low"}]
    agent = httpx.post(
        f"{base}/agents",
        json={"name": "a", "visibility": "org", "tools": tools},
        headers=org.headers,
    )
    assert agent.status_code == 201, agent.text
    run = httpx.post(
        f"{base}/agents/{agent.json()['id']}/runs", json=limits, headers=member_headers
    )
    assert run.status_code == 201, run.text
    return agent.json()["id"], run.json()["run_id"], bearer(run.json()["token"])


def test_a_revoked_run_or_deleted_agent_stops_its_token_on_every_worker(
    server: Server, factory: Factory
) -> None:
    org = factory.org()
    member = factory.member(org)
    call = {"json": {"tool": "lookup_order"}}
    for end in ("revoke", "delete agent"):
        agent, run, token = _agent_run(server, org, member.headers)
        path = f"/v1/runs/{run}/tool-calls"
        assert statuses(server, "POST", path, token, **call) == {201}  # cached on both workers
        if end == "revoke":
            ended = httpx.post(
                f"{server.url}/v1/orgs/{org.id}/runs/{run}/revoke", headers=member.headers
            )
        else:
            ended = httpx.delete(
                f"{server.url}/v1/orgs/{org.id}/agents/{agent}", headers=org.headers
            )
        assert ended.status_code in (200, 204), ended.text
        assert statuses(server, "POST", path, token, **call) == {401}
        assert statuses(server, "GET", f"/v1/runs/{run}", token) == {401}


def test_concurrent_tool_calls_keep_budgets_exact_and_the_chain_whole(
    server: Server, factory: Factory
) -> None:
    """Many agents' calls at once on both workers (committed in groups): each run allows
    exactly its budget, every decision has its audit event, and the chain verifies."""
    org = factory.org()
    member = factory.member(org)
    runs = [_agent_run(server, org, member.headers, max_tool_calls=15)[1:] for _ in range(3)]
    decisions: dict[str, list[str]] = {run: [] for run, _ in runs}
    calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    lock = threading.Lock()

    def agent(run: str, token: dict[str, str]) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for _ in range(5):
                answer = c.post(
                    f"/v1/runs/{run}/tool-calls", json={"tool": "lookup_order"}, headers=token
                )
                assert answer.status_code == 201, answer.text
                with lock:
                    decisions[run].append(answer.json()["reason"])
                    calls.append((run, token, answer.json()))

    threads = [threading.Thread(target=agent, args=run) for run in runs for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for run, reasons in decisions.items():
        assert len(reasons) == 20
        assert reasons.count("budget_exhausted") == 5, (run, reasons)
    events = httpx.get(
        f"{server.url}/v1/orgs/{org.id}/audit-events",
        params={"type": "tool_call.decided", "limit": 100},
        headers=org.headers,
    ).json()["data"]
    assert len(events) == 60
    assert {e["resource"]["id"] for e in events} == {call["id"] for _, _, call in calls}
    for run, token, call in calls:  # each decided call was written, as it was answered
        stored = httpx.get(f"{server.url}/v1/runs/{run}/tool-calls/{call['id']}", headers=token)
        assert stored.status_code == 200, stored.text
        assert (stored.json()["decision"], stored.json()["reason"]) == (
            call["decision"],
            call["reason"],
        )
    verified = httpx.post(f"{server.url}/v1/orgs/{org.id}/audit-events/verify", headers=org.headers)
    assert verified.json()["valid"] is True, verified.text


def test_a_totp_code_is_accepted_once_across_workers(server: Server, factory: Factory) -> None:
    """The same code sent at once on fresh connections to both workers: one session,
    every other answer 401 (the last step is compared and set in the database)."""
    org = factory.org()
    enrolled = enrol_totp(factory.client, org.admin.headers)  # used this step's code
    code = pyotp.TOTP(enrolled.secret).at(time.time() + 30)  # the next step, in the window
    tokens = []
    for _ in range(6):
        with httpx.Client(base_url=server.url, timeout=10) as c:
            owed = c.post("/v1/auth/login", json={"email": org.admin.email, "password": PASSWORD})
            tokens.append(owed.json()["mfa_token"])
    results: list[int] = []
    start = threading.Barrier(len(tokens))

    def redeem(token: str) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            start.wait()
            body = {"mfa_token": token, "method": "totp", "code": code}
            results.append(c.post("/v1/auth/mfa", json=body).status_code)

    threads = [threading.Thread(target=redeem, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [401] * (len(tokens) - 1)


def test_a_passkey_assertion_signs_in_once_across_workers(server: Server, factory: Factory) -> None:
    """One passwordless assertion sent at once on fresh connections to both workers: one
    session, every other answer 401 (the challenge is used by compare-and-set)."""
    from tests.identity.webauthn_authenticator import SoftAuthenticator

    org = factory.org()
    key = SoftAuthenticator()
    client = factory.client
    options = client.post("/v1/me/mfa/webauthn/registration-options", headers=org.admin.headers)
    done = client.post(
        "/v1/me/mfa/webauthn",
        json={"credential": key.create(options.json())},
        headers=org.admin.headers,
    )
    assert done.status_code == 200, done.text
    assertion = key.get(httpx.post(f"{server.url}/v1/auth/passkey/options").json())
    results: list[int] = []
    start = threading.Barrier(6)

    def redeem() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            start.wait()
            results.append(c.post("/v1/auth/passkey", json={"credential": assertion}).status_code)

    threads = [threading.Thread(target=redeem) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [401] * 5


def test_a_revoked_oauth_token_stops_on_every_worker(server: Server, factory: Factory) -> None:
    org = factory.org()
    base = f"{server.url}/v1/orgs/{org.id}"
    account = httpx.post(
        f"{base}/service-accounts", json={"name": "robot", "role": "viewer"}, headers=org.headers
    ).json()["id"]
    made = httpx.post(
        f"{base}/service-accounts/{account}/oauth-clients", json={"name": "c"}, headers=org.headers
    ).json()
    auth = (made["client_id"], made["client_secret"])
    grant = {"grant_type": "client_credentials"}
    issued = httpx.post(f"{server.url}/v1/oauth/token", data=grant, auth=auth)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert statuses(server, "GET", "/v1/me", bearer(token)) == {200}  # every worker caches it
    revoked = httpx.post(f"{server.url}/v1/oauth/revoke", data={"token": token}, auth=auth)
    assert revoked.status_code == 200
    assert statuses(server, "GET", "/v1/me", bearer(token)) == {401}
    # Another token of the client works; deleting the client ends it everywhere too.
    again = httpx.post(f"{server.url}/v1/oauth/token", data=grant, auth=auth).json()
    assert statuses(server, "GET", "/v1/me", bearer(again["access_token"])) == {200}
    gone = httpx.delete(
        f"{base}/service-accounts/{account}/oauth-clients/{made['client_id']}", headers=org.headers
    )
    assert gone.status_code == 204
    assert statuses(server, "GET", "/v1/me", bearer(again["access_token"])) == {401}
