"""A run's access token for an integration its agent is connected to
(`POST /v1/runs/{run}/integrations/{name}/token`).

Only the run's own token asks (anyone else, another run or another organisation finds
nothing: 404). The agent must have the integration among its connections (403
otherwise), and whoever configured the agent must still hold `integrations:use`
(checked by `bastion.integrations.service.token_for_run`, which hands out the token and
audits it). Never the refresh token."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents.gate.runs import own_run
from bastion.agents.models import Agent, Run
from bastion.core.errors import Forbidden, NotFound
from bastion.core.principal import Principal
from bastion.integrations import service as integrations


def run_token(
    db: Session,
    broker: integrations.TokenBroker,
    principal: Principal,
    run_id: str,
    name: str,
) -> integrations.Token:
    own_run(principal, run_id)
    found = db.execute(
        select(Run, Agent).join(Agent, Agent.id == Run.agent_id).where(Run.id == principal.id)
    ).first()
    if found is None or found[0].org_id != principal.org_id:
        raise NotFound("run not found")
    run, agent = found
    if name not in agent.connections:
        raise Forbidden("this integration is not among the agent's connections")
    return integrations.token_for_run(
        db,
        broker,
        principal.actor,
        run.org_id,
        name,
        run_id=run.id,
        agent_id=agent.id,
        configured_by=agent.configured_by,
    )
