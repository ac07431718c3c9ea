"""A run fetches an access token of an integration its agent is connected to, while the
agent's configurer still holds `integrations:use`; nobody hands on what they do not hold."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import Factory, Member, Org, bearer
from tests.integrations.conftest import connect, events, register
from tests.integrations.peers import OAuthServer


def _agent(client: TestClient, org: Org, who: Member | None, **body: Any) -> Any:
    headers = who.headers if who else org.headers
    return client.post(
        f"/v1/orgs/{org.id}/agents",
        json={"name": "a", "visibility": "org", **body},
        headers=headers,
    )


def _run(client: TestClient, org: Org, agent: str, who: Member) -> str:
    started = client.post(f"/v1/orgs/{org.id}/agents/{agent}/runs", json={}, headers=who.headers)
    assert started.status_code == 201, started.text
    return str(started.json()["token"])


def _run_id(client: TestClient, token: str) -> str:
    return str(client.get("/v1/me", headers=bearer(token)).json()["id"])


def _fetch(client: TestClient, token: str, name: str, run: str | None = None) -> Any:
    run = run or _run_id(client, token)
    return client.post(f"/v1/runs/{run}/integrations/{name}/token", headers=bearer(token))


def test_a_connected_agents_run_gets_a_short_lived_access_token(
    client: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    integration = connect(client, org, oauth_server)
    name = integration["name"]
    created = _agent(client, org, org.admin, connections=[name])
    assert created.status_code == 201, created.text
    token = _run(client, org, created.json()["id"], org.admin)

    got = _fetch(client, token, name)

    assert got.status_code == 200, got.text
    assert set(got.json()) == {"access_token", "expires_at"}  # never the refresh token
    assert oauth_server.introspect(got.json()["access_token"])["active"]
    again = _fetch(client, token, name)
    assert again.json() == got.json()  # cached: the same token until it is refreshed
    issued = events(client, org, "integration.token_issued")
    assert len(issued) == 2
    assert issued[0]["resource"]["id"] == integration["id"]
    assert got.json()["access_token"] not in str(issued)


def test_an_unconnected_agents_run_gets_nothing(
    client: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    integration = connect(client, org, oauth_server)
    created = _agent(client, org, org.admin, connections=["something-else"])
    token = _run(client, org, created.json()["id"], org.admin)
    refused = _fetch(client, token, integration["name"])
    assert refused.status_code == 403
    assert events(client, org, "integration.token_issued") == []


def test_other_tenants_and_other_runs_find_nothing(
    client: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org, other = factory.org(), factory.org()
    integration = connect(client, org, oauth_server)
    name = integration["name"]
    mine = _run(client, org, _agent(client, org, org.admin, connections=[name]).json()["id"],
                org.admin)  # fmt: skip
    # The other organisation's agent names a connection of the same name: it is not theirs.
    theirs = _run(
        client, other, _agent(client, other, other.admin, connections=[name]).json()["id"],
        other.admin,
    )  # fmt: skip
    assert _fetch(client, theirs, name).status_code == 404
    # … and their run token cannot act as our run.
    assert _fetch(client, theirs, name, run=_run_id(client, mine)).status_code == 404
    # A member's session is not the run's token: it finds nothing either.
    assert _fetch(client, org.admin.token, name, run=_run_id(client, mine)).status_code == 404
    assert _fetch(client, mine, name).status_code == 200


def test_connecting_needs_integrations_use_and_losing_it_stops_the_tokens(
    client: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    integration = connect(client, org, oauth_server)
    name = integration["name"]
    member = factory.member(org, "member")
    refused = _agent(client, org, member, connections=[name])
    assert refused.status_code == 403
    assert refused.json()["detail"] == "connecting an integration needs the right to use it"
    own = _agent(client, org, member).json()["id"]
    patched = client.patch(
        f"/v1/orgs/{org.id}/agents/{own}", json={"connections": [name]}, headers=member.headers
    )
    assert patched.status_code == 403

    manager = factory.member(org, "manager")  # holds integrations:use
    created = _agent(client, org, manager, connections=[name])
    assert created.status_code == 201, created.text
    token = _run(client, org, created.json()["id"], manager)
    assert _fetch(client, token, name).status_code == 200

    demoted = client.patch(
        f"/v1/orgs/{org.id}/users/{manager.user_id}", json={"role": "member"}, headers=org.headers
    )
    assert demoted.status_code == 200, demoted.text
    stopped = _fetch(client, token, name)
    assert stopped.status_code == 403
    assert "configurer may no longer hand on" in stopped.json()["detail"]
    denied = events(client, org, "authz.denied")
    assert denied[0]["metadata"]["permission"] == "integrations:use"


def test_a_pending_integration_hands_out_nothing(
    client: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    integration = register(client, org, oauth_server)
    created = _agent(client, org, org.admin, connections=[integration["name"]])
    token = _run(client, org, created.json()["id"], org.admin)
    answer = _fetch(client, token, integration["name"])
    assert answer.status_code == 409
    assert answer.json()["code"] == "integration_not_connected"
