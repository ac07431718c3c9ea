"""The agents domain's read-only facts for compliance evidence and access reviews
(`bastion.compliance`): what each agent was given (secrets and connections), its
high-risk tools, and taking one grant away for a review, audited in the caller's
transaction like any change of the agent (its version moves on)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents.models import Agent
from bastion.audit import service as audit
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.errors import NotFound
from bastion.core.events import EventType

HIGH_RISK = frozenset({"high", "critical"})


@dataclass(frozen=True)
class AgentFact:
    id: str
    name: str
    owner_id: str
    configured_by: str
    secrets: tuple[str, ...]
    connections: tuple[str, ...]
    high_risk_tools: tuple[str, ...]


def agents(db: Session, org_id: str) -> list[AgentFact]:
    rows = db.execute(select(Agent).where(Agent.org_id == org_id).order_by(Agent.id)).scalars()
    return [
        AgentFact(
            a.id,
            a.name,
            a.owner_id,
            a.configured_by,
            tuple(a.secrets or ()),
            tuple(a.connections or ()),
            tuple(str(t.get("name")) for t in a.tools or () if t.get("risk") in HIGH_RISK),
        )
        for a in rows
    ]


def remove_grant(
    db: Session, actor: Actor, org_id: str, agent_id: str, kind: str, name: str, reason: str
) -> bool:
    """Take a secret (`kind` "secret") or a connection ("connection") away from an
    agent now; its next run no longer has it. False when the agent no longer has it."""
    agent = db.execute(
        select(Agent).where(Agent.org_id == org_id, Agent.id == agent_id).with_for_update()
    ).scalar_one_or_none()
    if agent is None:
        raise NotFound("agent not found")
    field = "secrets" if kind == "secret" else "connections"
    held = list(getattr(agent, field) or [])
    if name not in held:
        return False
    setattr(agent, field, [n for n in held if n != name])
    agent.version += 1
    agent.updated_at = utcnow()
    db.flush()
    audit.record(
        db,
        type=EventType.AGENT_UPDATED,
        actor=actor,
        org_id=org_id,
        resource=("agent", agent.id),
        metadata={"fields": [field], "version": agent.version, "removed": name, "reason": reason},
    )
    return True
