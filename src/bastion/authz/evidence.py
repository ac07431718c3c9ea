"""Authorization's read-only facts for compliance evidence and access reviews
(`bastion.compliance`): the organisation's temporary role grants still in force, and
ending one for a review, audited in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.authz.models import RoleGrant
from bastion.core.clock import as_utc, utcnow
from bastion.core.context import Actor
from bastion.core.errors import NotFound
from bastion.core.events import EventType


@dataclass(frozen=True)
class GrantFact:
    id: str
    user_id: str
    role: str
    reason: str
    granted_by: str | None
    created_at: datetime
    expires_at: datetime


def active_grants(db: Session, org_id: str) -> list[GrantFact]:
    now = utcnow()
    rows = db.execute(
        select(RoleGrant)
        .where(
            RoleGrant.org_id == org_id,
            RoleGrant.revoked_at.is_(None),
            RoleGrant.expires_at > now,
        )
        .order_by(RoleGrant.id)
    ).scalars()
    return [
        GrantFact(
            g.id,
            g.user_id,
            g.role,
            g.reason,
            g.granted_by,
            as_utc(g.created_at),
            as_utc(g.expires_at),
        )
        for g in rows
    ]


def end_grant(db: Session, actor: Actor, org_id: str, grant_id: str, reason: str) -> bool:
    """Revoke a temporary grant now; False when it already ended."""
    grant = db.execute(
        select(RoleGrant).where(RoleGrant.org_id == org_id, RoleGrant.id == grant_id)
    ).scalar_one_or_none()
    if grant is None:
        raise NotFound("grant not found")
    if grant.revoked_at is not None:
        return False
    grant.revoked_at = utcnow()
    audit.record(
        db,
        type=EventType.ROLE_GRANT_REVOKED,
        actor=actor,
        org_id=org_id,
        resource=("user", grant.user_id),
        metadata={"grant_id": grant_id, "reason": reason},
    )
    return True
