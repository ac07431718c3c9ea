"""The SDK's integrations and MCP servers (`bastion.client.integrations`) against the
real app: register, list, bind an integration to an MCP server, the connect URL (PKCE,
state), typed errors, and a run's gateway URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from bastion.client import Client, NotFoundError, PermissionDeniedError, ValidationError
from bastion.client.integrations import Integrations, McpServers
from tests.factories import Factory


def test_integrations_and_mcp_servers_with_the_sdk(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    sdk = Client(http_client=client, token=org.admin_key)
    integrations, mcp = Integrations(sdk), McpServers(sdk)
    created = integrations.create(
        org.id, name="github", provider="github", client_id="cid", client_secret="csecret-0123"
    )
    assert created["name"] == "github"
    assert "csecret" not in str(created)
    assert [i["id"] for i in integrations.list(org.id)] == [created["id"]]
    assert integrations.get(org.id, created["id"])["status"] == "pending"
    with pytest.raises(PermissionDeniedError):  # an API key: the consent is a person's
        integrations.connect_url(org.id, created["id"])
    person = Integrations(Client(http_client=client, token=org.admin.token))
    location = person.connect_url(org.id, created["id"])
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert location.startswith("https://github.com/")
    assert query["code_challenge_method"] == "S256"
    assert query["state"]

    server = mcp.create(org.id, name="gh", url="http://127.0.0.1:9/mcp", integration="github")
    assert server["integration"] == "github"
    assert server["header_names"] == []
    assert [s["id"] for s in mcp.list(org.id)] == [server["id"]]
    with pytest.raises(ValidationError) as bad:
        mcp.update(org.id, server["id"], integration="nope")
    assert bad.value.errors[0].field.endswith("integration")
    assert mcp.update(org.id, server["id"], integration=None)["integration"] is None
    mcp.delete(org.id, server["id"])
    with pytest.raises(NotFoundError):
        mcp.get(org.id, server["id"])
    integrations.delete(org.id, created["id"])
    with pytest.raises(NotFoundError):
        integrations.get(org.id, created["id"])

    agent = sdk.agents.create(org.id, name="a", visibility="org", tools=[], connections=[])
    run = sdk.runs.start(agent["id"], on_behalf_of=org.admin.user_id)
    assert mcp.gateway_url(run).endswith(f"/v1/runs/{run.id}/mcp")
    with pytest.raises(PermissionDeniedError):  # not among the agent's connections
        integrations.token(run, "github")
