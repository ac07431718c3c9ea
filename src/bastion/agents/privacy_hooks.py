"""Agents' side of privacy, registered on import (`bastion.agents.gate` imports it):

- retention: decided tool calls older than `tool_calls_days` are purged (a pending one
  waits for its approval; an approval goes with its call);
- subject requests: the tool calls of runs started by the person or on their behalf.
  Erasure empties those calls' stored arguments (they may describe the person) and
  revokes the person's runs still active; the calls' decisions, digests and audit
  events stay, naming only ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from bastion.agents.models import Run, ToolCall
from bastion.core.clock import rfc3339, utcnow
from bastion.core.db import org_scoped
from bastion.privacy import retention, subjects


def _purge_calls(db: Session, org_id: str, cutoff: datetime) -> int:
    done = db.execute(
        delete(ToolCall).where(
            ToolCall.org_id == org_id,
            ToolCall.created_at < cutoff,
            ToolCall.decision != "pending",
        ),
        execution_options=org_scoped(org_id),
    )
    return int(getattr(done, "rowcount", 0) or 0)


def _their_runs(org_id: str, user_id: str) -> Any:
    return select(Run.id).where(
        Run.org_id == org_id, or_(Run.started_by == user_id, Run.on_behalf_of == user_id)
    )


def _collect(db: Session, org_id: str, user_id: str) -> list[dict[str, Any]]:
    calls = db.execute(
        select(ToolCall)
        .where(ToolCall.org_id == org_id, ToolCall.run_id.in_(_their_runs(org_id, user_id)))
        .order_by(ToolCall.id)
    ).scalars()
    return [
        {
            "id": c.id,
            "run_id": c.run_id,
            "agent_id": c.agent_id,
            "tool": c.tool,
            "arguments": c.arguments,
            "decision": c.decision,
            "reason": c.reason,
            "created_at": rfc3339(c.created_at),
        }
        for c in calls
    ]


def _erase(db: Session, org_id: str, user_id: str) -> int:
    emptied = db.execute(
        update(ToolCall)
        .where(
            ToolCall.org_id == org_id,
            ToolCall.run_id.in_(_their_runs(org_id, user_id)),
            ToolCall.arguments.is_not(None),
        )
        .values(arguments=None),
        execution_options=org_scoped(org_id),
    )
    now = utcnow()
    db.execute(
        update(Run)
        .where(
            Run.org_id == org_id,
            or_(Run.started_by == user_id, Run.on_behalf_of == user_id),
            Run.revoked_at.is_(None),
            Run.expires_at > now,
        )
        .values(revoked_at=now),
        execution_options=org_scoped(org_id),
    )
    return int(getattr(emptied, "rowcount", 0) or 0)


retention.register("tool_calls", "tool_calls", _purge_calls)
subjects.register(subjects.Source("tool_calls", _collect, _erase))
