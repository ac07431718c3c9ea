"""Who may decide an approval.

An approver is a person holding `approvals:decide` whom the approval names (by user,
role or team), or names in `escalate_to` once `escalate_at` has passed; an approval
naming nobody may be decided by any approver. Separation of duties: nobody decides an
action taken on their behalf, or of a run they started (themselves or through their API
key), unless the policy allows self-approval. Who started the run is asked of the
agents' side (`bastion.approvals.hooks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bastion.approvals.hooks import RunFacts, agent_side
from bastion.approvals.models import Approval
from bastion.authz import service as authz
from bastion.core.clock import as_utc, utcnow
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity import apikeys
from bastion.identity import service as identity
from bastion.tenancy import service as tenancy


@dataclass(frozen=True)
class Approver:
    user_id: str
    roles: frozenset[str]  # the user's role and those of their active grants
    teams: frozenset[str]


def approver(db: Session, principal: Principal) -> Approver | None:
    if principal.user_id is None or not principal.can(Permission.APPROVALS_DECIDE):
        return None
    user = identity.require_user_in_org(db, principal.org_id, principal.user_id)
    granted = authz.active_grant_roles(db, user.id, utcnow())
    return Approver(
        user.id, frozenset({user.role, *granted}), tenancy.teams_of(db, principal.org_id, user.id)
    )


def _listed(approver: Approver, approvers: dict[str, Any]) -> bool:
    return (
        approver.user_id in approvers.get("users", ())
        or bool(approver.roles & set(approvers.get("roles", ())))
        or bool(approver.teams & set(approvers.get("teams", ())))
    )


def named(approver: Approver, approval: Approval) -> bool:
    """Among the approval's approvers, now or once it escalates."""
    named = approval.approvers or {}
    if not any(named.get(k) for k in ("users", "roles", "teams")):
        return True
    return _listed(approver, named) or _listed(approver, approval.escalate_to or {})


@dataclass(frozen=True)
class Parties:
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


def parties(db: Session, approval: Approval, run: RunFacts | None = None) -> Parties:
    run = run or agent_side().run(db, approval.run_id)
    starter = run.started_by if run is not None else None
    return Parties(
        approval.requested_for,
        apikeys.person_behind(db, approval.org_id, starter) if starter else None,
    )


def eligible(approver: Approver, approval: Approval, parties: Parties, now: datetime) -> bool:
    if parties.excludes(approval, approver.user_id) is not None:
        return False
    named = approval.approvers or {}
    if not any(named.get(k) for k in ("users", "roles", "teams")) or _listed(approver, named):
        return True
    escalated = approval.escalate_at is not None and as_utc(approval.escalate_at) <= now
    return escalated and _listed(approver, approval.escalate_to or {})
