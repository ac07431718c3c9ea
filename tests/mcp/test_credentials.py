"""An MCP server whose credential is an OAuth integration: the gateway adds the
integration's current access token as the bearer, the agent never sees it, and a token
due for refresh is refreshed by the integrations service before it is used. Real peers:
`oidc-provider` (tests.integrations.peers, as the integration tests use it), a real
upstream MCP server that accepts only a bearer its OAuth server says is active, a real
`bastion serve` and a real MCP client session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.core.clock import utcnow
from bastion.integrations.models import Integration
from bastion.mcp.upstream import TOKEN_SECONDS
from tests.e2e.server import Server
from tests.factories import Factory
from tests.integrations.conftest import connect, tokens_of
from tests.integrations.peers import OAuthServer
from tests.mcp.conftest import World
from tests.mcp.upstream import Upstream

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuthServer]:
    server = OAuthServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def resource(oauth: OAuthServer) -> Iterator[Upstream]:
    """The upstream MCP server as an OAuth resource server: a bearer the provider does
    not call active is refused (401)."""

    def active(token: str) -> bool:
        return bool(oauth.introspect(token).get("active"))

    with Upstream(check=active) as up:
        yield up


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def _bearers(up: Upstream, since: int) -> set[str]:
    return {h.get("authorization", "") for h in up.headers[since:]}


def _world(server: Server, factory: Factory, client: TestClient, oauth: OAuthServer,
           resource: Upstream) -> tuple[World, dict[str, Any]]:  # fmt: skip
    org = factory.org()
    integration = connect(client, org, oauth)
    world = World(
        server.url, factory, resource.url, org=org, server_body={"integration": integration["name"]}
    )
    return world, integration


def test_the_gateway_adds_the_integrations_token_and_refreshes_it(
    server: Server, factory: Factory, client: TestClient, oauth: OAuthServer, resource: Upstream
) -> None:
    before = len(resource.headers)
    world, integration = _world(server, factory, client, oauth, resource)
    assert world.server["integration"] == integration["name"]
    assert world.server["header_names"] == []
    first = tokens_of(factory, integration["id"]).access_token
    # Discovery (the registry's tool list) already spoke to the upstream with the token.
    assert _bearers(resource, before) == {f"Bearer {first}"}

    seen = len(resource.headers)
    calls = len(resource.calls)
    result = world.call("calc.add", {"a": 2, "b": 40})
    assert not result.is_error, _text(result)
    assert _text(result) == "42"
    assert resource.calls[calls:] == [("add", {"a": 2, "b": 40})]
    assert _bearers(resource, seen) == {f"Bearer {first}"}
    assert first not in str(result.model_dump())
    assert first not in str(world.server)

    # The token is due (it expires within the minute): the next call refreshes it first,
    # through the integrations service, and the upstream sees the new one.
    with factory.state.sessions() as db:
        row = db.execute(
            select(Integration).where(Integration.id == integration["id"])
        ).scalar_one()
        row.access_expires_at = utcnow() + timedelta(seconds=30)
        db.commit()
    time.sleep(TOKEN_SECONDS + 0.5)  # past the gateway's brief keeping of the token
    seen = len(resource.headers)
    result = world.call("calc.add", {"a": 1, "b": 1})
    assert not result.is_error, _text(result)
    second = tokens_of(factory, integration["id"]).access_token
    assert second != first
    assert _bearers(resource, seen) == {f"Bearer {second}"}
    assert oauth.introspect(second)["active"] is True
    refreshed = world.events("integration.token_refreshed")
    assert refreshed
    assert refreshed[0]["metadata"]["name"] == integration["name"]


def test_a_disconnected_integration_refuses_the_call_before_the_upstream(
    server: Server, factory: Factory, client: TestClient, oauth: OAuthServer, resource: Upstream
) -> None:
    world, integration = _world(server, factory, client, oauth, resource)
    with factory.state.sessions() as db:
        row = db.execute(
            select(Integration).where(Integration.id == integration["id"])
        ).scalar_one()
        row.status = "disconnected"
        db.commit()
    time.sleep(TOKEN_SECONDS + 0.5)  # past the gateway's brief keeping of the token
    calls = len(resource.calls)
    result = world.call("calc.add", {"a": 1, "b": 2})
    assert result.is_error
    bastion = result.structured_content["bastion"]
    assert bastion["decision"] == "deny"
    assert bastion["reason"] == f"credentials_unavailable:{world.server['id']}"
    assert resource.calls[calls:] == []
    assert world.events("tool_call.decided")[0]["outcome"] == "denied"


def test_binding_an_integration_is_validated(
    server: Server, factory: Factory, client: TestClient, oauth: OAuthServer, resource: Upstream
) -> None:
    org = factory.org()
    base = f"{server.url}/v1/orgs/{org.id}/mcp-servers"
    missing = httpx.post(
        base, json={"name": "x", "url": resource.url, "integration": "nope"}, headers=org.headers
    )
    assert missing.status_code == 422, missing.text
    assert missing.json()["errors"][0]["field"].endswith("integration")
    integration = connect(client, org, oauth)
    both = httpx.post(
        base,
        json={
            "name": "x",
            "url": resource.url,
            "integration": integration["name"],
            "headers": {"Authorization": "Bearer static"},
        },
        headers=org.headers,
    )
    assert both.status_code == 422, both.text
