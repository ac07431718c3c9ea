"""Agents' side of approvals (`bastion.approvals.hooks`), registered on import.

Approvals sits below agents and never imports them: what it needs of agents, runs and
tool calls is answered here, and when an approval closes the tool call it held is
settled here, in the same transaction. Registered when the gate is imported
(`bastion.agents.gate` imports this module): the gate opens every approval, and the
app, which decides and sweeps them, imports the gate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents import service as agents
from bastion.agents.models import Agent, Run, ToolCall
from bastion.approvals import hooks
from bastion.core.errors import NotFound
from bastion.core.principal import Principal


class _AgentSide:
    def tools(
        self, db: Session, org_id: str, agent_ids: Iterable[str] | None
    ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        stmt = select(Agent).where(Agent.org_id == org_id)
        if agent_ids is not None:
            stmt = stmt.where(Agent.id.in_(list(agent_ids)))
        for agent in db.execute(stmt).scalars():
            yield agent.id, agent.tools

    def agent_reader(self, db: Session, principal: Principal) -> Callable[[str], bool]:
        """Whether the principal may read an agent (a private agent's requests stay
        private), each agent read once."""
        who = agents.asker(db, principal)
        seen: dict[str, bool] = {}

        def readable(agent_id: str) -> bool:
            if agent_id not in seen:
                agent = db.get(Agent, agent_id)
                seen[agent_id] = agent is not None and agents.decide(who, agent, "read").allowed
            return seen[agent_id]

        return readable

    def run(self, db: Session, run_id: str) -> hooks.RunFacts | None:
        run = db.get(Run, run_id)
        if run is None:
            return None
        return hooks.RunFacts(run.started_by, run.expires_at, run.revoked_at is not None)

    def settle(
        self, db: Session, call_id: str, *, allowed: bool, reason: str, now: datetime
    ) -> None:
        call = db.get(ToolCall, call_id)
        if call is None:  # cannot happen: an approval cascades with its call
            raise NotFound("tool call not found")
        call.decision = "allow" if allowed else "deny"
        call.reason = reason
        call.decided_at = now

    def describe(self, db: Session, agent_id: str, call_id: str) -> hooks.CallFacts | None:
        call = db.get(ToolCall, call_id)
        agent = db.get(Agent, agent_id)
        if call is None or agent is None or call.agent_id != agent_id:
            return None
        return hooks.CallFacts(agent.name, call.arguments)


hooks.register(_AgentSide())
