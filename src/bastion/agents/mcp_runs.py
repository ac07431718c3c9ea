"""What the MCP gateway (`bastion.api.mcp_gateway`) needs of a run: its agent's MCP
connections, the tools it declares on them, and which servers it may still use.

A tool of an MCP server is declared like any tool, with the server as its connection
(`{"name": "files.read", "connection": "mcs_…", …}`, see `GET /v1/orgs/{org}/mcp-servers/
{mcs}/tools`): its digest pins the upstream definition. The right to use a server
(`mcp_servers:use`) is the configurer's: checked when the agent is configured
(`agents.service`) and here, at every use: a server whose configurer lost it is
withheld, as a source would be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents.gate.runs import own_run, run_status
from bastion.agents.models import Agent, Run
from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import NotFound
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity import rights
from bastion.mcp import service as mcp
from bastion.privacy import service as privacy
from bastion.secrets.vault import Vault


@dataclass(frozen=True)
class McpRun:
    run_id: str
    org_id: str
    agent_id: str
    expires_at: datetime  # the run's end (UTC)
    connections: frozenset[str]  # the agent's MCP connections (`mcs_…`)
    tools: dict[str, dict[str, Any]]  # declared tools by name
    upstreams: dict[str, mcp.Upstream] = field(repr=False)  # connected servers that exist
    withheld: frozenset[str] = frozenset()  # connected servers its configurer may not use
    privacy: privacy.Policies = privacy.NO_POLICIES  # the organisation's data policies


def upstream_name(tool: dict[str, Any], server: mcp.Upstream) -> str | None:
    """The upstream's name of a declared tool of `server` (`server.tool` → `tool`)."""
    prefix = server.name + "."
    name = str(tool["name"])
    return name[len(prefix) :] if name.startswith(prefix) and len(name) > len(prefix) else None


def mcp_tool(
    server: mcp.Upstream | Any, name: str, description: str, schema: Any, risk: str
) -> dict[str, Any]:
    """An upstream tool as an agent declares it (digest not included)."""
    return {
        "name": f"{server.name}.{name}",
        "description": description,
        "input_schema": schema,
        "risk": risk,
        "connection": server.id,
    }


def load(db: Session, vault: Vault, principal: Principal, run_id: str) -> McpRun:
    """The run's MCP view, to its own run token only (anyone else finds nothing)."""
    own_run(principal, run_id)
    found = db.execute(
        select(Run, Agent).join(Agent, Agent.id == Run.agent_id).where(Run.id == run_id)
    ).first()
    if found is None or found[0].org_id != principal.org_id:
        raise NotFound("run not found")
    run, agent = found
    now = utcnow()
    if run_status(run, now) != "active":
        raise NotFound("run not found")
    connections = frozenset(c for c in agent.connections if mcp.is_server_id(c))
    upstreams = {u.id: u for u in mcp.upstreams(db, vault, run.org_id, sorted(connections))}
    may_use = Permission.MCP_SERVERS_USE in rights.current_permissions(
        db, run.org_id, agent.configured_by
    )
    return McpRun(
        run_id=run.id,
        org_id=run.org_id,
        agent_id=agent.id,
        expires_at=as_utc(run.expires_at),
        connections=connections,
        tools={t["name"]: t for t in agent.tools},
        upstreams=upstreams,
        withheld=frozenset() if may_use else connections,
        privacy=privacy.policies_of(db, run.org_id),
    )
