"""Approvals' side of subject requests (`bastion.privacy.subjects`), registered on
import: the approvals requested for the person and the decisions they made. Erasure
empties their decisions' comments (free text); the ids that remain name nobody once the
user is gone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bastion.approvals.models import Approval, ApprovalDecision
from bastion.core.clock import rfc3339
from bastion.privacy import subjects


def _collect(db: Session, org_id: str, user_id: str) -> list[dict[str, Any]]:
    asked = db.execute(
        select(Approval)
        .where(Approval.org_id == org_id, Approval.requested_for == user_id)
        .order_by(Approval.id)
    ).scalars()
    decided = db.execute(
        select(ApprovalDecision)
        .where(ApprovalDecision.org_id == org_id, ApprovalDecision.approver_id == user_id)
        .order_by(ApprovalDecision.approval_id)
    ).scalars()
    return [
        *(
            {
                "role": "requested_for",
                "id": a.id,
                "tool": a.tool,
                "agent_id": a.agent_id,
                "status": a.status,
                "created_at": rfc3339(a.created_at),
                "decided_at": rfc3339(a.decided_at),
            }
            for a in asked
        ),
        *(
            {
                "role": "approver",
                "id": d.approval_id,
                "decision": d.decision,
                "comment": d.comment,
                "created_at": rfc3339(d.created_at),
            }
            for d in decided
        ),
    ]


def _erase(db: Session, org_id: str, user_id: str) -> int:
    done = db.execute(
        update(ApprovalDecision)
        .where(
            ApprovalDecision.org_id == org_id,
            ApprovalDecision.approver_id == user_id,
            ApprovalDecision.comment != "",
        )
        .values(comment="")
    )
    return int(getattr(done, "rowcount", 0) or 0)


subjects.register(subjects.Source("approvals", _collect, _erase))
