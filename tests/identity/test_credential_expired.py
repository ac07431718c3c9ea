"""Expired credentials say so (issue 20): an expired API key, an expired or idle session,
an expired or ended agent run get 401 `credential_expired` with an RFC 6750
`invalid_token` challenge, on the lean routes and the framework's alike; an unknown or
wrong credential keeps the generic 401 (its secret was never verified: no oracle)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from bastion.core.clock import clock
from tests.factories import Factory, Org, bearer


def _assert_expired(response: Any, description: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == "credential_expired"
    assert body["type"].endswith("/credential_expired")
    assert body["detail"] == description
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert f'error_description="{description}"' in challenge


def _assert_generic(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unauthenticated"
    assert "error=" not in response.headers["www-authenticate"]


def _both_paths(client: TestClient, org: Org, token: str) -> list[Any]:
    """The lean `/v1/me` and a framework route."""
    headers = bearer(token)
    return [
        client.get("/v1/me", headers=headers),
        client.get(f"/v1/orgs/{org.id}/teams", headers=headers),
    ]


def test_an_expired_api_key(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    expires = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    key = client.post(
        f"/v1/orgs/{org.id}/api-keys",
        json={"name": "short", "role": "viewer", "expires_at": expires},
        headers=org.headers,
    ).json()["key"]
    assert [r.status_code for r in _both_paths(client, org, key)] == [200, 200]
    clock.advance(601)
    for response in _both_paths(client, org, key):
        _assert_expired(response, "the API key has expired: use a new key")
    # The same key with a wrong secret, and an unknown key: the generic answer.
    prefix, _, secret = key.rpartition("_")
    wrong = f"{prefix}_{'A' * len(secret)}"
    for response in _both_paths(client, org, wrong):
        _assert_generic(response)
    for response in _both_paths(client, org, "bsk_key_01M9NOTAKEY0000000000000_" + secret):
        _assert_generic(response)


def test_a_revoked_key_keeps_the_generic_answer(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    key = factory.api_key(org, "viewer")
    revoked = client.delete(f"/v1/orgs/{org.id}/api-keys/{key['id']}", headers=org.headers)
    assert revoked.status_code == 204
    for response in _both_paths(client, org, key["key"]):
        _assert_generic(response)


def test_an_idle_session(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    token = factory.login(org.admin.email)
    assert [r.status_code for r in _both_paths(client, org, token)] == [200, 200]
    clock.advance(31 * 60)
    for response in _both_paths(client, org, token):
        _assert_expired(response, "the session has expired: sign in again")


def test_an_expired_and_an_ended_run(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    base = f"/v1/orgs/{org.id}"
    body = {"name": "agent", "visibility": "org", "tools": [{"name": "lookup", "risk": "low"}]}
    agent = client.post(f"{base}/agents", json=body, headers=org.headers).json()["id"]

    def start() -> tuple[str, str]:
        run = client.post(f"{base}/agents/{agent}/runs", json={}, headers=member.headers)
        assert run.status_code == 201, run.text
        return run.json()["run_id"], run.json()["token"]

    def calls(run_id: str, token: str) -> list[Any]:
        return [
            client.post(  # lean
                f"/v1/runs/{run_id}/tool-calls",
                json={"tool": "lookup", "arguments": {}},
                headers=bearer(token),
            ),
            client.get(f"/v1/runs/{run_id}", headers=bearer(token)),  # the framework's
        ]

    ended, ended_token = start()
    assert [r.status_code for r in calls(ended, ended_token)] == [201, 200]
    stop = client.post(f"{base}/runs/{ended}/revoke", headers=member.headers)
    assert stop.status_code == 200, stop.text
    for response in calls(ended, ended_token):
        _assert_expired(response, "the agent run has ended: start a new run")
    lapsed, lapsed_token = start()
    clock.advance(48 * 3600)
    for response in calls(lapsed, lapsed_token):
        _assert_expired(response, "the agent run has ended: start a new run")
