"""Approval requests and the decisions on them.

The gate opens a request (`open_approval`) for a tool call its policies hold. It needs
`quorum` distinct approvers; one deny ends it; at `expires_at` it is denied as expired
— evaluated at read time, to the second (`effective_status`), so nothing depends on a
job running; the sweeper (`bastion.approvals.sweeper`) only records and announces it.
After `escalate_at` the `escalate_to` approvers may decide too. Nobody decides an
action taken for them or of a run they started, unless the policy allows it.

When a request closes, its tool call is settled by `bastion.agents` through
`bastion.approvals.hooks`, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.approvals import approvers
from bastion.approvals.hooks import agent_side
from bastion.approvals.models import Approval, ApprovalDecision, ApprovalPolicy
from bastion.approvals.notify import outbox
from bastion.approvals.policies import LOW_RISK
from bastion.audit import service as audit
from bastion.core import metrics
from bastion.core.clock import as_utc, utcnow
from bastion.core.context import Actor
from bastion.core.db import get_in_org
from bastion.core.errors import Conflict, Forbidden, NotFound
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.webhooks import outbound

DEFAULT_EXPIRES_IN = 3600


def notify(db: Session, org_id: str, event: str, payload: dict[str, Any]) -> None:
    """Announce through the organisation's webhook subscriptions (Standard Webhooks
    signatures, retries, delivery log), in the same transaction as the change."""
    outbound.enqueue(db, org_id, event, payload)


def open_approval(
    db: Session,
    *,
    org_id: str,
    run_id: str,
    call_id: str,
    agent_id: str,
    tool: str,
    arguments_digest: str,
    requested_for: str | None,
    run_expires_at: datetime,
    policy: ApprovalPolicy | None,
    now: datetime,
) -> str:
    """Ask for approval of the (flushed) tool call, in the gate's transaction; audited
    with the arguments' digest and announced. Returns the approval's id."""
    expires_in = policy.expires_in if policy is not None else DEFAULT_EXPIRES_IN
    escalate_at = (
        now + timedelta(seconds=policy.escalate_after)
        if policy is not None and policy.escalate_after is not None
        else None
    )
    approval = Approval(
        id=new_id("apr"),
        org_id=org_id,
        run_id=run_id,
        call_id=call_id,
        agent_id=agent_id,
        tool=tool,
        policy_id=policy.id if policy is not None else None,
        requested_for=requested_for,
        status="pending",
        quorum=policy.quorum if policy is not None else 1,
        approvers=dict(policy.approvers) if policy is not None else {},
        escalate_to=dict(policy.escalate_to) if policy is not None else {},
        escalate_at=escalate_at,
        allow_self_approval=policy.allow_self_approval if policy is not None else False,
        # Never beyond the run: a request its run can no longer act on expires with it.
        expires_at=min(now + timedelta(seconds=expires_in), as_utc(run_expires_at)),
        reason="",
        version=1,
        created_at=now,
        updated_at=now,
    )
    db.add(approval)
    db.flush()
    audit.record(
        db,
        type=EventType.APPROVAL_REQUESTED,
        actor=Actor("agent_run", run_id),
        org_id=org_id,
        resource=("approval", approval.id),
        metadata={
            "call_id": call_id,
            "tool": tool,
            "agent_id": agent_id,
            "policy_id": approval.policy_id,
            "quorum": approval.quorum,
            "arguments_digest": arguments_digest,
        },
    )
    notify(db, org_id, "approval.requested", summary(approval))
    outbox.enqueue(db, approval, outbox.REQUESTED, now)
    return approval.id


def pending_count(db: Session, run_id: str, now: datetime) -> int:
    stmt = select(func.count()).where(
        Approval.run_id == run_id, Approval.status == "pending", Approval.expires_at > now
    )
    return int(db.execute(stmt).scalar_one())


# --- reading --------------------------------------------------------------------------


def overdue(db: Session, org_id: str, requested_before: datetime, now: datetime) -> list[Approval]:
    """Approvals still open (not past expiry) that were requested before the instant."""
    stmt = (
        select(Approval)
        .where(
            Approval.org_id == org_id,
            Approval.status == "pending",
            Approval.expires_at > now,
            Approval.created_at <= requested_before,
        )
        .order_by(Approval.id)
        .limit(1000)
    )
    return list(db.execute(stmt).scalars())


def effective_status(approval: Approval, now: datetime) -> str:
    """The approval's status at `now`: a pending one past its deadline is expired,
    whether or not the sweeper recorded it yet."""
    if approval.status == "pending" and as_utc(approval.expires_at) <= now:
        return "expired"
    return approval.status


def status_of(db: Session, approval_id: str, now: datetime) -> str | None:
    """`effective_status` of the approval with this id, or None when there is none."""
    approval = db.get(Approval, approval_id)
    return effective_status(approval, now) if approval is not None else None


def _find(db: Session, org_id: str, approval_id: str) -> Approval:
    return get_in_org(db, Approval, approval_id, org_id, prefix="apr", noun="approval")


def get_approval(
    db: Session, principal: Principal, org_id: str, approval_id: str
) -> tuple[Approval, list[ApprovalDecision]]:
    """The approval and its decisions, to whoever may see it (`readable_by`)."""
    principal.require_org(org_id)
    principal.require(Permission.APPROVALS_READ)
    approval = _find(db, org_id, approval_id)
    if not readable_by(db, principal)(approval):
        raise NotFound("approval not found")
    return approval, decisions_of(db, approval.id)


def readable_by(db: Session, principal: Principal) -> Callable[[Approval], bool]:
    """Who may see an approval, and so its call's arguments: whoever may read its agent
    (a private agent's requests stay private), whoever it names as an approver, now or
    after escalation, and the user it was requested for."""
    agent_readable = agent_side().agent_reader(db, principal)
    approver = approvers.approver(db, principal)

    def readable(approval: Approval) -> bool:
        if principal.user_id is not None and approval.requested_for == principal.user_id:
            return True
        if approver is not None and approvers.named(approver, approval):
            return True
        return agent_readable(approval.agent_id)

    return readable


def decisions_of(db: Session, approval_id: str) -> list[ApprovalDecision]:
    stmt = (
        select(ApprovalDecision)
        .where(ApprovalDecision.approval_id == approval_id)
        .order_by(ApprovalDecision.created_at, ApprovalDecision.approver_id)
    )
    return list(db.execute(stmt).scalars())


def list_approvals(
    db: Session,
    principal: Principal,
    org_id: str,
    *,
    status: str | None,
    mine: bool,
    limit: int,
    cursor: str | None,
) -> Page[Approval]:
    """Newest first. `status=pending` lists only those still open (not past expiry);
    `mine` keeps those the caller may decide now and has not decided yet (the inbox)."""
    principal.require_org(org_id)
    principal.require(Permission.APPROVALS_READ)
    now = utcnow()
    stmt = select(Approval).where(Approval.org_id == org_id)
    if status == "pending":
        stmt = stmt.where(Approval.status == "pending", Approval.expires_at > now)
    elif status == "expired":
        stmt = stmt.where(
            (Approval.status == "expired")
            | ((Approval.status == "pending") & (Approval.expires_at <= now))
        )
    elif status is not None:
        stmt = stmt.where(Approval.status == status)
    page = newest_first(db, stmt, Approval.id, limit=limit, cursor=cursor)
    readable = readable_by(db, principal)
    kept = [a for a in page.data if readable(a)]
    if mine:
        approver = approvers.approver(db, principal)
        kept = [
            a
            for a in kept
            if approver is not None
            and db.get(ApprovalDecision, (a.id, approver.user_id)) is None
            and approvers.eligible(approver, a, approvers.parties(db, a), now)
        ]
    return Page(kept, page.next_cursor)


# --- deciding -------------------------------------------------------------------------


def _high_risk(db: Session, approval: Approval) -> bool:
    """Whether the tool the approval is about is high risk (or its risk is unknown, or
    the tool is gone: fail closed): deciding it then needs step-up."""
    for _, tools in agent_side().tools(db, approval.org_id, [approval.agent_id]):
        for tool in tools:
            if tool.get("name") == approval.tool:
                return tool.get("risk", "low") not in LOW_RISK
    return True


def decide(
    db: Session,
    principal: Principal,
    org_id: str,
    approval_id: str,
    *,
    decision: str,
    comment: str,
) -> Approval:
    principal.require_org(org_id)
    principal.require(Permission.APPROVALS_DECIDE)
    # Read again under its lock: two approvers deciding at once see each other's
    # decisions, and only one of them closes it.
    approval = locked(db, org_id, _find(db, org_id, approval_id).id)
    if approval is None:
        raise NotFound("approval not found")
    now = utcnow()
    approver = approvers.approver(db, principal)
    if approver is None:
        raise Forbidden("approvals are decided by people", permission="approvals:decide")
    run = agent_side().run(db, approval.run_id)
    parties = approvers.parties(db, approval, run)
    excluded = parties.excludes(approval, approver.user_id)
    if excluded is not None:
        raise Forbidden(excluded, permission="approvals:decide")
    status = effective_status(approval, now)
    if status != "pending":
        raise Conflict(f"this approval is already {status}")
    if run is None or run.ended(now):
        raise Conflict("the run that asked for this action has ended")
    if not approvers.eligible(approver, approval, parties, now):
        raise Forbidden("you are not an approver of this request", permission="approvals:decide")
    if db.get(ApprovalDecision, (approval.id, approver.user_id)) is not None:
        raise Conflict("you have already decided this approval")
    if _high_risk(db, approval):
        principal.require_recent_auth("approval.decide_high_risk")
    db.add(
        ApprovalDecision(
            approval_id=approval.id,
            approver_id=approver.user_id,
            org_id=org_id,
            decision=decision,
            comment=comment,
            created_at=now,
        )
    )
    db.flush()
    audit.record(
        db,
        type=EventType.APPROVAL_DECISION_RECORDED,
        actor=principal.actor,
        org_id=org_id,
        resource=("approval", approval.id),
        metadata={"decision": decision, "call_id": approval.call_id, "tool": approval.tool},
    )
    approvals = sum(1 for d in decisions_of(db, approval.id) if d.decision == "approve")
    if decision == "deny":
        close(db, approval, "denied", f"denied by {approver.user_id}", principal.actor, now)
    elif approvals >= approval.quorum:
        close(db, approval, "approved", f"approved by {approvals}", principal.actor, now)
    else:
        approval.version += 1
        approval.updated_at = now
    return approval


def end_for_run(db: Session, org_id: str, run_id: str, actor: Actor) -> int:
    """Deny what the run still waits for (it was revoked): nobody can approve an action
    of a run that can no longer act, and its waiters hear at once. Returns how many."""
    now = utcnow()
    pending = db.execute(
        select(Approval.id).where(
            Approval.org_id == org_id, Approval.run_id == run_id, Approval.status == "pending"
        )
    ).scalars()
    closed = 0
    for approval_id in list(pending):
        approval = locked(db, org_id, approval_id)
        if approval is not None and approval.status == "pending":
            close(db, approval, "denied", "the run was revoked", actor, now)
            closed += 1
    return closed


def close(
    db: Session, approval: Approval, status: str, reason: str, actor: Actor, now: datetime
) -> None:
    """Final state for the approval, audited and announced, and for its tool call
    (settled by the agents' side: see `bastion.approvals.hooks`)."""
    approval.status = status
    approval.reason = reason
    approval.decided_at = now
    metrics.APPROVAL_WAIT.labels(status).observe(
        (now - as_utc(approval.created_at)).total_seconds()
    )
    approval.updated_at = now
    approval.version += 1
    agent_side().settle(
        db, approval.call_id, allowed=status == "approved", reason=f"approval_{status}", now=now
    )
    event = {
        "approved": EventType.APPROVAL_APPROVED,
        "denied": EventType.APPROVAL_DENIED,
        "expired": EventType.APPROVAL_EXPIRED,
    }[status]
    audit.record(
        db,
        type=event,
        actor=actor,
        org_id=approval.org_id,
        resource=("approval", approval.id),
        outcome=Outcome.SUCCESS,
        reason=reason,
        metadata={"call_id": approval.call_id, "tool": approval.tool, "run_id": approval.run_id},
    )
    notify(db, approval.org_id, f"approval.{status}", summary(approval))


def summary(approval: Approval) -> dict[str, Any]:
    return {
        "id": approval.id,
        "status": approval.status,
        "run_id": approval.run_id,
        "call_id": approval.call_id,
        "agent_id": approval.agent_id,
        "tool": approval.tool,
        "quorum": approval.quorum,
        "expires_at": as_utc(approval.expires_at).isoformat(),
    }


def locked(db: Session, org_id: str, approval_id: str) -> Approval | None:
    """The approval as it is now, locked after its chain's head (the order every writer
    takes): what another worker's sweep or a decision changed meanwhile is seen."""
    audit.lock_chain(db, org_id)
    stmt = (
        select(Approval)
        .where(Approval.id == approval_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return db.execute(stmt).scalar_one_or_none()
