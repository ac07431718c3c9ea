"""The agents domain's facts for authorization's index, registered with
`bastion.authz.facts` when this package is imported (authz sits below agents and never
reads their table): every agent of an organisation in one query, and the visibility
rule (`bastion.agents.visibility`) the engine applies to them."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents.models import Agent
from bastion.agents.visibility import AgentFacts, agent_decision
from bastion.authz.facts import AgentRecord, register_agent_facts


class _Agents:
    """Agents as `bastion.authz.facts.AgentFacts`; `decide` is `agent_decision`."""

    decide = staticmethod(agent_decision)

    def agents(self, db: Session, org_id: str) -> Iterator[AgentRecord]:
        for agent_id, owner, visibility, teams, connections, configurer in db.execute(
            select(
                Agent.id,
                Agent.owner_id,
                Agent.visibility,
                Agent.team_ids,
                Agent.connections,
                Agent.configured_by,
            ).where(Agent.org_id == org_id)
        ):
            facts = AgentFacts(owner, visibility, frozenset(teams or ()))
            yield AgentRecord(agent_id, facts, connections or (), configurer)


register_agent_facts(_Agents())
