"""The sweeper: records expiries and announces escalations that are due.

Decisions never wait for it: an approval past `expires_at` is already denied as
expired at read time (`bastion.approvals.decisions.effective_status`), and escalated
approvers may decide from `escalate_at` on. The sweeper makes it durable: an
`approval.expired` or `approval.escalated` event, audited and announced, and the
expired approval's tool call settled as denied. Any worker may run it, at any time.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.approvals.decisions import close, locked, notify, summary
from bastion.approvals.models import Approval
from bastion.approvals.notify import outbox
from bastion.audit import service as audit
from bastion.core.clock import as_utc, utcnow
from bastion.core.context import SYSTEM
from bastion.core.events import EventType


def sweep(db: Session, now: datetime | None = None, batch: int = 200) -> int:
    """Record expiries and announce escalations that are due (idempotent; any worker).
    Decisions never wait for this: expiry is already in force at read time.

    Organisations are taken in the order of their ids, each chain's head locked once for
    the transaction: two workers sweeping at once lock in the same order and never wait
    on each other in a cycle."""
    now = now or utcnow()
    expiring = db.execute(
        select(Approval.org_id, Approval.id)
        .where(Approval.status == "pending", Approval.expires_at <= now)
        .order_by(Approval.expires_at)
        .limit(batch)
    ).all()
    escalating = db.execute(
        select(Approval.org_id, Approval.id)
        .where(
            Approval.status == "pending",
            Approval.escalate_at <= now,
            Approval.escalated_at.is_(None),
        )
        .limit(batch)
    ).all()
    work = sorted(
        [(org_id, 0, approval_id) for org_id, approval_id in expiring]
        + [(org_id, 1, approval_id) for org_id, approval_id in escalating]
    )
    done = 0
    for org_id, kind, approval_id in work:
        approval = locked(db, org_id, approval_id)
        if approval is None or approval.status != "pending":
            continue  # another worker's sweep, or a decision, came first
        if kind == 0:
            close(db, approval, "expired", "expired before a decision", SYSTEM, now)
        elif approval.escalated_at is None and as_utc(approval.expires_at) > now:
            _escalate(db, approval, now)
        else:
            continue
        done += 1
    return done


def _escalate(db: Session, approval: Approval, now: datetime) -> None:
    approval.escalated_at = now
    approval.version += 1
    audit.record(
        db,
        type=EventType.APPROVAL_ESCALATED,
        actor=SYSTEM,
        org_id=approval.org_id,
        resource=("approval", approval.id),
        metadata={"escalate_to": approval.escalate_to},
    )
    notify(db, approval.org_id, "approval.escalated", summary(approval))
    outbox.enqueue(db, approval, outbox.ESCALATED, now)
