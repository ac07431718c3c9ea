"""The agent registry: definitions, who may see, use, edit and share them, and the
public hub.

Access follows `bastion.agents.visibility.agent_decision` (one rule set for this service
and the authorization API). An agent the caller may not see is 404; one it can see but may
not act on is 403.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bastion.agents.models import Agent
from bastion.agents.schemas import AgentIn, AgentPatch, ToolIn
from bastion.agents.visibility import AgentFacts, agent_decision
from bastion.audit import service as audit
from bastion.authz import access
from bastion.authz.engine import Decision
from bastion.core.crypto import sha256_hex
from bastion.core.db import get_in_org
from bastion.core.errors import Forbidden, InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, decode_id_cursor, page_of
from bastion.core.permissions import CredentialKind, Permission
from bastion.core.principal import Principal
from bastion.integrations import service as integrations
from bastion.mcp import service as mcp
from bastion.tenancy import service as tenancy

LIST_SCAN_BATCH = 500  # agents read per query while listing the visible ones


def tool_digest(tool: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of what a reviewer approved: name, description,
    argument schema, risk and connection."""
    definition = {k: tool.get(k) for k in ("name", "description", "input_schema", "risk")}
    definition["connection"] = tool.get("connection")
    return sha256_hex(json.dumps(definition, sort_keys=True, separators=(",", ":")))


def arguments_validator(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """The compiled validator of a tool's arguments (jsonschema-rs, Draft 2020-12).
    Offline: a `$ref` outside the schema is never fetched (no request to a URL, no file
    read), it makes the schema unusable. Patterns are ECMA-262 regular expressions, as
    JSON Schema specifies, matched with a backtracking limit."""
    return jsonschema_rs.Draft202012Validator(schema, offline=True)


def _tools(tools: list[ToolIn]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for i, tool in enumerate(tools):
        if tool.name in seen:
            raise InvalidInput.field(f"tools[{i}].name", "another tool has this name")
        seen.add(tool.name)
        try:
            Draft202012Validator.check_schema(tool.input_schema)
        except SchemaError as exc:  # its message quotes the schema: name the keyword only
            raise InvalidInput.field(
                f"tools[{i}].input_schema",
                f"not a valid JSON Schema (keyword {str(exc.validator)[:40]})",
            ) from None
        try:
            arguments_validator(tool.input_schema)
        except Exception:  # jsonschema-rs: a reference or a pattern it cannot use
            raise InvalidInput.field(
                f"tools[{i}].input_schema",
                "cannot be used: a reference outside the schema or a pattern that is not "
                "an ECMA-262 regular expression",
            ) from None
        item = tool.model_dump()
        item["digest"] = tool_digest(item)
        out.append(item)
    return out


def _teams(db: Session, org_id: str, visibility: str, team_ids: list[str]) -> list[str]:
    unique = sorted(set(team_ids))
    missing = set(unique) - tenancy.existing_team_ids(db, org_id, unique)
    if missing:
        raise InvalidInput.field("team_ids", "names a team that does not exist")
    if visibility == "team" and not unique:
        raise InvalidInput.field("team_ids", "team visibility needs at least one team")
    return unique


def _connections(db: Session, org_id: str, connections: list[str]) -> list[str]:
    unique = sorted(set(connections))
    sources = [c for c in unique if c.startswith("src_")]
    missing = set(sources) - access.existing_source_ids(db, org_id, sources)
    if missing:
        raise InvalidInput.field("connections", "names a source that does not exist")
    _mcp_servers_exist(db, org_id, unique)
    return unique


def _mcp_servers_exist(db: Session, org_id: str, connections: list[str]) -> None:
    """MCP servers (`mcs_…`) are connections too: each must be one of the org's."""
    servers = [c for c in connections if mcp.is_server_id(c)]
    if set(servers) - mcp.existing_server_ids(db, org_id, servers):
        raise InvalidInput.field("connections", "names an MCP server that does not exist")


def _may_connect_mcp(principal: Principal, connections: list[str]) -> None:
    """Connecting an agent to an MCP server needs `mcp_servers:use`; the gateway asks
    again, of the agent's configurer, at every call (`agents.mcp_runs`)."""
    if any(mcp.is_server_id(c) for c in connections) and not principal.can(
        Permission.MCP_SERVERS_USE
    ):
        raise Forbidden(
            "connecting an MCP server needs mcp_servers:use",
            permission=str(Permission.MCP_SERVERS_USE),
        )


def _ensure_may_configure(
    principal: Principal, rights: access.SourceRights, secrets: list[str], connections: list[str]
) -> None:
    """Whoever sets an agent's secrets or connections becomes their configurer and must
    hold every right the agent is given: revealing secrets, and editing (or managing)
    each connected source. Nobody hands on what they do not hold."""
    if secrets and not principal.can(Permission.SECRETS_REVEAL):
        raise Forbidden(
            "giving an agent secrets needs the right to reveal them",
            permission=str(Permission.SECRETS_REVEAL),
        )
    sources = {c for c in connections if c.startswith("src_")}
    if sources - rights.connectable(principal, sources):
        raise Forbidden(
            "connecting a source needs editor or owner on it, or sources:manage",
            permission=str(Permission.SOURCES_MANAGE),
        )
    _may_connect_mcp(principal, connections)


def _ensure_may_hand_on_integrations(
    db: Session, principal: Principal, org_id: str, connections: list[str]
) -> None:
    """A connection that names one of the organisation's OAuth integrations hands it on:
    the configurer must hold `integrations:use` (checked again, against their current
    rights, whenever a run asks for a token)."""
    named = integrations.existing_names(db, org_id, connections)
    if named and not integrations.may_hand_on(principal.permissions):
        raise Forbidden(
            "connecting an integration needs the right to use it",
            permission=str(Permission.INTEGRATIONS_USE),
        )


# --- who may do what --------------------------------------------------------------


@dataclass(frozen=True)
class Asker:
    """The caller as agent access sees it."""

    id: str
    teams: frozenset[str]
    perms: frozenset[Permission]


def asker(db: Session, principal: Principal) -> Asker:
    subject = principal.user_id or principal.id
    teams = tenancy.teams_of(db, principal.org_id, principal.user_id)
    return Asker(subject, teams, principal.permissions)


def facts(agent: Agent) -> AgentFacts:
    return AgentFacts(agent.owner_id, agent.visibility, frozenset(agent.team_ids or ()))


def decide(who: Asker, agent: Agent, action: str) -> Decision:
    return agent_decision(facts(agent), who.id, who.teams, who.perms, action)


def _find(db: Session, org_id: str, agent_id: str) -> Agent:
    return get_in_org(db, Agent, agent_id, org_id, prefix="agt", noun="agent")


def get_for(db: Session, principal: Principal, org_id: str, agent_id: str, action: str) -> Agent:
    """The agent, when the caller may do `action` to it: 404 when it cannot see it,
    403 (audited) when it sees it but may not act."""
    principal.require_org(org_id)
    principal.require(Permission.AGENTS_READ)
    if action == "use":
        principal.require(Permission.AGENTS_USE)
    agent = _find(db, org_id, agent_id)
    who = asker(db, principal)
    if not decide(who, agent, "read").allowed:
        raise NotFound("agent not found")
    verdict = decide(who, agent, action)
    if not verdict.allowed:
        needed = Permission.AGENTS_MANAGE if action not in ("read", "use") else None
        raise Forbidden(
            f"may not {action} this agent ({verdict.reason})",
            permission=str(needed or Permission.AGENTS_USE),
        )
    return agent


# --- registry ---------------------------------------------------------------------


def create_agent(
    db: Session, principal: Principal, org_id: str, body: AgentIn, rights: access.SourceRights
) -> Agent:
    principal.require_org(org_id)
    principal.require(Permission.AGENTS_CREATE)
    if principal.credential is CredentialKind.AGENT_RUN:
        raise Forbidden("agent run tokens cannot create agents")
    name, description, tools = body.name, body.description, _tools(body.tools)
    if body.from_hub is not None:
        source = _public(db, body.from_hub)
        if source is None:
            raise InvalidInput.field("from_hub", "no public agent with this id")
        name = body.name or source.name
        description = body.description or source.description
        # The definitions, not the publisher's connections (its organisation's sources).
        copied = [{**t, "connection": None} for t in source.tools]
        tools = (body.tools and tools) or [{**t, "digest": tool_digest(t)} for t in copied]
    if name is None:  # the schema insists unless cloning
        raise InvalidInput.field("name", "required")
    connections, secrets = _connections(db, org_id, body.connections), sorted(set(body.secrets))
    _ensure_may_configure(principal, rights, secrets, connections)
    _ensure_may_hand_on_integrations(db, principal, org_id, connections)
    agent = Agent(
        id=new_id("agt"),
        org_id=org_id,
        name=name,
        description=description,
        owner_id=principal.user_id or principal.id,
        configured_by=principal.user_id or principal.id,
        visibility=body.visibility,
        team_ids=_teams(db, org_id, body.visibility, body.team_ids),
        tools=tools,
        connections=connections,
        secrets=secrets,
        cloned_from=body.from_hub,
        version=1,
    )
    db.add(agent)
    audit.record(
        db,
        type=EventType.AGENT_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("agent", agent.id),
        metadata={
            "name": agent.name,
            "visibility": agent.visibility,
            "tools": {t["name"]: t["digest"] for t in tools},
            "from_hub": body.from_hub,
        },
    )
    return agent


def get_agent(db: Session, principal: Principal, org_id: str, agent_id: str) -> Agent:
    return get_for(db, principal, org_id, agent_id, "read")


def list_agents(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[Agent]:
    """Agents the caller may read, newest first."""
    principal.require_org(org_id)
    principal.require(Permission.AGENTS_READ)
    who = asker(db, principal)
    stmt = select(Agent).where(Agent.org_id == org_id)
    if Permission.AGENTS_MANAGE not in who.perms:
        stmt = stmt.where(
            or_(Agent.owner_id == who.id, Agent.visibility.in_(("org", "public", "team")))
        )
    after = decode_id_cursor(cursor)
    found: list[Agent] = []
    while len(found) <= limit:
        batch_stmt = stmt.order_by(Agent.id.desc()).limit(LIST_SCAN_BATCH)
        if after:
            batch_stmt = batch_stmt.where(Agent.id < after)
        batch = list(db.execute(batch_stmt).scalars())
        found.extend(a for a in batch if decide(who, a, "read").allowed)
        if len(batch) < LIST_SCAN_BATCH:
            break
        after = batch[-1].id
    return page_of(found[: limit + 1], limit, key=lambda a: a.id)


def update_agent(
    db: Session,
    principal: Principal,
    org_id: str,
    agent_id: str,
    body: AgentPatch,
    rights: access.SourceRights,
) -> Agent:
    changes = body.model_dump(exclude_unset=True)
    agent = get_for(db, principal, org_id, agent_id, "share" if _sharing(changes) else "edit")
    metadata: dict[str, Any] = {}
    if body.name is not None:
        agent.name = body.name
    if body.description is not None:
        agent.description = body.description
    if body.tools is not None:
        before = {t["name"]: t["digest"] for t in agent.tools}
        agent.tools = _tools(body.tools)
        after = {t["name"]: t["digest"] for t in agent.tools}
        metadata["tools_changed"] = sorted(
            n for n in before.keys() | after.keys() if before.get(n) != after.get(n)
        )
    visibility = body.visibility or agent.visibility
    if body.visibility is not None or body.team_ids is not None:
        teams = body.team_ids if body.team_ids is not None else list(agent.team_ids)
        agent.team_ids = _teams(db, org_id, visibility, teams)
        if visibility != agent.visibility:
            metadata["visibility"] = {"from": agent.visibility, "to": visibility}
        agent.visibility = visibility
    if body.connections is not None or body.secrets is not None:
        # The editor becomes the configurer of the whole set, so must hold all of it.
        connections = (
            _connections(db, org_id, body.connections)
            if body.connections is not None
            else list(agent.connections)
        )
        secrets = sorted(set(body.secrets)) if body.secrets is not None else list(agent.secrets)
        _ensure_may_configure(principal, rights, secrets, connections)
        _ensure_may_hand_on_integrations(db, principal, org_id, connections)
        if body.connections is not None:
            agent.connections = connections
            metadata["connections"] = connections
        if body.secrets is not None:
            agent.secrets = secrets
            metadata["secrets"] = secrets
        agent.configured_by = principal.user_id or principal.id
        metadata["configured_by"] = agent.configured_by
    agent.version += 1
    audit.record(
        db,
        type=EventType.AGENT_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("agent", agent.id),
        metadata={"fields": sorted(changes), "version": agent.version, **metadata},
    )
    return agent


def _sharing(changes: dict[str, Any]) -> bool:
    return bool({"visibility", "team_ids"} & changes.keys())


def delete_agent(db: Session, principal: Principal, org_id: str, agent_id: str) -> None:
    agent = get_for(db, principal, org_id, agent_id, "delete")
    db.delete(agent)
    audit.record(
        db,
        type=EventType.AGENT_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("agent", agent_id),
        metadata={"name": agent.name},
    )


# --- the hub ------------------------------------------------------------------------


def _public(db: Session, agent_id: str) -> Agent | None:
    agent = db.get(Agent, agent_id) if has_prefix(agent_id, "agt") else None
    return agent if agent is not None and agent.visibility == "public" else None


def list_hub(db: Session, principal: Principal, *, limit: int, cursor: str | None) -> Page[Agent]:
    """Public agents of every organisation, newest first: any signed-in person or key
    may read their published definitions (never secrets or connections)."""
    if principal.credential is CredentialKind.AGENT_RUN:
        raise Forbidden("agent run tokens cannot browse the hub")
    stmt = select(Agent).where(Agent.visibility == "public")
    after = decode_id_cursor(cursor)
    if after:
        stmt = stmt.where(Agent.id < after)
    rows = list(db.execute(stmt.order_by(Agent.id.desc()).limit(limit + 1)).scalars())
    return page_of(rows, limit, key=lambda a: a.id)
