"""OAuth integrations and MCP servers with the SDK (sync), beside `bastion.client.Client`:

    from bastion.client import Client
    from bastion.client.integrations import Integrations, McpServers

    with Client(url, token="bsk_…") as bastion:
        integrations, mcp = Integrations(bastion), McpServers(bastion)
        github = integrations.create(org, name="github", provider="github",
                                     client_id="…", client_secret="…")
        print(integrations.connect_url(org, github["id"]))   # a person consents there
        server = mcp.create(org, name="gh", url="https://mcp.example/mcp",
                            integration="github")
        tools = mcp.tools(org, server["id"])                  # as agents declare them

        run = bastion.runs.start(agent_id, on_behalf_of=user_id)
        token = integrations.token(run, "github")             # {"access_token", "expires_at"}
        gateway = mcp.gateway_url(run)                         # speak MCP there, run token

Docs: docs/integrations.md, docs/mcp.md.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from typing import Any

from bastion.client._base import Req, _clean, _p, headers_for, post
from bastion.client._errors import TransportError, from_response
from bastion.client._sync import Client, Run

JSON = dict[str, Any]


def _org(org: str, *parts: str) -> str:
    return _p("orgs", org, *parts)


class Integrations:
    """`/v1/orgs/{org}/integrations` and a run's `…/integrations/{name}/token`."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def __repr__(self) -> str:
        return f"Integrations({self._c!r})"

    def create(
        self,
        org: str,
        *,
        name: str,
        provider: str,
        client_id: str,
        client_secret: str,
        scopes: list[str] | None = None,
        authorize_url: str | None = None,
        token_url: str | None = None,
        revoke_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        body = _clean(
            {
                "name": name,
                "provider": provider,
                "client_id": client_id,
                "client_secret": client_secret,
                "scopes": scopes,
                "authorize_url": authorize_url,
                "token_url": token_url,
                "revoke_url": revoke_url,
            }
        )
        return self._c._call(post(_org(org, "integrations"), body, idempotency_key))

    def list(self, org: str, *, page_size: int | None = None) -> Iterator[JSON]:
        params = _clean({"limit": page_size})
        return self._c._pages(Req("GET", _org(org, "integrations"), params=params))

    def get(self, org: str, integration: str) -> JSON:
        return self._c._call(Req("GET", _org(org, "integrations", integration)))

    def delete(self, org: str, integration: str) -> None:
        """Revoked at the provider, then deleted with its sealed tokens."""
        self._c._run(Req("DELETE", _org(org, "integrations", integration), expect_body=False))

    def connect_url(self, org: str, integration: str, return_to: str = "/console/") -> str:
        """Where to send the person who consents (the provider's authorize URL, with
        state and PKCE). The flow is bound to the browser that follows it: open it in
        the browser of the person whose credentials this client holds."""
        req = Req("GET", _org(org, "integrations", integration, "connect"))
        headers = headers_for(self._c._bearer(), req)
        try:
            response = self._c._http.get(
                req.path, params={"return_to": return_to}, headers=headers, follow_redirects=False
            )
        except Exception as exc:  # the transport's own errors: typed as the SDK's
            raise TransportError(f"GET {req.path}: {type(exc).__name__}") from None
        if response.status_code != 302 or "location" not in response.headers:
            body = response.json() if response.content else None
            raise from_response(response.status_code, body, response.headers.get("retry-after"))
        return str(response.headers["location"])

    def token(self, run: Run, name: str) -> JSON:
        """The integration's short-lived access token for `run` (its agent must be
        connected to it), with the run's own token: `{"access_token", "expires_at"}`."""
        return run._c._call(post(_p("runs", run.id, "integrations", name, "token"), {}, None))


class McpServers:
    """`/v1/orgs/{org}/mcp-servers` and a run's gateway, `/v1/runs/{run}/mcp`."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def __repr__(self) -> str:
        return f"McpServers({self._c!r})"

    def create(
        self,
        org: str,
        *,
        name: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        integration: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """`headers` are sealed and never shown again; `integration` makes that OAuth
        integration's access token the bearer the gateway adds."""
        body = _clean(
            {
                "name": name,
                "url": url,
                "headers": dict(headers) if headers is not None else None,
                "integration": integration,
            }
        )
        return self._c._call(post(_org(org, "mcp-servers"), body, idempotency_key))

    def list(self, org: str, *, page_size: int | None = None) -> Iterator[JSON]:
        params = _clean({"limit": page_size})
        return self._c._pages(Req("GET", _org(org, "mcp-servers"), params=params))

    def get(self, org: str, server: str) -> JSON:
        return self._c._call(Req("GET", _org(org, "mcp-servers", server)))

    def update(self, org: str, server: str, **changes: Any) -> JSON:
        """`name`, `url`, `headers` (replaces them all), `integration` (None removes it)."""
        return self._c._call(Req("PATCH", _org(org, "mcp-servers", server), json=changes))

    def delete(self, org: str, server: str) -> None:
        self._c._run(Req("DELETE", _org(org, "mcp-servers", server), expect_body=False))

    def tools(self, org: str, server: str, *, risk: str = "low") -> builtins.list[JSON]:
        """The server's tools now, as an agent declares them (with the digest that pins
        each): copy the ones an agent may use into its `tools`."""
        req = Req("GET", _org(org, "mcp-servers", server, "tools"), params={"risk": risk})
        return list(self._c._call(req)["data"])

    def gateway_url(self, run: Run) -> str:
        """The run's MCP endpoint (Streamable HTTP; authenticate with `run.token`)."""
        base = str(self._c._http.base_url).rstrip("/")
        return f"{base}/v1/runs/{run.id}/mcp"
