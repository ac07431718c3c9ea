"""Agents: the agents I may see (tools with risk and digest, visibility and sharing,
connections, names of secrets) and the hub of public agents, with "Clone" into the
organisation — through `bastion.agents.service`, as `/v1/orgs/{org}/agents` and
`/v1/hub/agents` do."""

from __future__ import annotations

from typing import Protocol, cast

from fastapi import APIRouter
from starlette.responses import Response

from bastion.agents import service as agents
from bastion.agents.schemas import AgentIn
from bastion.authz import access
from bastion.console.web import SignedIn, SignedInPost, notice, render, see_other
from bastion.core.errors import Forbidden
from bastion.core.pagination import MAX_LIMIT

router = APIRouter()
PAGE = "/console/agents"

CLONED = notice("agent-cloned", "Agent cloned into your organisation.")


class _Rights(Protocol):
    @property
    def source_rights(self) -> access.SourceRights: ...


@router.get("/agents")
def agents_page(viewer: SignedIn) -> Response:
    principal = viewer.signed_in
    mine = agents.list_agents(viewer.db, principal, viewer.org_id, limit=MAX_LIMIT, cursor=None)
    try:
        hub = agents.list_hub(viewer.db, principal, limit=MAX_LIMIT, cursor=None).data
    except Forbidden:
        hub = []
    return render(
        viewer, "agents.html", title="Agents", agents=mine.data,
        hub=[a for a in hub if a.org_id != viewer.org_id],
    )  # fmt: skip


@router.get("/agents/{agt}")
def agent_page(agt: str, viewer: SignedIn) -> Response:
    agent = agents.get_agent(viewer.db, viewer.signed_in, viewer.org_id, agt)
    return render(viewer, "agent.html", title=agent.name, agent=agent)


@router.post("/agents/clone")
def clone(posted: SignedInPost) -> Response:
    body = AgentIn.model_validate({"from_hub": posted.require("from_hub")})
    rights = cast(_Rights, posted.viewer.edge.app).source_rights
    agent = agents.create_agent(posted.db, posted.principal, posted.org_id, body, rights)
    posted.db.flush()
    return see_other(f"{PAGE}/{agent.id}", CLONED)
