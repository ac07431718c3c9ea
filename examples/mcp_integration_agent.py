"""An agent that uses an OAuth integration's token and MCP tools through the gateway.

The script plays both sides of a small deployment (no LLM):

1. An upstream MCP server of its own (the `mcp` SDK's `MCPServer`, Streamable HTTP, on
   127.0.0.1) with a `whoami` tool that answers the SHA-256 prefix of the bearer token
   it was sent, and a `note` tool. It is registered with Bastion with
   `"integration": NAME`: the gateway adds that integration's current access token to
   every request to it.
2. An agent `mcp-notes-…` connected to the MCP server and to the integration, declaring
   the server's tools as `GET …/mcp-servers/{mcs}/tools` lists them (pinned by digest),
   and a run of it.
3. The agent, holding only its run token: it fetches the integration's access token for
   its own use (`runs.integration_token`, `POST /v1/runs/{run}/integrations/NAME/token`,
   as it would to call the provider's API), then speaks MCP to the run's gateway URL
   (`mcp_servers.gateway_url(run)`, `/v1/runs/{run}/mcp`): `tools/list`, `notes.note`
   and `notes.whoami`. The upstream's answer proves it received the same integration
   token, added by the gateway: the agent never sent it.

The exit code is 0 when all of that holds, 1 otherwise.

Run it against `make run` (README, "First steps"), with an integration already connected
(docs/integrations.md: register it, open `GET …/integrations/{int}/connect` in a browser
and consent). The upstream listens on 127.0.0.1 over plain HTTP, which the outbound
guard refuses unless the server was started allowing it:

    BASTION_OUTBOUND_ALLOW='["127.0.0.0/8"]' \\
    BASTION_OUTBOUND_PLAINTEXT_ALLOW='["127.0.0.0/8"]' make run      # terminal 1

    BASTION_API_KEY=bsk_key_… .venv/bin/python examples/mcp_integration_agent.py \\
        --integration github                                           # terminal 2
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

import httpx2
import uvicorn
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer

from bastion.client import AsyncClient, BastionError, Client, Run
from bastion.client.models import ToolIn
from mcp import Client as MCPClient


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def start_upstream() -> str:
    """The upstream MCP server, in a thread: its URL."""
    server = MCPServer("notes")
    notes: list[str] = []

    def note(text: str) -> str:
        notes.append(text)
        return f"noted ({len(notes)} so far)"

    def whoami(ctx: Context) -> str:
        request = ctx.request_context.request
        given = request.headers.get("authorization", "") if request is not None else ""
        token = given.removeprefix("Bearer ")
        return _fingerprint(token) if token else "anonymous"

    server.add_tool(note, name="note", description="Keep a note.")
    server.add_tool(whoami, name="whoami", description="Who the server was called as.")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = server.streamable_http_app(json_response=True, stateless_http=True)
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=running.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not running.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the upstream MCP server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/mcp"


def setup(bastion: Client, integration: str, upstream_url: str) -> Run:
    """The MCP server (bearer: the integration's token), an agent connected to both, and a
    run of it, with the SDK and an admin API key."""
    org = bastion.me().org_id
    suffix = uuid.uuid4().hex[:8]
    found = next((s for s in bastion.mcp_servers.list(org) if s.name == "notes"), None)
    if found is None:
        server = bastion.mcp_servers.create(
            org, name="notes", url=upstream_url, integration=integration
        )
    else:  # a run before this one registered `notes`: point it at this run's upstream
        server = bastion.mcp_servers.update(
            org, found.id, url=upstream_url, integration=integration, headers={}
        )
    tools = bastion.mcp_servers.tools(org, server.id).data  # pinned by digest
    agent = bastion.agents.create(
        org,
        name=f"mcp-notes-{suffix}",
        visibility="org",
        tools=[ToolIn.model_validate(t.model_dump(exclude={"digest"})) for t in tools],
        connections=[server.id, integration],
    )
    # An API key is not a person: the run acts for one (the organisation's first admin).
    admin = next(u for u in bastion.users.list(org) if u.role == "admin")
    return bastion.runs.start(agent, on_behalf_of=admin.id, ttl_seconds=600)


async def agent(url: str, gateway_url: str, run_id: str, run_token: str, integration: str) -> bool:
    """What the agent's own code does, with its run token and nothing else."""
    async with AsyncClient(url, token=run_token) as own:
        fetched = await own.runs.integration_token(run_id, integration)
    print(f"integration {integration}: an access token until {fetched.expires_at}")

    auth = {"Authorization": f"Bearer {run_token}"}
    http = httpx2.AsyncClient(headers=auth, timeout=httpx2.Timeout(120.0))
    gateway = streamable_http_client(gateway_url, http_client=http)
    async with MCPClient(gateway, cache=None) as bastion:
        names = sorted(t.name for t in (await bastion.list_tools()).tools)
        print("tools through the gateway:", names)
        noted = await bastion.call_tool("notes.note", {"text": "hello through Bastion"})
        print("notes.note ->", _text(noted))
        who = await bastion.call_tool("notes.whoami", {})
        print("notes.whoami ->", _text(who))
    ok = names == ["notes.note", "notes.whoami"] and not noted.is_error and not who.is_error
    # The upstream saw the integration's token, which the gateway added.
    return ok and _text(who) == _fingerprint(fetched.access_token)


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BASTION_URL", "http://127.0.0.1:8400"))
    parser.add_argument("--api-key", default=os.environ.get("BASTION_API_KEY"))
    parser.add_argument("--integration", required=True, help="a connected integration's name")
    args = parser.parse_args()
    if not args.api_key:
        parser.error("an admin API key: --api-key or BASTION_API_KEY")
    upstream_url = start_upstream()
    try:
        with Client(args.url, token=args.api_key, timeout=60) as bastion:
            run = setup(bastion, args.integration, upstream_url)
            gateway_url = bastion.mcp_servers.gateway_url(run)
        ok = asyncio.run(agent(args.url, gateway_url, run.id, run.token, args.integration))
    except BastionError as exc:
        print(f"FAILED: {exc}")
        return 1
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
