"""A person's identity records for data subject requests (`bastion.privacy`): what an
access package holds of them, and erasure.

Secrets never leave: sessions and keys are listed by id, times, address and agent; a
factor by its kind, name and times (never its secret, credential id or public key).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.core.clock import rfc3339
from bastion.identity.mfa import store as mfa_store
from bastion.identity.models import ApiKey, MfaFactor, User, UserSession


def records(db: Session, user: User) -> dict[str, list[dict[str, Any]]]:
    """The person's profile, sessions, API keys and factors' metadata."""
    sessions = db.execute(
        select(UserSession).where(UserSession.user_id == user.id).order_by(UserSession.id)
    ).scalars()
    keys = db.execute(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id))
    factors = db.execute(
        select(MfaFactor).where(MfaFactor.user_id == user.id).order_by(MfaFactor.id)
    ).scalars()
    return {
        "profile": [
            {
                "id": user.id,
                "org_id": user.org_id,
                "email": user.email,
                "name": user.name,
                "role": user.role,
                "status": user.status,
                "attributes": user.attributes,
                "slack_user_id": user.slack_user_id,
                "last_login_at": rfc3339(user.last_login_at),
                "created_at": rfc3339(user.created_at),
                "updated_at": rfc3339(user.updated_at),
            }
        ],
        "sessions": [
            {
                "id": s.id,
                "ip": s.ip,
                "user_agent": s.user_agent,
                "amr": s.amr,
                "created_at": rfc3339(s.created_at),
                "last_seen_at": rfc3339(s.last_seen_at),
                "expires_at": rfc3339(s.expires_at),
                "revoked_at": rfc3339(s.revoked_at),
            }
            for s in sessions
        ],
        "keys": [
            {
                "id": k.id,
                "name": k.name,
                "role": k.role,
                "last_used_at": rfc3339(k.last_used_at),
                "last_used_ip": k.last_used_ip,
                "expires_at": rfc3339(k.expires_at),
                "revoked_at": rfc3339(k.revoked_at),
                "created_at": rfc3339(k.created_at),
            }
            for k in keys.scalars()
        ],
        "factors": [
            {
                "id": f.id,
                "kind": f.kind,
                "name": f.name,
                "status": f.status,
                "transports": f.transports,
                "created_at": rfc3339(f.created_at),
                "confirmed_at": rfc3339(f.confirmed_at),
                "last_used_at": rfc3339(f.last_used_at),
            }
            for f in factors
        ],
    }


def erase(db: Session, user: User) -> dict[str, int]:
    """Delete the person: their factors (with their sealed secrets, destroyed), then the
    user row, whose deletion cascades to their sessions, API keys, recovery codes, team
    memberships, role grants and single sign-on links. Counts, for the audit."""
    counts = {
        "sessions": _count(db, UserSession, user.id),
        "keys": _count(db, ApiKey, user.id),
        "factors": _count(db, MfaFactor, user.id),
    }
    mfa_store.destroy_user(db, user.org_id, user.id)
    db.delete(user)
    db.flush()
    return counts


def _count(db: Session, model: Any, user_id: str) -> int:
    return len(db.execute(select(model.id).where(model.user_id == user_id)).all())
