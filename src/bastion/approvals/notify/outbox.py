"""The request's side of notifying approvers: a `fanout` notice written in the
transaction of the change, so nothing is sent for a request that rolled back and
nothing of the request waits for a mail server or Slack (`deliver` sends later)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from bastion.approvals.models import Approval, ApprovalNotice
from bastion.core.ids import new_id

FANOUT, EMAIL, SLACK = "fanout", "email", "slack"
REQUESTED, ESCALATED = 0, 1


def enqueue(db: Session, approval: Approval, round_: int, now: datetime) -> None:
    """Ask for the approval's deciders to be told (`REQUESTED` or `ESCALATED`)."""
    db.add(
        ApprovalNotice(
            id=new_id("apn"),
            org_id=approval.org_id,
            approval_id=approval.id,
            channel=FANOUT,
            recipient="",
            round=round_,
            attempts=0,
            created_at=now,
        )
    )
