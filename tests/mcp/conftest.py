"""A real upstream MCP server (`tests.mcp.upstream`) and a real `bastion serve` for the
gateway's tests, with a real MCP client session (`mcp.client.streamable_http`)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client

from mcp import Client
from tests.e2e.server import Server, server_env
from tests.factories import Factory, Member, Org, bearer
from tests.mcp.upstream import Upstream

UPSTREAM_TOKEN = "upstream-secret-token-0123456789"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(token=UPSTREAM_TOKEN) as up:
        yield up


@pytest.fixture(scope="module")
def server(data_dir: Path, database_url: str) -> Iterator[Server]:
    extra = {
        "BASTION_OUTBOUND_ALLOW": json.dumps(["127.0.0.0/8"]),
        "BASTION_OUTBOUND_PLAINTEXT_ALLOW": json.dumps(["127.0.0.0/8"]),
        "BASTION_APPROVAL_SWEEP_INTERVAL": "0.5",
    }
    if os.environ.get("BASTION_TEST_REDIS_URL"):
        extra["BASTION_REDIS_URL"] = os.environ["BASTION_TEST_REDIS_URL"]
    with Server(server_env(data_dir, database_url, **extra), workers=1) as running:
        yield running


class World:
    """An org with an MCP server registered, an agent connected to it declaring its
    tools (as the registry lists them), a member's run and a manager who approves."""

    def __init__(
        self,
        url: str,
        factory: Factory,
        upstream_url: str,
        *,
        risks: dict[str, str] | None = None,
        connect: bool = True,
        configurer: str = "member",
        org: Org | None = None,
        server_body: dict[str, Any] | None = None,
    ) -> None:
        """`server_body`: the MCP server's registration instead of its static header."""
        self.url = url
        self.org: Org = org or factory.org()
        self.user: Member = factory.member(self.org, "member")
        self.manager: Member = factory.member(self.org, "manager")
        credential = server_body or {"headers": {"Authorization": f"Bearer {UPSTREAM_TOKEN}"}}
        self.server = self.post("mcp-servers", {"name": "calc", "url": upstream_url, **credential})
        self.tools = self.discover(risks or {})
        body = {
            "name": "calculator",
            "visibility": "org",
            "tools": [
                {k: t[k] for k in ("name", "description", "input_schema", "risk", "connection")}
                for t in self.tools
            ],
            "connections": [self.server["id"]] if connect else [],
        }
        self.configurer = self.user if configurer == "member" else self.manager
        self.agent = self.post("agents", body, self.configurer.headers)
        self.start_run()

    def discover(self, risks: dict[str, str]) -> list[dict[str, Any]]:
        tools = []
        for risk in ("low", "high"):
            response = httpx.get(
                f"{self.url}/v1/orgs/{self.org.id}/mcp-servers/{self.server['id']}/tools",
                params={"risk": risk},
                headers=self.org.headers,
                timeout=30,
            )
            assert response.status_code == 200, response.text
            tools += [t for t in response.json()["data"] if risks.get(t["name"], "low") == risk]
        return tools

    def start_run(self) -> None:
        started = self.post(f"agents/{self.agent['id']}/runs", {}, self.user.headers)
        self.run, self.token = started["run_id"], started["token"]

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        response = httpx.post(
            f"{self.url}/v1/orgs/{self.org.id}/{path}",
            json=body,
            headers=headers or self.org.headers,
            timeout=30,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            f"{self.url}/v1/orgs/{self.org.id}/{path}",
            params=params,
            headers=self.org.headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, type_: str) -> list[dict[str, Any]]:
        return list(self.get("audit-events", type=type_, limit=100)["data"])

    @property
    def gateway(self) -> str:
        return f"{self.url}/v1/runs/{self.run}/mcp"

    def session(self) -> Client:
        http = httpx2.AsyncClient(headers=bearer(self.token), timeout=httpx2.Timeout(60.0))
        return Client(streamable_http_client(self.gateway, http_client=http), cache=None)

    def list_tools(self) -> list[str]:
        async def go() -> list[str]:
            async with self.session() as client:
                return [t.name for t in (await client.list_tools()).tools]

        return asyncio.run(go())

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        async def go() -> Any:
            async with self.session() as client:
                return await client.call_tool(name, arguments)

        return asyncio.run(go())
