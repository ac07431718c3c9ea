"""Who is told of an approval: the people who may decide it now.

The approval's approvers (its policy's users, roles and teams, copied at request time;
after `escalate_at` its `escalate_to` too; nobody named means every holder of
`approvals:decide`), each an active person of the organisation who holds
`approvals:decide` now (role or a grant in force) and whom separation of duties does not
exclude (`bastion.approvals.approvers.eligible`): exactly who could decide it in the
console at this instant."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from bastion.approvals import approvers
from bastion.approvals.models import Approval
from bastion.authz import service as authz
from bastion.core.permissions import Permission
from bastion.identity import service as identity
from bastion.tenancy import service as tenancy


def deciders(db: Session, approval: Approval, now: datetime) -> list[identity.Person]:
    """The people who may decide `approval` at `now`, in id order."""
    parties = approvers.parties(db, approval)
    teams_of, _ = tenancy.team_facts(db, approval.org_id)
    found: list[identity.Person] = []
    for person in identity.active_people(db, approval.org_id):
        rights = authz.user_rights(db, approval.org_id, person.role, person.id, person.grants_until)
        if Permission.APPROVALS_DECIDE not in rights.permissions:
            continue
        granted = authz.active_grant_roles(db, person.id, now) if person.grants_until else []
        roles = frozenset({person.role, *granted})
        who = approvers.Approver(person.id, roles, teams_of.get(person.id, frozenset()))
        if approvers.eligible(who, approval, parties, now):
            found.append(person)
    return found
