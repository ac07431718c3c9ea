"""The facts registry (`bastion.authz.facts`): identity and agents register their
providers when imported, the index reads people, accounts, keys and agents through
them, and without a provider every decision that needs its facts refuses."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.agents import facts as agent_provider
from bastion.authz import engine, facts
from bastion.core.clock import utcnow
from bastion.identity import facts as identity_provider
from tests.factories import Factory, Org


def _world(client: TestClient, factory: Factory, configurer: str) -> dict[str, str]:
    """A viewer reading a source's document, and an org-wide agent connected to the
    source by the admin (`configurer`: "key", the org's owner-less key, or "user")."""
    org = factory.org()
    base = f"/v1/orgs/{org.id}"
    viewer = factory.member(org, "viewer").user_id
    source = client.post(f"{base}/sources", json={"name": "drive"}, headers=org.headers)
    source_id = source.json()["id"]
    body = {"external_id": "x", "metadata": {}, "acl": {"inherit": True}}
    doc = client.post(f"{base}/sources/{source_id}/documents", json=body, headers=org.headers)
    acl = client.put(
        f"{base}/sources/{source_id}/acl/{viewer}",
        json={"relation": "reader"},
        headers=org.headers,
    )
    assert acl.status_code == 200, acl.text
    agent = client.post(
        f"{base}/agents", json={"name": "a", "visibility": "org"}, headers=org.headers
    ).json()["id"]
    headers = org.headers if configurer == "key" else org.admin.headers
    connected = client.patch(
        f"{base}/agents/{agent}", json={"connections": [source_id]}, headers=headers
    )
    assert connected.status_code == 200, connected.text
    return {"org": org.id, "viewer": viewer, "doc": doc.json()["id"], "agent": agent}


def _decide(app: Any, world: dict[str, str], subject: str, resource: tuple[str, str]) -> Any:
    """A decision on an index built now, with whatever providers are registered."""
    with app.state.bastion.sessions() as db:
        index = engine.build_index(db, world["org"], (0,))
    now = utcnow()
    who = engine.subject_of(index, subject, now)
    return engine.decide(index, who, "read", resource[0], resource[1], now)


def test_identity_and_agents_register_their_providers_when_imported() -> None:
    assert isinstance(facts.principal_facts(), identity_provider._Principals)
    assert isinstance(facts.agent_facts(), agent_provider._Agents)


@pytest.mark.parametrize("configurer", ["key", "user"])
def test_with_both_providers_people_and_agents_are_decided(
    client: TestClient, factory: Factory, app: Any, configurer: str
) -> None:
    world = _world(client, factory, configurer)
    assert _decide(app, world, world["viewer"], ("document", world["doc"])).allowed
    assert _decide(app, world, world["viewer"], ("agent", world["agent"])).allowed
    assert _decide(app, world, world["agent"], ("document", world["doc"])).allowed


@pytest.mark.parametrize("configurer", ["key", "user"])
def test_without_identitys_provider_people_keys_and_their_agents_are_refused(
    client: TestClient, factory: Factory, app: Any, monkeypatch: pytest.MonkeyPatch, configurer: str
) -> None:
    world = _world(client, factory, configurer)
    monkeypatch.delitem(facts._providers, "principals")
    refused = _decide(app, world, world["viewer"], ("document", world["doc"]))
    assert (refused.allowed, refused.reason) == (False, "unknown_subject")
    # The agent is known, but whoever configured it is not: it reads no source.
    assert not _decide(app, world, world["agent"], ("document", world["doc"])).allowed


def test_without_identitys_provider_an_acl_entry_cannot_name_a_user(
    client: TestClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    org: Org = factory.org()
    base = f"/v1/orgs/{org.id}"
    viewer = factory.member(org, "viewer").user_id
    team = client.post(f"{base}/teams", json={"name": "eng"}, headers=org.headers).json()["id"]
    source = client.post(f"{base}/sources", json={"name": "drive"}, headers=org.headers)
    url = f"{base}/sources/{source.json()['id']}/acl"
    monkeypatch.delitem(facts._providers, "principals")
    named = client.put(f"{url}/{viewer}", json={"relation": "reader"}, headers=org.headers)
    assert named.status_code == 422, named.text
    # Teams are tenancy's, asked directly: still accepted.
    by_team = client.put(f"{url}/{team}", json={"relation": "reader"}, headers=org.headers)
    assert by_team.status_code == 200, by_team.text


def test_without_the_agents_provider_no_agent_is_known(
    client: TestClient, factory: Factory, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(client, factory, "user")
    monkeypatch.delitem(facts._providers, "agents")
    refused = _decide(app, world, world["viewer"], ("agent", world["agent"]))
    assert (refused.allowed, refused.reason) == (False, "unknown_resource")
    as_agent = _decide(app, world, world["agent"], ("document", world["doc"]))
    assert (as_agent.allowed, as_agent.reason) == (False, "unknown_subject")
    # People are unaffected.
    assert _decide(app, world, world["viewer"], ("document", world["doc"])).allowed
