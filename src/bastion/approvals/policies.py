"""Approval policies: what the gate does with matching tool calls.

The gate (`bastion.agents.gate`) asks `evaluate` what a tool call's policies say:
a matching `deny` wins, then `require_approval`, then an `allow` whose pinned tool
digest still equals the tool's definition. With no policy, `high` and `critical` tools
need approval (fail safe), as does a tool whose definition changed since an `allow`
policy approved it; others are allowed. A policy pins the definitions of the tools it
matches when it is created or re-approved (read from the agents through
`bastion.approvals.hooks`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.approvals.hooks import agent_side
from bastion.approvals.models import ApprovalPolicy
from bastion.approvals.schemas import Approvers, PolicyIn, PolicyUpdate
from bastion.audit import service as audit
from bastion.authz import service as authz
from bastion.authz.rules import RuleError, compile_condition, problem, rule_answer, validate
from bastion.core.clock import utcnow
from bastion.core.db import get_in_org
from bastion.core.errors import InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity import service as identity
from bastion.tenancy import service as tenancy

LOW_RISK = frozenset({"low", "medium"})  # any other risk needs approval without a policy

# The organisation's policies as `policies_of` reads them, for `evaluate`.
Policies = tuple[ApprovalPolicy, ...]


def _find_policy(db: Session, org_id: str, policy_id: str) -> ApprovalPolicy:
    return get_in_org(db, ApprovalPolicy, policy_id, org_id, prefix="apl", noun="approval policy")


def _matches_target(match: dict[str, Any], agent_id: str, tool: dict[str, Any]) -> bool:
    agents, tools, risks = match.get("agents"), match.get("tools"), match.get("risks")
    return (
        (agents is None or agent_id in agents)
        and (tools is None or tool["name"] in tools)
        and (risks is None or tool.get("risk") in risks)
    )


def _pin(db: Session, org_id: str, match: dict[str, Any]) -> dict[str, str]:
    """The digests of every tool definition the policy matches now: what it approves."""
    pinned = {}
    for agent_id, tools in agent_side().tools(db, org_id, match.get("agents")):
        for tool in tools:
            if _matches_target(match, agent_id, tool):
                pinned[f"{agent_id}:{tool['name']}"] = tool["digest"]
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


def _as_input(policy: ApprovalPolicy) -> dict[str, Any]:
    return {
        "name": policy.name,
        "match": dict(policy.match),
        "decision": policy.decision,
        "approvers": dict(policy.approvers),
        "quorum": policy.quorum,
        "expires_in": policy.expires_in,
        "escalate_after": policy.escalate_after,
        "escalate_to": dict(policy.escalate_to) or None,
        "allow_self_approval": policy.allow_self_approval,
    }


def update_policy(
    db: Session, principal: Principal, org_id: str, policy_id: str, changes: PolicyUpdate
) -> ApprovalPolicy:
    """Change the fields given; the policy that results is validated as on create (422
    naming the field) and audited. A changed `match` pins the tools it matches now.
    Requests already open keep the approvers and deadlines they were made with."""
    principal.require_org(org_id)
    principal.require(Permission.APPROVAL_POLICIES_MANAGE)
    policy = _find_policy(db, org_id, policy_id)
    merged = {**_as_input(policy), **changes.model_dump(exclude_unset=True, exclude_none=False)}
    if "match" in changes.model_fields_set and changes.match is not None:
        merged["match"] = changes.match.model_dump(exclude_none=True)
    for name in ("approvers", "escalate_to"):
        value = getattr(changes, name)
        if name in changes.model_fields_set and value is not None:
            merged[name] = value.model_dump()
    nulls = [k for k, v in merged.items() if v is None and k != "escalate_after"]
    nulls = [k for k in nulls if k != "escalate_to"]
    if nulls:
        raise InvalidInput.field(nulls[0], "may not be null")
    try:
        body = PolicyIn.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput.field(where, str(first["msg"])) from None
    _validate(db, org_id, body)
    match = body.match.model_dump(exclude_none=True)
    if match != policy.match:
        policy.tool_digests = _pin(db, org_id, match)
    policy.name, policy.match, policy.decision = body.name, match, body.decision
    policy.approvers = _approvers(db, org_id, "approvers", body.approvers)
    policy.quorum, policy.expires_in = body.quorum, body.expires_in
    policy.escalate_after = body.escalate_after
    policy.escalate_to = _approvers(db, org_id, "escalate_to", body.escalate_to)
    policy.allow_self_approval = body.allow_self_approval
    policy.updated_at = utcnow()
    db.flush()
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
    policy: ApprovalPolicy | None = None  # the one that decided, if one did

    @property
    def policy_id(self) -> str | None:
        return self.policy.id if self.policy is not None else None


class AskingAgent(Protocol):
    """The agent asking, as policies see it (`bastion.agents.models.Agent` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


def policies_of(db: Session, org_id: str) -> Policies:
    """The organisation's approval policies, in the order `evaluate` applies them."""
    stmt = select(ApprovalPolicy).where(ApprovalPolicy.org_id == org_id)
    return tuple(db.execute(stmt.order_by(ApprovalPolicy.id)).scalars())


def evaluate(
    policies: Iterable[ApprovalPolicy],
    agent: AskingAgent,
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
        if not _matches_target(policy.match, agent.id, tool):
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
