"""Approval policies and human approval of agents' tool calls.

The gate (`bastion.agents.gate`) asks `evaluate` what a tool call's policies say:
a matching `deny` wins, then `require_approval`, then an `allow` whose pinned tool
digest still equals the tool's definition. With no policy, `high` and `critical` tools
need approval (fail safe), as does a tool whose definition changed since an `allow`
policy approved it; others are allowed.

An approval needs `quorum` distinct approvers; one deny ends it; at `expires_at` it is
denied as expired — evaluated at read time, to the second, so nothing depends on a job
running; the sweeper only records and announces it. After `escalate_at` the
`escalate_to` approvers may decide too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.agents import service as agents
from bastion.agents.models import Agent, Run, ToolCall
from bastion.approvals.models import Approval, ApprovalDecision, ApprovalPolicy
from bastion.approvals.schemas import Approvers, PolicyIn
from bastion.audit import service as audit
from bastion.authz import service as authz
from bastion.authz.rules import RuleError, compile_condition, problem, rule_answer, validate
from bastion.core.clock import as_utc, utcnow
from bastion.core.context import Actor
from bastion.core.db import get_in_org
from bastion.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity import apikeys
from bastion.identity import service as identity
from bastion.tenancy import service as tenancy
from bastion.webhooks import outbound

LOW_RISK = frozenset({"low", "medium"})  # any other risk needs approval without a policy
DEFAULT_EXPIRES_IN = 3600
SYSTEM = Actor("system", None)


def notify(db: Session, org_id: str, event: str, payload: dict[str, Any]) -> None:
    """Announce through the organisation's webhook subscriptions (Standard Webhooks
    signatures, retries, delivery log), in the same transaction as the change."""
    outbound.enqueue(db, org_id, event, payload)


# --- policies -------------------------------------------------------------------------


def _find_policy(db: Session, org_id: str, policy_id: str) -> ApprovalPolicy:
    return get_in_org(db, ApprovalPolicy, policy_id, org_id, prefix="apl", noun="approval policy")


def _matches_target(match: dict[str, Any], agent: Agent, tool: dict[str, Any]) -> bool:
    agents, tools, risks = match.get("agents"), match.get("tools"), match.get("risks")
    return (
        (agents is None or agent.id in agents)
        and (tools is None or tool["name"] in tools)
        and (risks is None or tool.get("risk") in risks)
    )


def _pin(db: Session, org_id: str, match: dict[str, Any]) -> dict[str, str]:
    """The digests of every tool definition the policy matches now: what it approves."""
    stmt = select(Agent).where(Agent.org_id == org_id)
    if match.get("agents") is not None:
        stmt = stmt.where(Agent.id.in_(match["agents"]))
    pinned = {}
    for agent in db.execute(stmt).scalars():
        for tool in agent.tools:
            if _matches_target(match, agent, tool):
                pinned[f"{agent.id}:{tool['name']}"] = tool["digest"]
    return pinned


def _validate(db: Session, org_id: str, body: PolicyIn) -> None:
    if body.match.condition is not None:
        try:
            validate(body.match.condition)
        except RuleError as exc:
            raise InvalidInput.field("match.condition", problem(exc)) from None


def _approvers(db: Session, org_id: str, field: str, value: Approvers | None) -> dict[str, Any]:
    """Who may decide, as stored: teams and users checked, roles as the organisation
    stores them (a custom role named by its name is kept by its id, as users hold it)."""
    if value is None:
        return {}
    missing = set(value.teams) - tenancy.existing_team_ids(db, org_id, value.teams)
    if missing:
        raise InvalidInput.field(f"{field}.teams", "names a team that does not exist")
    for user_id in value.users:
        try:
            identity.require_user_in_org(db, org_id, user_id)
        except NotFound:
            raise InvalidInput.field(
                f"{field}.users", "names a user who is not in this organisation"
            ) from None
    roles = [authz.resolve_role(db, org_id, role, field=f"{field}.roles") for role in value.roles]
    return {**value.model_dump(), "roles": list(dict.fromkeys(roles))}


def create_policy(db: Session, principal: Principal, org_id: str, body: PolicyIn) -> ApprovalPolicy:
    principal.require_org(org_id)
    principal.require(Permission.APPROVAL_POLICIES_MANAGE)
    _validate(db, org_id, body)
    match = body.match.model_dump(exclude_none=True)
    policy = ApprovalPolicy(
        id=new_id("apl"),
        org_id=org_id,
        name=body.name,
        match=match,
        decision=body.decision,
        approvers=_approvers(db, org_id, "approvers", body.approvers),
        quorum=body.quorum,
        expires_in=body.expires_in,
        escalate_after=body.escalate_after,
        escalate_to=_approvers(db, org_id, "escalate_to", body.escalate_to),
        allow_self_approval=body.allow_self_approval,
        tool_digests=_pin(db, org_id, match),
        created_by=principal.id,
    )
    db.add(policy)
    _audit_policy(db, principal, EventType.APPROVAL_POLICY_CREATED, policy)
    return policy


def _audit_policy(
    db: Session, principal: Principal, type: EventType, policy: ApprovalPolicy
) -> None:
    audit.record(
        db,
        type=type,
        actor=principal.actor,
        org_id=policy.org_id,
        resource=("approval_policy", policy.id),
        metadata={
            "name": policy.name,
            "decision": policy.decision,
            "match": policy.match,
            "quorum": policy.quorum,
            "tools": sorted(policy.tool_digests),
        },
    )


def list_policies(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[ApprovalPolicy]:
    principal.require_org(org_id)
    principal.require(Permission.APPROVALS_READ)
    stmt = select(ApprovalPolicy).where(ApprovalPolicy.org_id == org_id)
    return newest_first(db, stmt, ApprovalPolicy.id, limit=limit, cursor=cursor)


def get_policy(db: Session, principal: Principal, org_id: str, policy_id: str) -> ApprovalPolicy:
    principal.require_org(org_id)
    principal.require(Permission.APPROVALS_READ)
    return _find_policy(db, org_id, policy_id)


def reapprove_policy(
    db: Session, principal: Principal, org_id: str, policy_id: str
) -> ApprovalPolicy:
    """Re-pin the policy to the tool definitions it matches now (after reviewing them)."""
    principal.require_org(org_id)
    principal.require(Permission.APPROVAL_POLICIES_MANAGE)
    policy = _find_policy(db, org_id, policy_id)
    policy.tool_digests = _pin(db, org_id, policy.match)
    _audit_policy(db, principal, EventType.APPROVAL_POLICY_UPDATED, policy)
    return policy


def delete_policy(db: Session, principal: Principal, org_id: str, policy_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.APPROVAL_POLICIES_MANAGE)
    policy = _find_policy(db, org_id, policy_id)
    db.delete(policy)
    _audit_policy(db, principal, EventType.APPROVAL_POLICY_DELETED, policy)


# --- evaluation -----------------------------------------------------------------------

_programs: dict[str, Any] = {}
_programs_lock = threading.Lock()


def _program(condition: str) -> Any:
    with _programs_lock:
        program = _programs.get(condition)
    if program is None:
        program = compile_condition(condition)
        with _programs_lock:
            if len(_programs) > 1000:
                _programs.clear()
            _programs[condition] = program
    return program


@dataclass(frozen=True)
class Verdict:
    decision: str  # allow | deny | pending
    reason: str
    policy: ApprovalPolicy | None = None


def policies_of(db: Session, org_id: str) -> list[ApprovalPolicy]:
    """The organisation's approval policies, in the order `evaluate` applies them."""
    stmt = select(ApprovalPolicy).where(ApprovalPolicy.org_id == org_id)
    return list(db.execute(stmt.order_by(ApprovalPolicy.id)).scalars())


def evaluate(
    policies: Iterable[ApprovalPolicy],
    agent: Agent,
    tool: dict[str, Any],
    arguments: Any,
    user: Callable[[], dict[str, Any]],
) -> Verdict:
    """The policies' answer for one call (see `policies_of`); `user` gives the run's
    user (id, role, teams) when a condition needs it."""
    context: dict[str, Any] = {}
    approval: ApprovalPolicy | None = None
    allow: ApprovalPolicy | None = None
    changed = False
    key = f"{agent.id}:{tool['name']}"
    for policy in policies:
        if not _matches_target(policy.match, agent, tool):
            continue
        condition = policy.match.get("condition")
        if condition:
            if not context:
                context = {
                    "arguments": arguments,
                    "agent": {"id": agent.id, "name": agent.name},
                    "tool": {"name": tool["name"], "risk": tool.get("risk", "low")},
                    "user": user(),
                }
            try:  # `arguments.order` gives a value, not an answer: an error too
                matched = rule_answer(_program(condition).execute(context))
            except Exception:  # an error in a policy denies (fail closed)
                return Verdict("deny", f"policy_error:{policy.id}", policy)
            if not matched:
                continue
        if policy.decision == "require_approval":
            approval = approval or policy
        elif policy.decision != "allow":  # deny, or a value this version does not know
            return Verdict("deny", f"policy:{policy.id}", policy)
        elif policy.tool_digests.get(key) == tool["digest"]:
            allow = allow or policy
        else:
            changed = True
    return _settle(approval, allow, changed, tool)


def _settle(
    approval: ApprovalPolicy | None,
    allow: ApprovalPolicy | None,
    changed: bool,
    tool: dict[str, Any],
) -> Verdict:
    """Require approval over allow; without a policy, high risk and a tool changed
    since its `allow` need approval."""
    if approval is not None:
        return Verdict("pending", f"policy:{approval.id}", approval)
    if allow is not None:
        return Verdict("allow", f"policy:{allow.id}", allow)
    if changed:
        return Verdict("pending", "tool_changed_since_approved")
    if tool.get("risk", "low") in LOW_RISK:
        return Verdict("allow", "default")
    return Verdict("pending", "high_risk_default")  # high, critical, or unknown


def open_approval(
    db: Session, call: ToolCall, run: Run, policy: ApprovalPolicy | None, now: datetime
) -> Approval:
    expires_in = policy.expires_in if policy is not None else DEFAULT_EXPIRES_IN
    escalate_at = (
        now + timedelta(seconds=policy.escalate_after)
        if policy is not None and policy.escalate_after is not None
        else None
    )
    approval = Approval(
        id=new_id("apr"),
        org_id=call.org_id,
        run_id=run.id,
        call_id=call.id,
        agent_id=call.agent_id,
        tool=call.tool,
        policy_id=policy.id if policy is not None else None,
        requested_for=run.on_behalf_of,
        status="pending",
        quorum=policy.quorum if policy is not None else 1,
        approvers=dict(policy.approvers) if policy is not None else {},
        escalate_to=dict(policy.escalate_to) if policy is not None else {},
        escalate_at=escalate_at,
        allow_self_approval=policy.allow_self_approval if policy is not None else False,
        # Never beyond the run: a request its run can no longer act on expires with it.
        expires_at=min(now + timedelta(seconds=expires_in), as_utc(run.expires_at)),
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
        actor=Actor("agent_run", run.id),
        org_id=call.org_id,
        resource=("approval", approval.id),
        metadata={
            "call_id": call.id,
            "tool": call.tool,
            "agent_id": call.agent_id,
            "policy_id": approval.policy_id,
            "quorum": approval.quorum,
            "arguments_digest": call.arguments_digest,
        },
    )
    notify(db, call.org_id, "approval.requested", _summary(approval))
    return approval


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
    if approval.status == "pending" and as_utc(approval.expires_at) <= now:
        return "expired"
    return approval.status


def _find(db: Session, org_id: str, approval_id: str) -> Approval:
    return get_in_org(db, Approval, approval_id, org_id, prefix="apr", noun="approval")


def get_approval(
    db: Session, principal: Principal, org_id: str, approval_id: str
) -> tuple[Approval, ToolCall, list[ApprovalDecision]]:
    principal.require_org(org_id)
    principal.require(Permission.APPROVALS_READ)
    approval = _find(db, org_id, approval_id)
    if not readable_by(db, principal)(approval):
        raise NotFound("approval not found")
    return approval, _call(db, approval), decisions_of(db, approval.id)


def readable_by(db: Session, principal: Principal) -> Callable[[Approval], bool]:
    """Who may see an approval, and so its call's arguments: whoever may read its agent
    (a private agent's requests stay private), whoever it names as an approver, now or
    after escalation, and the user it was requested for."""
    who = agents.asker(db, principal)
    approver = _approver(db, principal)
    agent_readable: dict[str, bool] = {}

    def readable(approval: Approval) -> bool:
        if principal.user_id is not None and approval.requested_for == principal.user_id:
            return True
        if approver is not None and _named(approver, approval):
            return True
        if approval.agent_id not in agent_readable:
            agent = db.get(Agent, approval.agent_id)
            seen = agent is not None and agents.decide(who, agent, "read").allowed
            agent_readable[approval.agent_id] = seen
        return agent_readable[approval.agent_id]

    return readable


def _call(db: Session, approval: Approval) -> ToolCall:
    call = db.get(ToolCall, approval.call_id)
    if call is None:  # cannot happen: an approval cascades with its call
        raise NotFound("tool call not found")
    return call


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
    `mine` keeps those the caller may decide now (the inbox)."""
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
        approver = _approver(db, principal)
        kept = [
            a for a in kept if approver is not None and _eligible(approver, a, _parties(db, a), now)
        ]
    return Page(kept, page.next_cursor)


# --- deciding -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Approver:
    user_id: str
    roles: frozenset[str]  # the user's role and those of their active grants
    teams: frozenset[str]


def _approver(db: Session, principal: Principal) -> _Approver | None:
    if principal.user_id is None or not principal.can(Permission.APPROVALS_DECIDE):
        return None
    user = identity.require_user_in_org(db, principal.org_id, principal.user_id)
    granted = authz.active_grant_roles(db, user.id, utcnow())
    return _Approver(
        user.id, frozenset({user.role, *granted}), tenancy.teams_of(db, principal.org_id, user.id)
    )


def _listed(approver: _Approver, approvers: dict[str, Any]) -> bool:
    return (
        approver.user_id in approvers.get("users", ())
        or bool(approver.roles & set(approvers.get("roles", ())))
        or bool(approver.teams & set(approvers.get("teams", ())))
    )


def _named(approver: _Approver, approval: Approval) -> bool:
    """Among the approval's approvers, now or once it escalates."""
    named = approval.approvers or {}
    if not any(named.get(k) for k in ("users", "roles", "teams")):
        return True
    return _listed(approver, named) or _listed(approver, approval.escalate_to or {})


@dataclass(frozen=True)
class _Parties:
    """The people an approval's action is taken for and by: the user its run acts for
    and the person who started the run (themselves, or through their API key)."""

    acted_for: str | None
    started_by: str | None

    def excludes(self, approval: Approval, user_id: str) -> str | None:
        """Why the user may not decide the approval (separation of duties), or None.
        Only a policy that allows self-approval lets them."""
        if approval.allow_self_approval:
            return None
        if user_id == self.acted_for:
            return "you may not approve an action taken on your behalf"
        if user_id == self.started_by:
            return "you may not approve an action of a run you started"
        return None


def _parties(db: Session, approval: Approval, run: Run | None = None) -> _Parties:
    run = run or db.get(Run, approval.run_id)
    starter = run.started_by if run is not None else None
    return _Parties(
        approval.requested_for,
        apikeys.person_behind(db, approval.org_id, starter) if starter else None,
    )


def _eligible(approver: _Approver, approval: Approval, parties: _Parties, now: datetime) -> bool:
    if parties.excludes(approval, approver.user_id) is not None:
        return False
    named = approval.approvers or {}
    if not any(named.get(k) for k in ("users", "roles", "teams")) or _listed(approver, named):
        return True
    escalated = approval.escalate_at is not None and as_utc(approval.escalate_at) <= now
    return escalated and _listed(approver, approval.escalate_to or {})


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
    approval = _locked(db, org_id, _find(db, org_id, approval_id).id)
    if approval is None:
        raise NotFound("approval not found")
    now = utcnow()
    approver = _approver(db, principal)
    if approver is None:
        raise Forbidden("approvals are decided by people", permission="approvals:decide")
    run = db.get(Run, approval.run_id)
    parties = _parties(db, approval, run)
    excluded = parties.excludes(approval, approver.user_id)
    if excluded is not None:
        raise Forbidden(excluded, permission="approvals:decide")
    status = effective_status(approval, now)
    if status != "pending":
        raise Conflict(f"this approval is already {status}")
    if run is None or run.revoked_at is not None or as_utc(run.expires_at) <= now:
        raise Conflict("the run that asked for this action has ended")
    if not _eligible(approver, approval, parties, now):
        raise Forbidden("you are not an approver of this request", permission="approvals:decide")
    if db.get(ApprovalDecision, (approval.id, approver.user_id)) is not None:
        raise Conflict("you have already decided this approval")
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
        _close(db, approval, "denied", f"denied by {approver.user_id}", principal.actor, now)
    elif approvals >= approval.quorum:
        _close(db, approval, "approved", f"approved by {approvals}", principal.actor, now)
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
        approval = _locked(db, org_id, approval_id)
        if approval is not None and approval.status == "pending":
            _close(db, approval, "denied", "the run was revoked", actor, now)
            closed += 1
    return closed


def _close(
    db: Session, approval: Approval, status: str, reason: str, actor: Actor, now: datetime
) -> None:
    """Final state for the approval and its tool call, audited and announced."""
    approval.status = status
    approval.reason = reason
    approval.decided_at = now
    approval.updated_at = now
    approval.version += 1
    call = _call(db, approval)
    call.decision = "allow" if status == "approved" else "deny"
    call.reason = f"approval_{status}"
    call.decided_at = now
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
        metadata={"call_id": call.id, "tool": call.tool, "run_id": call.run_id},
    )
    notify(db, approval.org_id, f"approval.{status}", _summary(approval))


def _summary(approval: Approval) -> dict[str, Any]:
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


# --- the sweeper ----------------------------------------------------------------------


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
        approval = _locked(db, org_id, approval_id)
        if approval is None or approval.status != "pending":
            continue  # another worker's sweep, or a decision, came first
        if kind == 0:
            _close(db, approval, "expired", "expired before a decision", SYSTEM, now)
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
    notify(db, approval.org_id, "approval.escalated", _summary(approval))


def _locked(db: Session, org_id: str, approval_id: str) -> Approval | None:
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
