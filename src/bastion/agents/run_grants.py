"""What a run was given, for the domains above agents that act inside a run (sandboxes):
its agent's connections and secrets while the run is active, and which runs ended."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents.gate.runs import own_run, run_status
from bastion.agents.models import Agent, Run
from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import NotFound
from bastion.core.principal import Principal


@dataclass(frozen=True)
class RunGrant:
    run_id: str
    org_id: str
    agent_id: str
    expires_at: datetime  # UTC
    connections: frozenset[str]
    secrets: frozenset[str]  # names only


def active_grant(db: Session, principal: Principal, run_id: str) -> RunGrant:
    """The active run's grant, to its own run token only (anyone else finds nothing)."""
    own_run(principal, run_id)
    found = db.execute(
        select(Run, Agent).join(Agent, Agent.id == Run.agent_id).where(Run.id == run_id)
    ).first()
    org_id = principal.org_id
    if found is None or found[0].org_id != org_id or run_status(found[0], utcnow()) != "active":
        raise NotFound("run not found")
    run, agent = found
    return RunGrant(
        run_id=run.id,
        org_id=run.org_id,
        agent_id=agent.id,
        expires_at=as_utc(run.expires_at),
        connections=frozenset(agent.connections or ()),
        secrets=frozenset(agent.secrets or ()),
    )


def ended_runs(db: Session, run_ids: Iterable[str]) -> set[str]:
    """Those of `run_ids` that are no longer active (revoked, expired, or gone)."""
    wanted = set(run_ids)
    if not wanted:
        return set()
    now = utcnow()
    active = {
        run.id
        for run in db.execute(select(Run).where(Run.id.in_(wanted))).scalars()
        if run_status(run, now) == "active"
    }
    return wanted - active
