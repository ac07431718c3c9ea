"""The SDK's integrations and MCP servers (`client.integrations`, `client.mcp_servers`:
the generated operations plus `bastion.client.integrations`' additions) against the real
app: register, list, bind an integration to an MCP server and remove it, the connect URL
(PKCE, state), typed errors, a run's integration token and gateway URL (sync and async)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from bastion.client import (
    AsyncClient,
    Client,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from bastion.client import models as m
from bastion.client.integrations import Integrations, McpServers
from tests.factories import Factory


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_integrations_and_mcp_servers_with_the_sdk(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    sdk = Client(http_client=client, token=org.admin_key)
    integrations, mcp = sdk.integrations, sdk.mcp_servers
    assert isinstance(integrations, Integrations)
    assert isinstance(mcp, McpServers)
    created = integrations.create(
        org.id, name="github", provider="github", client_id="cid", client_secret="csecret-0123"
    )
    assert isinstance(created, m.IntegrationOut)
    assert created.name == "github"
    assert "csecret" not in str(created.to_dict())
    assert [i.id for i in integrations.list(org.id)] == [created.id]
    assert integrations.get(org.id, created.id).status == "pending"
    with pytest.raises(PermissionDeniedError):  # an API key: the consent is a person's
        integrations.connect_url(org.id, created.id)
    person = Client(http_client=client, token=org.admin.token)
    location = person.integrations.connect_url(org.id, created.id)
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert location.startswith("https://github.com/")
    assert query["code_challenge_method"] == "S256"
    assert query["state"]
    with pytest.raises(NotFoundError):
        person.integrations.connect_url(org.id, "int_01ZZZZZZZZZZZZZZZZZZZZZZZZ")

    server = mcp.create(org.id, name="gh", url="http://127.0.0.1:9/mcp", integration="github")
    assert server.integration == "github"
    assert server.header_names == []
    assert [s.id for s in mcp.list(org.id)] == [server.id]
    with pytest.raises(ValidationError) as bad:
        mcp.update(org.id, server.id, integration="nope")
    assert bad.value.errors[0].field.endswith("integration")
    assert mcp.update(org.id, server.id, name="gh2").integration == "github"  # None: unchanged
    assert mcp.remove_integration(org.id, server.id).integration is None
    assert mcp.get(org.id, server.id).integration is None
    mcp.delete(org.id, server.id)
    with pytest.raises(NotFoundError):
        mcp.get(org.id, server.id)
    integrations.delete(org.id, created.id)
    with pytest.raises(NotFoundError):
        integrations.get(org.id, created.id)

    agent = sdk.agents.create(org.id, name="a", visibility="org", tools=[], connections=[])
    run = sdk.runs.start(agent.id, on_behalf_of=org.admin.user_id)
    assert mcp.gateway_url(run).endswith(f"/v1/runs/{run.id}/mcp")
    with pytest.raises(PermissionDeniedError):  # not among the agent's connections
        integrations.token(run, "github")


@pytest.mark.anyio
async def test_integrations_and_mcp_servers_with_the_async_sdk(app: Any, factory: Factory) -> None:
    org = factory.org()
    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://bastion.test", token=org.admin_key, transport=transport) as sdk:
        created = await sdk.integrations.create(
            org.id, name="github", provider="github", client_id="cid", client_secret="cs-0123"
        )
        assert [i.id async for i in sdk.integrations.list(org.id)] == [created.id]
        with pytest.raises(PermissionDeniedError):
            await sdk.integrations.connect_url(org.id, created.id)
        server = await sdk.mcp_servers.create(
            org.id, name="gh", url="http://127.0.0.1:9/mcp", integration="github"
        )
        assert (await sdk.mcp_servers.remove_integration(org.id, server.id)).integration is None
        agent = await sdk.agents.create(
            org.id, name="a", visibility="org", tools=[], connections=[]
        )
        run = await sdk.runs.start(agent.id, on_behalf_of=org.admin.user_id)
        assert sdk.mcp_servers.gateway_url(run) == f"http://bastion.test/v1/runs/{run.id}/mcp"
        with pytest.raises(PermissionDeniedError):
            await sdk.integrations.token(run, "github")
    person = AsyncClient("http://bastion.test", token=org.admin.token, transport=transport)
    async with person:
        location = await person.integrations.connect_url(org.id, created.id)
    assert location.startswith("https://github.com/")
