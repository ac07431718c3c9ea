"""Credential kinds another domain owns (agent run tokens) are authenticated only
through the resolver that domain registered: unregistered, such a token is refused,
even when a cached answer holds it (default deny)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bastion.identity import credentials
from bastion.identity.tokens import TokenKind
from tests.factories import Factory, bearer


def _run(client: TestClient, factory: Factory) -> tuple[str, dict[str, str]]:
    org = factory.org()
    base = f"/v1/orgs/{org.id}"
    agent = client.post(
        f"{base}/agents", json={"name": "a", "visibility": "org", "tools": []}, headers=org.headers
    )
    assert agent.status_code == 201, agent.text
    run = client.post(
        f"{base}/agents/{agent.json()['id']}/runs", json={}, headers=org.admin.headers
    )
    assert run.status_code == 201, run.text
    return run.json()["run_id"], bearer(run.json()["token"])


def test_agents_register_run_tokens() -> None:
    found = credentials.resolver(TokenKind.AGENT_RUN)
    assert found is not None
    assert found.name == "agent_runs"


def test_an_unregistered_kind_is_refused_even_from_the_cache(
    client: TestClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, headers = _run(client, factory)
    for _ in range(2):  # the second answer comes from the cache
        assert client.get(f"/v1/runs/{run_id}", headers=headers).status_code == 200
    monkeypatch.setattr(credentials, "_RESOLVERS", {})
    refused = client.get(f"/v1/runs/{run_id}", headers=headers)
    assert refused.status_code == 401
    monkeypatch.undo()
    assert client.get(f"/v1/runs/{run_id}", headers=headers).status_code == 200


def test_a_kind_has_one_owner() -> None:
    run = credentials.resolver(TokenKind.AGENT_RUN)
    assert run is not None
    for kind in (TokenKind.API_KEY, TokenKind.SESSION, TokenKind.SETUP):
        with pytest.raises(ValueError, match="identity's own"):
            credentials.register(credentials.Resolver(kind, run.resolve, run.digest, run.live, "x"))
    with pytest.raises(ValueError, match="already have a resolver"):
        credentials.register(
            credentials.Resolver(TokenKind.AGENT_RUN, run.resolve, run.digest, run.live, "x")
        )
