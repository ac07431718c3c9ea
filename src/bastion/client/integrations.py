"""OAuth integrations and MCP servers: the generated APIs (`client.integrations`,
`client.mcp_servers`, sync and async) plus what the generator cannot make — the consent
URL (a browser redirect), a run's integration token with the run's own token, the run's
gateway URL, and removing an MCP server's integration (a JSON `null`):

    from bastion.client import Client

    with Client(url, token="bsk_…") as bastion:
        github = bastion.integrations.create(org, name="github", provider="github",
                                             client_id="…", client_secret="…")
        print(bastion.integrations.connect_url(org, github.id))   # a person consents there
        server = bastion.mcp_servers.create(org, name="gh", url="https://mcp.example/mcp",
                                            integration="github")
        tools = bastion.mcp_servers.tools(org, server.id).data    # as agents declare them

        run = bastion.runs.start(agent_id, on_behalf_of=user_id)
        token = bastion.integrations.token(run, "github")         # .access_token, .expires_at
        gateway = bastion.mcp_servers.gateway_url(run)             # speak MCP there, run token

`Integrations(client)` and `McpServers(client)` (and the `Async…` pair) are the classes
the clients use. Docs: docs/integrations.md, docs/mcp.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import httpx

from bastion.client import _generated as g
from bastion.client import models as m
from bastion.client._base import Req, _p, headers_for
from bastion.client._errors import TransportError, from_response

if TYPE_CHECKING:
    from bastion.client._async import AsyncClient, AsyncRun
    from bastion.client._sync import Client, Run


def _connect(org: str, integration: str) -> Req:
    return Req("GET", _p("orgs", org, "integrations", integration, "connect"))


def _location(response: httpx.Response) -> str:
    """The provider's authorize URL from the 302, else the problem as a typed error."""
    if response.status_code == 302 and "location" in response.headers:
        return str(response.headers["location"])
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    raise from_response(response.status_code, body, response.headers.get("retry-after"))


def _gateway(base_url: httpx.URL, run_id: str) -> str:
    return f"{str(base_url).rstrip('/')}/v1/runs/{run_id}/mcp"


def _no_integration(org: str, server: str) -> Req:
    return Req("PATCH", _p("orgs", org, "mcp-servers", server), json={"integration": None})


class Integrations(g.IntegrationsAPI):
    """`client.integrations`: the generated operations, the consent URL and a run's
    access token."""

    def connect_url(self, org: str, integration: str, return_to: str = "/console/") -> str:
        """Where to send the person who consents (the provider's authorize URL, with
        state and PKCE). The flow is bound to the browser that follows it: open it in
        the browser of the person whose credentials this client holds (an API key is
        refused: 403)."""
        c = cast("Client", self._c)
        req = _connect(org, integration)
        try:
            response = c._http.get(
                req.path,
                params={"return_to": return_to},
                headers=headers_for(c._bearer(), req),
                follow_redirects=False,
            )
        except Exception as exc:  # the transport's own errors: typed as the SDK's
            raise TransportError(f"GET {req.path}: {type(exc).__name__}") from None
        return _location(response)

    def token(self, run: Run, name: str) -> m.IntegrationsTokenOut:
        """The integration's short-lived access token for `run` (its agent must be
        connected to it), asked with the run's own token."""
        return run._c.runs.integration_token(run.id, name)


class McpServers(g.McpServersAPI):
    """`client.mcp_servers`: the generated operations, a run's gateway URL and removing
    a server's integration."""

    def gateway_url(self, run: Run) -> str:
        """The run's MCP endpoint (Streamable HTTP; authenticate with `run.token`)."""
        return _gateway(cast("Client", self._c)._http.base_url, run.id)

    def remove_integration(self, org: str, server: str) -> m.McpServerOut:
        """The server stops authenticating with an integration's token (`update` cannot
        send `"integration": null`: its None means "unchanged")."""
        return cast(m.McpServerOut, self._c._request(_no_integration(org, server), m.McpServerOut))


class AsyncIntegrations(g.AsyncIntegrationsAPI):
    """`AsyncClient.integrations`: as `Integrations`, awaited."""

    async def connect_url(self, org: str, integration: str, return_to: str = "/console/") -> str:
        """As `Integrations.connect_url`."""
        c = cast("AsyncClient", self._c)
        req = _connect(org, integration)
        try:
            response = await c._http.get(
                req.path,
                params={"return_to": return_to},
                headers=headers_for(await c._bearer(), req),
                follow_redirects=False,
            )
        except Exception as exc:
            raise TransportError(f"GET {req.path}: {type(exc).__name__}") from None
        return _location(response)

    async def token(self, run: AsyncRun, name: str) -> m.IntegrationsTokenOut:
        """As `Integrations.token`."""
        return await run._c.runs.integration_token(run.id, name)


class AsyncMcpServers(g.AsyncMcpServersAPI):
    """`AsyncClient.mcp_servers`: as `McpServers`, awaited."""

    def gateway_url(self, run: AsyncRun) -> str:
        """The run's MCP endpoint (Streamable HTTP; authenticate with `run.token`)."""
        return _gateway(cast("AsyncClient", self._c)._http.base_url, run.id)

    async def remove_integration(self, org: str, server: str) -> m.McpServerOut:
        """As `McpServers.remove_integration`."""
        done: Any = await self._c._request(_no_integration(org, server), m.McpServerOut)
        return cast(m.McpServerOut, done)
